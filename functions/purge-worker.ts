import { app, type InvocationContext } from "@azure/functions";
import { parsePurgeMessage, runPurge } from "../shared/operator/purge.js";
import { errorName, HandlerFailure } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";
import { PURGE_QUEUE } from "../shared/platform/storage.js";

/**
 * One run of a tenant purge per message: it waits (re-queues itself) while a pull holds the
 * tenant's lease, deletes a bounded number of rows and queues the next run until done. A
 * failure is logged as one sanitized line and thrown as HandlerFailure so the host retries.
 */
export async function purgeWorker(message: unknown, context: InvocationContext): Promise<void> {
  const log = loggerFrom(context);
  const parsed = parsePurgeMessage(message);
  if (!parsed) {
    log.error("purge.message-rejected reason=malformed");
    return;
  }
  try {
    await runPurge(await services(), parsed, log);
  } catch (err) {
    log.error(`purge.failed tenantId=${parsed.tenantId} purgeId=${parsed.purgeId} error=${errorName(err)}`);
    throw new HandlerFailure("purge.failed", err);
  }
}

app.storageQueue("purge-worker", {
  queueName: PURGE_QUEUE,
  connection: "ALERTS_STORAGE",
  handler: purgeWorker,
});
