import { app, type InvocationContext, type Timer } from "@azure/functions";
import { applyRetention } from "../shared/operator/retention.js";
import { errorName, HandlerFailure } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/**
 * Once a day (02:17 UTC): alerts older than ALERT_RETENTION_DAYS are deleted with their
 * parts and index rows (bounded per run; the next run goes on), and audit entries older
 * than AUDIT_RETENTION_DAYS.
 */
export async function lifecycleTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const log = loggerFrom(context);
  try {
    await applyRetention(await services(), log);
  } catch (err) {
    log.error(`retention.failed error=${errorName(err)}`);
    throw new HandlerFailure("retention.failed", err);
  }
}

app.timer("lifecycle-timer", {
  schedule: "0 17 2 * * *",
  runOnStartup: false,
  useMonitor: true,
  handler: lifecycleTimer,
});
