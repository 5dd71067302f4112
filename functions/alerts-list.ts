import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp } from "../shared/operator/route.js";
import { listAlerts } from "../shared/operator/alerts-read.js";
import { api, json } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** GET /api/alerts: alerts across tenants, filtered, with a continuation token. */
export async function alertsList(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => json(200, await listAlerts(await services(), request.query)));
}

operatorHttp("alerts-list", {
  route: "alerts",
  methods: ["GET"],
  role: "Reader",
  handler: alertsList,
});
