/**
 * Timer triggers: the schedule (`%SETTING%` resolved from the app settings) is a six-field
 * NCRONTAB expression, seconds first, read by croner in 6-part mode with day-of-month AND
 * day-of-week (NCRONTAB's rule; classic cron ORs them), in the machine's time zone as the
 * host does; or a TimeSpan (`hh:mm:ss`) for a fixed interval. Each invocation gets the
 * host's TimerInfo (`{Schedule, ScheduleStatus, IsPastDue}`), which `@azure/functions`
 * camel-cases. Invocations of one timer never overlap. The schedule status lives in
 * memory (the host's monitor keeps it in storage), so a restart never reports past due.
 */
import { Cron } from "croner";
import { HostError } from "./core-module.js";
import { resolveSettingRefs, type Settings } from "./host-config.js";
import { baseRequest, dotnetOffset, sysMetadata } from "./invoke.js";
import type { AppFunction } from "./load.js";
import type { RpcInvocationRequest } from "./rpc.js";

export interface TimerSchedule {
  /** The resolved expression. */
  expression: string;
  /** The first occurrence strictly after `after`. */
  next(after: Date): Date;
  adjustForDst: boolean;
}

export interface ScheduleStatus {
  last?: Date;
  next: Date;
  lastUpdated?: Date;
}

/** The value the host hands the function, before `@azure/functions` camel-cases it. */
export interface HostTimerInfo {
  Schedule: { AdjustForDST: boolean };
  ScheduleStatus: { Last: string; Next: string; LastUpdated: string } | null;
  IsPastDue: boolean;
}

/** `DateTime.MinValue` as the host writes an unset schedule time. */
const DEFAULT_DATE_TIME = "0001-01-01T00:00:00";
/** Node's timers hold at most 2^31-1 ms; longer waits are re-armed. */
const MAX_TIMER_MS = 24 * 24 * 3600_000;

/** Resolves and parses a timer's schedule; throws a message naming the problem. */
export function parseSchedule(raw: string, settings: Settings, functionName: string): TimerSchedule {
  const expression = resolveSettingRefs(raw, settings, `The schedule of timer function '${functionName}'`).trim();
  const invalid = () =>
    new HostError(
      `The schedule expression '${expression}' of timer function '${functionName}' was not recognized as a valid cron ` +
        "expression or timespan string (NCRONTAB has six fields: second minute hour day month day-of-week).",
    );
  if (/^(\d+\.)?\d{1,2}:\d{1,2}(:\d{1,2})?$/.test(expression)) {
    const [head, ...rest] = expression.split(":");
    const [days, hours] = head!.includes(".") ? head!.split(".").map(Number) : [0, Number(head)];
    const ms = (((days! * 24 + hours!) * 60 + Number(rest[0])) * 60 + Number(rest[1] ?? 0)) * 1000;
    if (ms <= 0) throw invalid();
    return { expression, next: (after) => new Date(after.getTime() + ms), adjustForDst: false };
  }
  const fields = expression.split(/\s+/);
  const plain = /^[\d*,/-]+$/;
  const named = /^[\dA-Za-z*,/-]+$/;
  if (fields.length !== 6 || !fields.every((f, i) => (i >= 4 ? named : plain).test(f)) || /[LW#?]/.test(fields.slice(3).join(""))) {
    throw invalid();
  }
  let cron: Cron;
  try {
    cron = new Cron(expression, { mode: "6-part", domAndDow: true, paused: true });
  } catch {
    throw invalid();
  }
  return {
    expression,
    next(after) {
      const next = cron.nextRun(after);
      if (!next) throw new HostError(`The schedule '${expression}' of timer function '${functionName}' has no next occurrence.`);
      return next;
    },
    adjustForDst: true,
  };
}

/** The TimerInfo the host sends for one invocation. */
export function timerInfo(status: ScheduleStatus | null, isPastDue: boolean, adjustForDst = true): HostTimerInfo {
  return {
    Schedule: { AdjustForDST: adjustForDst },
    ScheduleStatus: status
      ? {
          Last: status.last ? dotnetOffset(status.last, false) : DEFAULT_DATE_TIME,
          Next: dotnetOffset(status.next, false),
          LastUpdated: status.lastUpdated ? dotnetOffset(status.lastUpdated, false) : DEFAULT_DATE_TIME,
        }
      : null,
    IsPastDue: isPastDue,
  };
}

/** The invocation request of a timer trigger. */
export function timerRequest(fn: AppFunction, info: HostTimerInfo, now = new Date()): RpcInvocationRequest {
  return {
    ...baseRequest(fn),
    inputData: [{ name: fn.triggerName, data: { json: JSON.stringify(info) } }],
    triggerMetadata: { sys: sysMetadata(fn, now) },
  };
}

/** One timer function: its schedule, its status, and the timer that fires it. */
export class TimerRunner {
  readonly useMonitor: boolean;
  readonly runOnStartup: boolean;
  status: ScheduleStatus;
  #timer?: NodeJS.Timeout;
  #running: Promise<void> = Promise.resolve();
  /** True until start(): a timer that is not started only runs when fired by hand. */
  #stopped = true;

  constructor(
    readonly fn: AppFunction,
    readonly schedule: TimerSchedule,
    private readonly invokeWith: (info: HostTimerInfo) => Promise<void>,
  ) {
    this.useMonitor = fn.trigger.useMonitor !== false;
    this.runOnStartup = fn.trigger.runOnStartup === true;
    this.status = { next: schedule.next(new Date()) };
  }

  /** Arms the timer (and runs once now when the function asks for runOnStartup). */
  start(): void {
    this.#stopped = false;
    if (this.runOnStartup) this.fire(false, true).catch(() => {});
    else this.#arm();
  }

  stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    return this.#running;
  }

  /**
   * Invokes the function now, after any invocation still running, then moves the status on
   * as the host's listener does. Rejects when the invocation failed; the schedule goes on.
   */
  fire(isPastDue = false, unscheduled = true): Promise<void> {
    const run = this.#running.then(async () => {
      const invokedAt = new Date();
      let failure: { error: unknown } | undefined;
      try {
        await this.invokeWith(timerInfo(this.useMonitor ? this.status : null, isPastDue, this.schedule.adjustForDst));
      } catch (error) {
        failure = { error };
      }
      // A scheduled run that fired a little early counts as its scheduled time.
      const at = !unscheduled && this.status.next > invokedAt ? this.status.next : invokedAt;
      this.status = { last: at, next: this.schedule.next(at), lastUpdated: at };
      if (failure) throw failure.error;
    });
    this.#running = run.catch(() => {});
    return run.finally(() => {
      if (!this.#stopped && this.#timer === undefined) this.#arm();
    });
  }

  #arm(): void {
    if (this.#stopped) return;
    const wait = Math.max(0, this.status.next.getTime() - Date.now());
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        if (wait > MAX_TIMER_MS) this.#arm();
        else this.fire(false, false).catch(() => {});
      },
      Math.min(wait, MAX_TIMER_MS),
    );
    this.#timer.unref();
  }
}
