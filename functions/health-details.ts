import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { healthReport } from "../shared/platform/health.js";
import { api, json } from "../shared/platform/http.js";
import { loggerFrom, unensuredServices } from "../shared/platform/services.js";

/** GET /api/health/details (function key): which parts fail, why (a code, never a value) and since when. */
export async function healthDetails(_request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const report = await healthReport(unensuredServices, loggerFrom(context));
    return json(report.status === "ok" ? 200 : 503, report);
  });
}

app.http("health-details", {
  route: "health/details",
  methods: ["GET"],
  authLevel: "function",
  handler: healthDetails,
});
