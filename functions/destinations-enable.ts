import type { HttpRequest, InvocationContext } from "@azure/functions";
import { enableDestination } from "../shared/delivery/replay.js";
import { operatorHttp } from "../shared/operator/route.js";
import { api, json } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** POST /api/destinations/{name}/enable: lift the disable a webhook's 410 set. */
export async function destinationsEnable(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => json(200, await enableDestination(await services(), request.params.name ?? "")));
}

// Changing a destination is an Admin's (issue 15: "change destinations and retention").
operatorHttp("destinations-enable", {
  route: "destinations/{name}/enable",
  methods: ["POST"],
  role: "Admin",
  audit: { action: "destination.enable" },
  handler: destinationsEnable,
});
