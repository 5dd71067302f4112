import type { SweepEntity, SweepPass } from "./sync-state.js";

/**
 * Which reconciliation passes a run should work on. The incremental cursor only re-reads
 * the overlap behind its watermark; the sweep bounds every loss by a long lookback
 * instead: an hourly pass over the last SWEEP_HOURLY_LOOKBACK_HOURS and a daily pass over
 * the last SWEEP_DAILY_LOOKBACK_DAYS, plus any operator reconcile. Passes are resumable:
 * each keeps its range and how far it got on the `<source>:sweep` row.
 */

export interface SweepSettings {
  hourlyLookbackMs: number;
  dailyLookbackMs: number;
  lagMs: number;
}

const HOUR = 3600_000;
const DAY = 24 * HOUR;

export function parsePass(saved: string | undefined): SweepPass | undefined {
  if (!saved) return undefined;
  try {
    const pass = JSON.parse(saved) as SweepPass;
    return typeof pass.from === "number" && typeof pass.to === "number" && typeof pass.pos === "number" ? pass : undefined;
  } catch {
    return undefined;
  }
}

export interface ReconcilePass extends SweepPass {
  kind: "reconcile";
  requestedAt: string;
}

/**
 * The passes to work on now, most urgent first: an operator reconcile, then the hourly
 * pass, then the daily one. A pass in progress resumes; a finished one starts again once
 * its period has passed since it started.
 */
export function duePasses(row: SweepEntity | undefined, settings: SweepSettings, now: number): SweepPass[] {
  const passes: SweepPass[] = [];
  const upper = now - settings.lagMs;
  const reconcile = parsePass(row?.reconcile) as ReconcilePass | undefined;
  const requestedAt = row?.reconcileRequestedAt;
  if (reconcile) passes.push(reconcile);
  else if (requestedAt && requestedAt !== row?.reconcileDoneFor && row?.reconcileRequestedHours) {
    const pass: ReconcilePass = {
      kind: "reconcile",
      from: upper - row.reconcileRequestedHours * HOUR,
      to: upper,
      pos: upper - row.reconcileRequestedHours * HOUR,
      startedAt: now,
      requestedAt,
    };
    passes.push(pass);
  }
  for (const [kind, lookback, period] of [
    ["hourly", settings.hourlyLookbackMs, HOUR],
    ["daily", settings.dailyLookbackMs, DAY],
  ] as const) {
    if (lookback <= 0) continue;
    const inProgress = parsePass(row?.[kind]);
    if (inProgress) {
      passes.push(inProgress);
      continue;
    }
    const lastStart = row?.[`${kind}StartedAt`];
    if (lastStart !== undefined && now - lastStart < period) continue;
    passes.push({ kind, from: upper - lookback, to: upper, pos: upper - lookback, startedAt: now });
  }
  return passes;
}

export function isReconcile(pass: SweepPass): pass is ReconcilePass {
  return pass.kind === "reconcile";
}
