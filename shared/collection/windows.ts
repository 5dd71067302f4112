import type { RawAlert } from "./alert-store.js";
import type { CallPurpose } from "./budget.js";
import { type AlertSource, type ReadOptions, SourceApiError } from "./source.js";
import { compareTimes, timeMs } from "./time.js";

/**
 * Reads a time window of lastUpdateTime completely, whatever the API does.
 *
 * Defender returns items unsorted, in an order that shifts as alerts change, and sends no
 * nextLink under `$top`, so `$skip` paging can lose items. Each window is therefore read
 * in ONE request with `$top` = page size. A full answer is cut at the quartiles of its
 * items' times, which cut [from, to) into exact, adjacent slices, so nothing can fall
 * between them. When the items pile up at the window's start, the cut is `from + 1 ms`
 * (a slice of its own), not a halving. Only a 1 ms slice with more alerts than a page
 * falls back to `$skip`, re-read until two passes agree.
 *
 * A window whose answer cannot be received (retries used up on resets, timeouts, 5xx or
 * cut-off bodies, or an item that cannot be read) is narrowed the same way: halved, then,
 * at 1 ms, read with smaller pages. A slice that still fails at 1 ms and the smallest
 * page is reported through `onSkip` (the engine lists it and the sweep retries it), so one
 * bad slice never stops the rest of the tenant.
 */

export const MIN_SLICE_MS = 1;
/** The smallest `$top` a failing 1 ms slice is retried with. */
export const MIN_TOP = 100;
const MAX_SKIP_PASSES = 5;
/** Attempts per request once a window has failed: narrowing, not retrying, finds the bad part. */
const NARROWING_ATTEMPTS = 2;

export interface Leaf {
  from: number;
  to: number;
  alerts: RawAlert[];
}

export interface SkippedRange {
  from: number;
  to: number;
  code: string;
}

export interface ReaderOptions {
  source: AlertSource;
  pageSize: number;
  purpose: CallPurpose;
  /** Full alerts, or the light listing (the sweep compares ids and times first). */
  full: boolean;
  /** Called once per complete leaf, in time order. */
  onLeaf(leaf: Leaf): Promise<void>;
  /** Called for a slice that could not be read at its narrowest. */
  onSkip(slice: SkippedRange): Promise<void>;
  /** Called before every request (the engine checks and renews its lease there). */
  beforeRequest(): Promise<void>;
}

export class WindowReader {
  constructor(private readonly options: ReaderOptions) {}

  /** Reads [from, to) completely (see above). */
  async read(from: number, to: number, attempts?: number): Promise<void> {
    if (to <= from) return;
    let answer: { alerts: RawAlert[] } | { split: number[] };
    try {
      answer = await this.readOnce(from, to, this.options.pageSize, attempts);
    } catch (err) {
      if (!(err instanceof SourceApiError) || !err.narrowable) throw err;
      if (to - from > MIN_SLICE_MS) {
        const mid = from + Math.floor((to - from) / 2);
        await this.read(from, mid, NARROWING_ATTEMPTS);
        await this.read(mid, to, NARROWING_ATTEMPTS);
        return;
      }
      await this.readNarrowest(from, to, err.code);
      return;
    }
    if ("split" in answer) {
      // The full page is not kept while its pieces are read: memory follows the page size.
      for (let i = 0; i + 1 < answer.split.length; i++) await this.read(answer.split[i]!, answer.split[i + 1]!, attempts);
      return;
    }
    await this.options.onLeaf({ from, to, alerts: answer.alerts });
  }

  /** A failing 1 ms slice: smaller and smaller pages, then give it up to the skipped list. */
  private async readNarrowest(from: number, to: number, code: string): Promise<void> {
    const minTop = Math.min(MIN_TOP, this.options.pageSize);
    const tops: number[] = [];
    for (let top = Math.floor(this.options.pageSize / 4); top > minTop; top = Math.floor(top / 4)) tops.push(top);
    tops.push(minTop);
    let lastCode = code;
    for (const top of tops) {
      try {
        await this.options.onLeaf({ from, to, alerts: await this.skipPaged(from, to, top, NARROWING_ATTEMPTS) });
        return;
      } catch (err) {
        if (!(err instanceof SourceApiError) || !err.narrowable) throw err;
        lastCode = err.code;
      }
    }
    await this.options.onSkip({ from, to, code: lastCode });
  }

  /**
   * One request for [from, to). A full answer is returned as split points instead; a 1 ms
   * slice that is full is read with `$skip`.
   */
  private async readOnce(
    from: number,
    to: number,
    top: number,
    attempts: number | undefined,
  ): Promise<{ alerts: RawAlert[] } | { split: number[] }> {
    const { source, full } = this.options;
    const answer = await source.readWindow({ from, to, top, full }, this.readOptions(attempts));
    if (!answer.full) return { alerts: answer.alerts };
    if (to - from <= MIN_SLICE_MS) return { alerts: await this.skipPaged(from, to, top, attempts) };
    return { split: splitPoints(answer.alerts, from, to) };
  }

  private readOptions(attempts: number | undefined): ReadOptions {
    return { purpose: this.options.purpose, beforeRequest: this.options.beforeRequest, ...(attempts ? { attempts } : {}) };
  }

  /** A slice too narrow to cut: the source's deep paging, re-read until two passes agree on the ids. */
  private async skipPaged(from: number, to: number, top: number, attempts: number | undefined): Promise<RawAlert[]> {
    const { source, full } = this.options;
    let previous: string | undefined;
    const merged = new Map<string, RawAlert>();
    for (let pass = 0; pass < MAX_SKIP_PASSES; pass++) {
      const seen = new Map<string, RawAlert>();
      for (const alert of await source.readExhaustive({ from, to, top, full }, this.readOptions(attempts))) seen.set(alert.id, alert);
      for (const [id, alert] of seen) {
        const known = merged.get(id);
        if (!known || compareTimes(alert.lastUpdateTime, known.lastUpdateTime) >= 0) merged.set(id, alert);
      }
      const ids = [...seen.keys()].sort().join("\n");
      if (ids === previous) return [...merged.values()];
      previous = ids;
    }
    throw new SourceApiError(200, "UnstableSlice", "A 1 ms slice kept changing between $skip passes", true);
  }
}

/**
 * Split points for a full answer of [from, to): the quartiles of its items' times; when
 * the items pile up at `from`, `from + 1 ms` (so the pile gets a 1 ms slice of its own);
 * otherwise the midpoint.
 */
export function splitPoints(alerts: RawAlert[], from: number, to: number): number[] {
  const times = alerts.map((a) => timeMs(a.lastUpdateTime) ?? from).sort((a, b) => a - b);
  const cuts = [1, 2, 3]
    .map((q) => times[Math.floor((q * times.length) / 4)]!)
    .filter((t, i, all) => t > from && t < to && all.indexOf(t) === i);
  if (cuts.length > 0) return [from, ...cuts, to];
  if ((times[Math.floor(times.length / 2)] ?? to) <= from) return [from, from + 1, to];
  return [from, from + Math.floor((to - from) / 2), to];
}
