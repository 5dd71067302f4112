import type { RawAlert } from "./alert-store.js";
import type { CallPurpose } from "./budget.js";

/**
 * What the pull engine needs from an alert API. A source reads one time window of
 * lastUpdateTime per call and handles its own request quirks (retries, throttling, paging
 * links); the engine does the windowing, splitting, narrowing, fencing and writing.
 */

export interface WindowQuery {
  /** Inclusive lower bound on lastUpdateTime, ms since the epoch. */
  from: number;
  /** Exclusive upper bound, ms since the epoch. */
  to: number;
  top: number;
  skip?: number;
  /** Full alerts (with evidence), or a light listing whose id and lastUpdateTime suffice to compare. */
  full: boolean;
}

export interface SourcePage {
  alerts: RawAlert[];
  /** A server-driven continuation, already checked to be on the source's own origin. */
  nextLink?: string;
}

export interface ReadOptions {
  purpose: CallPurpose;
  /** Attempts for transient failures (network, 5xx, cut-off bodies); the source's default otherwise. */
  attempts?: number;
}

export interface AlertSource {
  /** The sync-state RowKey of this source's cursor, e.g. `defender`. */
  readonly name: string;
  list(query: WindowQuery, options: ReadOptions): Promise<SourcePage>;
  next(nextLink: string, options: ReadOptions): Promise<SourcePage>;
}

/**
 * A failed call to the source. `status` is 0 for a network failure, timeout, reset or
 * cut-off body. A `narrowable` failure (retries used up on a network failure, 5xx or
 * cut-off body, or an item that cannot be read) makes the engine narrow the window, so a
 * bad window shrinks to the smallest slice that still fails instead of failing for ever.
 */
export class SourceApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly narrowable = false,
  ) {
    super(message);
    this.name = "SourceApiError";
  }
}
