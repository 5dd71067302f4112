/**
 * The per-(tenant, source) call budget. Defender allows 100 calls a minute and 1,500 an
 * hour per app and tenant; the budget keeps under configurable limits, counted per minute
 * and persisted on the sync-state row so that the hourly limit spans runs.
 *
 * Calls are charged to a purpose. The incremental pull may use the whole budget; the
 * reconciliation sweep only its share (SWEEP_BUDGET_PERCENT of both limits, counted over
 * the same minute and hour), so it never starves the incremental pull; an operator
 * reconcile raises that share to half until it is done.
 */

export class BudgetExhaustedError extends Error {
  constructor(
    message: string,
    /** True when only the sweep's share ran out (the incremental pull may still call). */
    readonly shareOnly = false,
  ) {
    super(message);
    this.name = "BudgetExhaustedError";
  }
}

export type CallPurpose = "incremental" | "sweep";

export interface BudgetLimits {
  perMinute: number;
  perHour: number;
}

/** [minute since epoch, all calls, sweep calls] */
type Bucket = [number, number, number];

export class CallBudget {
  private readonly buckets: Map<number, Bucket>;
  /** Calls counted by this instance (this run), by purpose. */
  readonly used = { incremental: 0, sweep: 0 };
  private sweepPercent: number;

  constructor(
    private readonly limits: BudgetLimits,
    sweepPercent: number,
    private readonly now: () => Date,
    saved?: string,
  ) {
    this.sweepPercent = sweepPercent;
    this.buckets = new Map(parseBuckets(saved).map((b) => [b[0], b]));
  }

  get calls(): number {
    return this.used.incremental + this.used.sweep;
  }

  /** Raises (or restores) the sweep's share, e.g. to 50 % while an operator reconcile runs. */
  setSweepPercent(percent: number): void {
    this.sweepPercent = percent;
  }

  /** The sweep's limits: its percentage of each limit, at least one call. */
  sweepLimits(): BudgetLimits {
    const share = (n: number) => Math.max(1, Math.floor((n * this.sweepPercent) / 100));
    return { perMinute: share(this.limits.perMinute), perHour: share(this.limits.perHour) };
  }

  /** Counts one call, or throws BudgetExhaustedError when a limit would be passed. */
  take(purpose: CallPurpose): void {
    const minute = Math.floor(this.now().getTime() / 60_000);
    for (const key of this.buckets.keys()) if (key <= minute - 60) this.buckets.delete(key);
    const current = this.buckets.get(minute) ?? [minute, 0, 0];
    let hourAll = 0;
    let hourSweep = 0;
    for (const [, all, sweep] of this.buckets.values()) {
      hourAll += all;
      hourSweep += sweep;
    }
    if (current[1] >= this.limits.perMinute) throw new BudgetExhaustedError("per-minute API budget used up");
    if (hourAll >= this.limits.perHour) throw new BudgetExhaustedError("hourly API budget used up");
    if (purpose === "sweep") {
      const share = this.sweepLimits();
      if (current[2] >= share.perMinute || hourSweep >= share.perHour) {
        throw new BudgetExhaustedError("the sweep's share of the API budget is used up", true);
      }
    }
    this.buckets.set(minute, [minute, current[1] + 1, current[2] + (purpose === "sweep" ? 1 : 0)]);
    this.used[purpose]++;
  }

  serialize(): string {
    return JSON.stringify([...this.buckets.values()].sort((a, b) => a[0] - b[0]));
  }
}

function parseBuckets(saved: string | undefined): Bucket[] {
  if (!saved) return [];
  try {
    const parsed = JSON.parse(saved) as unknown;
    if (!Array.isArray(parsed)) return [];
    return parsed
      .filter((e): e is number[] => Array.isArray(e) && e.length >= 2 && e.every((n) => typeof n === "number"))
      .map((e) => [e[0]!, e[1]!, e[2] ?? 0]);
  } catch {
    return [];
  }
}
