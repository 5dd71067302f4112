import type { HttpRequest, InvocationContext } from "@azure/functions";
import { parseReplay, queueReplay } from "../shared/delivery/replay.js";
import { type OperatorCall, operatorHttp } from "../shared/operator/route.js";
import { api, json, parseTenantId, readJsonObject } from "../shared/platform/http.js";
import { services, unensuredServices } from "../shared/platform/services.js";

/** POST /api/destinations/{name}/replay: re-send the current version of a range of alerts (202). */
export async function destinationsReplay(request: HttpRequest, context: InvocationContext, call?: OperatorCall) {
  return api(context, async () => {
    const input = await readJsonObject(request);
    const known = unensuredServices().config.destinations.map((d) => d.name);
    const replay = parseReplay(request.params.name ?? "", input, known);
    // The replay row names who asked: the user's sign-in name, or the automation's app ID.
    const by = call ? (call.identity.upn ?? call.identity.appId ?? call.identity.oid) : "unknown";
    return json(202, { ...(await queueReplay(await services(), replay, by)), destination: replay.destination });
  });
}

operatorHttp("destinations-replay", {
  route: "destinations/{name}/replay",
  methods: ["POST"],
  role: "Operator",
  audit: {
    action: "destination.replay",
    tenant: async (request) => {
      const tenantId = (await readJsonObject(request)).tenantId;
      return tenantId === undefined ? undefined : parseTenantId(tenantId);
    },
  },
  handler: destinationsReplay,
});
