import { app, type InvocationContext, type Timer } from "@azure/functions";
import { enqueueActiveTenants } from "../shared/collection/queue.js";
import { queueOverdueDeliveries } from "../shared/delivery/queue.js";
import { purgeExpiredStates } from "../shared/onboarding/consent.js";
import { checkCredentialExpiry } from "../shared/platform/credential-expiry.js";
import { errorName, HandlerFailure } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/**
 * Every %PULL_SCHEDULE%: one queue message per active tenant, expired consent states are
 * removed, tenants whose delivery is overdue are woken again, and once a day the client secret's expiry in Key Vault is checked. Stays
 * short; workers scale out. A failure is logged as one sanitized line and thrown as
 * HandlerFailure (event and error class only), never as the raw error.
 */
export async function pullTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const log = loggerFrom(context);
  let event = "schedule.failed";
  try {
    const svc = await services();
    await enqueueActiveTenants(svc, log);
    event = "states.purge-failed";
    const removed = await purgeExpiredStates(svc);
    if (removed > 0) log.info(`states.purged count=${removed}`);
    event = "delivery.requeue-failed";
    await queueOverdueDeliveries(svc, log);
    event = "credential.check-failed";
    await checkCredentialExpiry(svc, log);
  } catch (err) {
    log.error(`${event} error=${errorName(err)}`);
    throw new HandlerFailure(event, err);
  }
}

app.timer("pull-timer", {
  schedule: "%PULL_SCHEDULE%",
  runOnStartup: false,
  useMonitor: true,
  handler: pullTimer,
});
