import type { HttpRequest, InvocationContext } from "@azure/functions";
import { deliveryStatus } from "../shared/delivery/status.js";
import { operatorHttp } from "../shared/operator/route.js";
import { healthReport } from "../shared/platform/health.js";
import { api, json } from "../shared/platform/http.js";
import { loggerFrom, unensuredServices } from "../shared/platform/services.js";

/**
 * GET /api/health/details (function key): which parts fail, why (a code, never a value) and
 * since when; and per delivery destination its backlog age, last success, last error and
 * whether a 410 disabled it.
 */
export async function healthDetails(_request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const report = await healthReport(unensuredServices, loggerFrom(context));
    // Delivery is reported, not judged: a destination that is down or disabled does not make the app unhealthy.
    const delivery = report.status === "ok" ? await deliveryStatus(unensuredServices()) : undefined;
    return json(report.status === "ok" ? 200 : 503, delivery ? { ...report, delivery } : report);
  });
}

operatorHttp("health-details", {
  route: "health/details",
  methods: ["GET"],
  role: "Reader",
  handler: healthDetails,
});
