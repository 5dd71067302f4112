import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp } from "../shared/operator/route.js";
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

operatorHttp("health-details", {
  route: "health/details",
  methods: ["GET"],
  role: "Reader",
  handler: healthDetails,
});
