import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { parseReplay, queueReplay } from "../shared/delivery/replay.js";
import { api, json, readJsonObject } from "../shared/platform/http.js";
import { services, unensuredServices } from "../shared/platform/services.js";

/** POST /api/destinations/{name}/replay: re-send the current version of a range of alerts (202). */
export async function destinationsReplay(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const input = await readJsonObject(request);
    const known = unensuredServices().config.destinations.map((d) => d.name);
    const replay = parseReplay(request.params.name ?? "", input, known);
    return json(202, { ...(await queueReplay(await services(), replay, "function-key")), destination: replay.destination });
  });
}

app.http("destinations-replay", {
  route: "destinations/{name}/replay",
  methods: ["POST"],
  authLevel: "function",
  handler: destinationsReplay,
});
