import { app, type InvocationContext } from "@azure/functions";
import { pullTenant } from "../shared/collection/engine.js";
import { parseMessage } from "../shared/collection/queue.js";
import { loggerFrom, services } from "../shared/platform/services.js";
import { PULL_QUEUE } from "../shared/platform/storage.js";

/** One tenant pull per queue message. A malformed message is logged and dropped. */
export async function pullWorker(message: unknown, context: InvocationContext): Promise<void> {
  const log = loggerFrom(context);
  const parsed = parseMessage(message);
  if (!parsed) {
    log.error("pull.message-rejected reason=malformed");
    return;
  }
  await pullTenant(await services(), parsed.tenantId, log);
}

app.storageQueue("pull-worker", {
  queueName: PULL_QUEUE,
  connection: "ALERTS_STORAGE",
  handler: pullWorker,
});
