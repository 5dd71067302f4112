import type { RawAlert } from "./alert-store.js";
import type { CallPurpose } from "./budget.js";
import { type AlertSource, type ReadOptions, SourceApiError, type WindowAnswer } from "./source.js";
import { compareTimes, timeMs } from "./time.js";

/**
 * Reads a time window of lastUpdateTime completely, whatever the API does.
 *
 * Defender returns items unsorted, in an order that shifts as alerts change, and sends no
 * nextLink under `$top`, so `$skip` paging can lose items. Each window is therefore read
 * in ONE request with `$top` = page size (Graph: a short, checked nextLink chain; see its
 * source). Items are handed to the leaf's sink as they are parsed, while the rest of the
 * answer still downloads, so memory follows the write batch, not the page.
 *
 * A full answer (as many items as `$top`) cannot be proven complete, because the API
 * returns an unordered, shifting subset. Its items are stored anyway (newest-wins makes a
 * second write of the same version a no-op), and their times choose the cuts: [from, to)
 * is cut into exact, adjacent slices at the items' quantiles, as many as needed for each
 * to be expected to hold fewer than `$top` items, so nothing can fall between them. When
 * the items pile up at the window's start, the cut is `from + 1 ms` (a slice of its own).
 * Every slice is then read in turn. Only a 1 ms slice with more alerts than a page falls
 * back to the source's deep paging, re-read until two passes agree. The window is complete
 * (its sink ends with `complete`) only when its own answer was not full.
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
/** Slices of a full answer are sized to hold this share of `$top` on average. */
const SLICE_FILL = 0.8;

/** Where a window's items go while it is read. */
export interface LeafSink {
  /** A batch of items as they arrive (possibly of an answer that turns out full). */
  write(alerts: RawAlert[]): Promise<void>;
  /**
   * The answer is over. `complete`: the window was read completely, every item of it went
   * through `write`. Otherwise the answer was full: its items are stored all the same, and
   * the window's slices are read next.
   */
  end(complete: boolean): Promise<void>;
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
  /** A sink for the window [from, to), opened before it is read. */
  openLeaf(from: number, to: number): Promise<LeafSink>;
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
    let cuts: number[] | undefined;
    try {
      cuts = await this.readOnce(from, to, attempts);
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
    if (cuts) for (let i = 0; i + 1 < cuts.length; i++) await this.read(cuts[i]!, cuts[i + 1]!, attempts);
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
        const alerts = await this.skipPaged(from, to, top, NARROWING_ATTEMPTS);
        const sink = await this.options.openLeaf(from, to);
        await sink.write(alerts);
        await sink.end(true);
        return;
      } catch (err) {
        if (!(err instanceof SourceApiError) || !err.narrowable) throw err;
        lastCode = err.code;
      }
    }
    await this.options.onSkip({ from, to, code: lastCode });
  }

  /**
   * One read of [from, to), its items streamed into the window's sink. Returns the cuts when
   * the answer was full (the window must be read again in slices), else undefined.
   */
  private async readOnce(from: number, to: number, attempts: number | undefined): Promise<number[] | undefined> {
    const { source, full, pageSize } = this.options;
    const sink = await this.options.openLeaf(from, to);
    const answer = await source.readWindow({ from, to, top: pageSize, full }, this.readOptions(attempts), (batch) => sink.write(batch));
    if (to - from <= MIN_SLICE_MS) {
      // Too narrow to cut: a full answer is read again with deep paging.
      if (answer.full) await sink.write(await this.skipPaged(from, to, pageSize, attempts));
      await sink.end(true);
      return undefined;
    }
    await sink.end(!answer.full);
    if (!answer.full) return undefined;
    return splitPoints(answer.times, from, to, slicesFor(answer, pageSize));
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
 * Cuts for a full answer of [from, to) (item times in ms): `pieces` slices at the items'
 * quantiles; when the items pile up at `from`, `from + 1 ms` first (so the pile gets a 1 ms
 * slice of its own); with no usable quantile, the midpoint.
 */
export function splitPoints(times: number[], from: number, to: number, pieces = 4): number[] {
  const sorted = [...times].sort((a, b) => a - b);
  const cuts: number[] = [];
  for (let q = 1; q < pieces; q++) {
    const t = sorted[Math.floor((q * sorted.length) / pieces)];
    if (t !== undefined && t > from && t < to && !cuts.includes(t)) cuts.push(t);
  }
  if (cuts.length > 0) return [from, ...cuts, to];
  if ((sorted[Math.floor(sorted.length / 2)] ?? to) <= from) return [from, from + 1, to];
  return [from, from + Math.floor((to - from) / 2), to];
}

/**
 * How many slices a full answer's window is cut into: enough for each to be expected to hold
 * SLICE_FILL of `$top`, from the window's total where the source gives one (Graph's
 * `@odata.count`). Without a total (Defender) the window holds at least `$top` items, and
 * three slices read a window of up to about 2.7 x `$top` in one round: one call fewer than
 * four slices would, and ceil(N / `$top`) + 1 calls in all from 2 x `$top` on. Past that a
 * slice can come back full and is cut in turn.
 */
export function slicesFor(answer: WindowAnswer, pageSize: number): number {
  if (answer.total !== undefined) return Math.max(2, Math.ceil(answer.total / (pageSize * SLICE_FILL)));
  return Math.max(3, Math.ceil(answer.times.length / (pageSize * SLICE_FILL)));
}

/** The times (ms) of alerts, for the cuts. */
export function timesOf(alerts: RawAlert[], fallback: number): number[] {
  return alerts.map((a) => timeMs(a.lastUpdateTime) ?? fallback);
}
