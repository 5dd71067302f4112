import { app, type InvocationContext } from "@azure/functions";
import { deliverTenant } from "../shared/delivery/deliver.js";
import { parseDeliveryMessage } from "../shared/delivery/queue.js";
import { prepareReplay } from "../shared/delivery/replay.js";
import { errorName, HandlerFailure } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";
import { DELIVERY_QUEUE } from "../shared/platform/storage.js";

/**
 * One delivery run per queue message: a tenant's outbox to every routed destination, or a
 * replay to prepare. A malformed message is logged and dropped; a failure the host must
 * retry is logged as one sanitized line and thrown as HandlerFailure.
 */
export async function deliverWorker(message: unknown, context: InvocationContext): Promise<void> {
  const log = loggerFrom(context);
  const parsed = parseDeliveryMessage(message);
  if (!parsed) {
    log.error("delivery.message-rejected reason=malformed");
    return;
  }
  try {
    const svc = await services();
    if ("replayId" in parsed) await prepareReplay(svc, parsed.replayId, log);
    else await deliverTenant(svc, parsed.tenantId, log);
  } catch (err) {
    log.error(`delivery.worker-failed error=${errorName(err)}`);
    throw new HandlerFailure("delivery.worker-failed", err);
  }
}

app.storageQueue("deliver-worker", {
  queueName: DELIVERY_QUEUE,
  connection: "ALERTS_STORAGE",
  handler: deliverWorker,
});
