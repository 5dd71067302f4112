import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { listAlerts } from "../shared/operator/alerts-read.js";
import { api, json } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** GET /api/alerts: alerts across tenants, filtered, with a continuation token. */
export async function alertsList(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => json(200, await listAlerts(await services(), request.query)));
}

app.http("alerts-list", {
  route: "alerts",
  methods: ["GET"],
  authLevel: "function",
  handler: alertsList,
});
