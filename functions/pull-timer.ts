import { app, type InvocationContext, type Timer } from "@azure/functions";
import { purgeExpiredStates } from "../shared/onboarding/consent.js";
import { enqueueActiveTenants } from "../shared/collection/queue.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/** Every %PULL_SCHEDULE%: one queue message per active tenant. Stays short; workers scale out. */
export async function pullTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const svc = await services();
  await enqueueActiveTenants(svc, loggerFrom(context));
  await purgeExpiredStates(svc);
}

app.timer("pull-timer", {
  schedule: "%PULL_SCHEDULE%",
  runOnStartup: false,
  useMonitor: true,
  handler: pullTimer,
});
