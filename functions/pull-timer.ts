import { app, type InvocationContext, type Timer } from "@azure/functions";
import { purgeExpiredStates } from "../shared/onboarding/consent.js";
import { enqueueActiveTenants } from "../shared/collection/queue.js";
import { checkCredentialExpiry } from "../shared/platform/credential-expiry.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/**
 * Every %PULL_SCHEDULE%: one queue message per active tenant. Stays short; workers scale
 * out. Once a day it also checks the client secret's expiry in Key Vault.
 */
export async function pullTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const svc = await services();
  const log = loggerFrom(context);
  await enqueueActiveTenants(svc, log);
  await purgeExpiredStates(svc);
  await checkCredentialExpiry(svc, log);
}

app.timer("pull-timer", {
  schedule: "%PULL_SCHEDULE%",
  runOnStartup: false,
  useMonitor: true,
  handler: pullTimer,
});
