import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp } from "../shared/operator/route.js";
import { getAlertJson } from "../shared/operator/alerts-read.js";
import { api } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** GET /api/tenants/{tenantId}/alerts/{alertId}?source=: the alert JSON exactly as its source returned it. */
export async function alertsGet(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const body = await getAlertJson(
      await services(),
      request.params.tenantId ?? "",
      request.params.alertId ?? "",
      request.query.get("source"),
    );
    return {
      status: 200,
      body,
      headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" },
    };
  });
}

operatorHttp("alerts-get", {
  route: "tenants/{tenantId}/alerts/{alertId}",
  methods: ["GET"],
  role: "Reader",
  handler: alertsGet,
});
