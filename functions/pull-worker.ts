import { app, type InvocationContext } from "@azure/functions";
import { pullTenant } from "../shared/collection/engine.js";
import { parseMessage } from "../shared/collection/queue.js";
import { verifyPendingConsent } from "../shared/onboarding/app-consent.js";
import { errorName, HandlerFailure } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";
import { PULL_QUEUE } from "../shared/platform/storage.js";

/**
 * One tenant pull per queue message (or, for `reason: verify`, one verification probe of an
 * application-mode consent that is still propagating). A malformed message is logged and dropped. A failure
 * the host must retry (storage or Key Vault trouble) is logged as one sanitized line and
 * thrown as HandlerFailure (event and error class only): the host logs what a handler
 * throws, and a raw SDK error carries request details.
 */
export async function pullWorker(message: unknown, context: InvocationContext): Promise<void> {
  const log = loggerFrom(context);
  const parsed = parseMessage(message);
  if (!parsed) {
    log.error("pull.message-rejected reason=malformed");
    return;
  }
  try {
    const svc = await services();
    if (parsed.reason === "verify") await verifyPendingConsent(svc, parsed.tenantId, log);
    else await pullTenant(svc, parsed.tenantId, log);
  } catch (err) {
    log.error(`pull.worker-failed tenantId=${parsed.tenantId} error=${errorName(err)}`);
    throw new HandlerFailure("pull.worker-failed", err);
  }
}

app.storageQueue("pull-worker", {
  queueName: PULL_QUEUE,
  connection: "ALERTS_STORAGE",
  handler: pullWorker,
});
