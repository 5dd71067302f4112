import type { HttpRequest, InvocationContext } from "@azure/functions";
import { listAlerts, renderAlertList } from "../shared/operator/alerts-read.js";
import { operatorHttp } from "../shared/operator/route.js";
import { api, json } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** GET /api/alerts: alerts across tenants, filtered, with a continuation token. */
export async function alertsList(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const result = await listAlerts(await services(), request.query);
    if (!result.raw) return json(200, result);
    // include=raw: the alerts' own JSON is spliced in as it was stored.
    return {
      status: 200,
      body: renderAlertList(result),
      headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff" },
    };
  });
}

operatorHttp("alerts-list", {
  route: "alerts",
  methods: ["GET"],
  role: "Reader",
  handler: alertsList,
});
