import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { healthReport } from "../shared/platform/health.js";
import { json } from "../shared/platform/http.js";
import { loggerFrom, unensuredServices } from "../shared/platform/services.js";

/**
 * GET /api/health (anonymous): 200 {"status":"ok"} or 503 {"status":"unhealthy"}, nothing
 * more; the causes are in the log and in GET /api/health/details (function key).
 */
export async function health(_request: HttpRequest, context: InvocationContext) {
  try {
    const report = await healthReport(unensuredServices, loggerFrom(context));
    return json(report.status === "ok" ? 200 : 503, { status: report.status });
  } catch {
    return json(503, { status: "unhealthy" });
  }
}

app.http("health", {
  route: "health",
  methods: ["GET"],
  authLevel: "anonymous",
  handler: health,
});
