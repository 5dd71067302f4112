import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { enableDestination } from "../shared/delivery/replay.js";
import { api, json } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** POST /api/destinations/{name}/enable: lift the disable a webhook's 410 set. */
export async function destinationsEnable(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => json(200, await enableDestination(await services(), request.params.name ?? "")));
}

app.http("destinations-enable", {
  route: "destinations/{name}/enable",
  methods: ["POST"],
  authLevel: "function",
  handler: destinationsEnable,
});
