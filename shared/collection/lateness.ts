/**
 * Lateness: how long after its lastUpdateTime an alert became visible to us, as a lower
 * bound the collector can prove. For each alert stored for the first time,
 * `lateness = max(0, U - lastUpdateTime)`, where U is the upper bound of the most recent
 * earlier completed window of this (tenant, source) that covered that time: that window
 * was read and the alert was not in it, so it was published after U. Windows of the
 * incremental cursor and of the sweep both count, because both prove the alert was not
 * yet there; the schedule period and PULL_LAG_SECONDS do not count.
 *
 * Coverage is kept as a step function over time: disjoint segments [from, to) each with
 * the largest upper bound U of a completed window covering it. A sweep covers a long
 * range with one U, which flattens the steps, so the list stays short.
 *
 * Figures are kept per hour for the last 24 h, in fixed log-scale buckets (powers of two
 * seconds), so p99 and the maximum survive across runs on the sync-state row.
 */

/** [from ms, to ms, U ms] */
export type Segment = [number, number, number];

const KEEP_MS = 8 * 24 * 3600_000;
const MAX_SEGMENTS = 500;

export class Coverage {
  constructor(readonly segments: Segment[] = []) {}

  static parse(saved: string | undefined): Coverage {
    try {
      const parsed = JSON.parse(saved ?? "[]") as unknown;
      if (!Array.isArray(parsed)) return new Coverage();
      return new Coverage(
        parsed.filter((s): s is Segment => Array.isArray(s) && s.length === 3 && s.every((n) => typeof n === "number")),
      );
    } catch {
      return new Coverage();
    }
  }

  /** The U of the most recent completed window that covered `t`, or undefined. */
  upperBoundAt(t: number): number | undefined {
    for (const [from, to, u] of this.segments) if (from <= t && t < to) return u;
    return undefined;
  }

  /** Records that [from, to) was read completely by a window whose upper bound is `u`. */
  add(from: number, to: number, u: number, now: number): void {
    if (to <= from) return;
    const out: Segment[] = [];
    for (const [f, t, v] of this.segments) {
      if (t <= from || f >= to) {
        out.push([f, t, v]);
        continue;
      }
      if (f < from) out.push([f, from, v]);
      out.push([Math.max(f, from), Math.min(t, to), Math.max(v, u)]);
      if (t > to) out.push([to, t, v]);
    }
    // The parts of [from, to) that nothing covered yet.
    let cursor = from;
    for (const [f, t] of out.filter(([f, t]) => t > from && f < to).sort((a, b) => a[0] - b[0])) {
      if (f > cursor) out.push([cursor, f, u]);
      cursor = Math.max(cursor, t);
    }
    if (cursor < to) out.push([cursor, to, u]);
    out.sort((a, b) => a[0] - b[0]);
    const merged: Segment[] = [];
    for (const s of out) {
      const last = merged[merged.length - 1];
      if (last && last[1] === s[0] && last[2] === s[2]) last[1] = s[1];
      else merged.push([...s]);
    }
    const kept = merged.filter(([, t]) => t > now - KEEP_MS);
    this.segments.splice(0, this.segments.length, ...kept.slice(-MAX_SEGMENTS));
  }

  serialize(): string {
    return JSON.stringify(this.segments);
  }
}

/** Bucket i holds lateness in [2^(i-1), 2^i) seconds; bucket 0 holds 0 s. */
const BUCKETS = 24;

function bucketOf(seconds: number): number {
  if (seconds < 1) return 0;
  return Math.min(BUCKETS - 1, Math.floor(Math.log2(seconds)) + 1);
}

/** The upper edge of a bucket, in seconds: the figure reported for a percentile in it. */
function bucketTop(bucket: number): number {
  return bucket === 0 ? 0 : 2 ** bucket;
}

interface HourFigures {
  hour: number;
  counts: number[];
  max: number;
  foundBySweep: number;
}

export interface LatenessSummary {
  p99Seconds: number;
  maxSeconds: number;
  foundBySweep24h: number;
  /** Alerts measured in the last 24 h. */
  count: number;
}

export class LatenessFigures {
  private readonly hours: HourFigures[];

  constructor(hours: HourFigures[] = []) {
    this.hours = hours;
  }

  static parse(saved: string | undefined): LatenessFigures {
    try {
      const parsed = JSON.parse(saved ?? "[]") as unknown;
      if (!Array.isArray(parsed)) return new LatenessFigures();
      return new LatenessFigures(
        parsed
          .filter((h): h is [number, number, number, number[]] => Array.isArray(h) && h.length === 4)
          .map(([hour, max, foundBySweep, sparse]) => {
            const counts = new Array<number>(BUCKETS).fill(0);
            for (let i = 0; i + 1 < sparse.length; i += 2) counts[sparse[i]!] = sparse[i + 1]!;
            return { hour, max, foundBySweep, counts };
          }),
      );
    } catch {
      return new LatenessFigures();
    }
  }

  record(nowMs: number, latenessSeconds: number): void {
    const hour = this.hourOf(nowMs);
    hour.counts[bucketOf(latenessSeconds)]!++;
    hour.max = Math.max(hour.max, latenessSeconds);
  }

  recordSweepFind(nowMs: number): void {
    this.hourOf(nowMs).foundBySweep++;
  }

  summary(nowMs: number): LatenessSummary {
    const since = Math.floor(nowMs / 3600_000) - 23;
    const recent = this.hours.filter((h) => h.hour >= since);
    const counts = new Array<number>(BUCKETS).fill(0);
    let max = 0;
    let foundBySweep24h = 0;
    for (const h of recent) {
      h.counts.forEach((c, i) => {
        counts[i]! += c;
      });
      max = Math.max(max, h.max);
      foundBySweep24h += h.foundBySweep;
    }
    const count = counts.reduce((a, b) => a + b, 0);
    let p99Seconds = 0;
    if (count > 0) {
      const rank = Math.ceil(count * 0.99);
      let seen = 0;
      for (let i = 0; i < BUCKETS; i++) {
        seen += counts[i]!;
        if (seen >= rank) {
          p99Seconds = Math.min(bucketTop(i), max);
          break;
        }
      }
    }
    return { p99Seconds, maxSeconds: Math.round(max), foundBySweep24h, count };
  }

  serialize(nowMs: number): string {
    const since = Math.floor(nowMs / 3600_000) - 23;
    return JSON.stringify(
      this.hours
        .filter((h) => h.hour >= since)
        .map((h) => {
          const sparse: number[] = [];
          h.counts.forEach((c, i) => {
            if (c > 0) sparse.push(i, c);
          });
          return [h.hour, Math.round(h.max), h.foundBySweep, sparse];
        }),
    );
  }

  private hourOf(nowMs: number): HourFigures {
    const hour = Math.floor(nowMs / 3600_000);
    let figures = this.hours.find((h) => h.hour === hour);
    if (!figures) {
      figures = { hour, counts: new Array<number>(BUCKETS).fill(0), max: 0, foundBySweep: 0 };
      this.hours.push(figures);
    }
    return figures;
  }
}

/**
 * The overlap the incremental pull uses: PULL_OVERLAP_MINUTES, widened to twice the p99
 * lateness only when PULL_OVERLAP_AUTO_MAX_MINUTES is set, and never above it.
 */
export function effectiveOverlapMs(pull: { overlapMs: number; overlapAutoMaxMs: number }, late: LatenessSummary): number {
  const { overlapMs, overlapAutoMaxMs } = pull;
  if (overlapAutoMaxMs <= overlapMs) return overlapMs;
  return Math.min(overlapAutoMaxMs, Math.max(overlapMs, 2 * late.p99Seconds * 1000));
}
