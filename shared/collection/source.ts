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

export interface ReadOptions {
  purpose: CallPurpose;
  /** Attempts for transient failures (network, 5xx, cut-off bodies); the source's default otherwise. */
  attempts?: number;
  /** Called before every request (the engine checks and renews its lease there). */
  beforeRequest(): Promise<void>;
}

export interface WindowAnswer {
  /** The update times (ms) of every item, for the cuts of a full answer. */
  times: number[];
  /**
   * The window could not be read completely in one go (a full page, or a longer or moving
   * paging chain than the source accepts per window): the engine cuts it at the items'
   * times and reads the pieces.
   */
  full: boolean;
  /** How many items the service says the window holds, where it says (Graph's `@odata.count`). */
  total?: number;
}

/** Receives a window's items in batches while the answer still downloads. */
export type ItemSink = (alerts: RawAlert[]) => Promise<void>;

export type SourceName = "defender" | "graph";

export interface AlertSource {
  /** The sync-state RowKey of this source's cursor (`defender`, `graph`). */
  readonly name: SourceName;
  /**
   * Reads one window, following the source's own paging as far as it allows per window;
   * items go to the sink in batches as they are parsed.
   */
  readWindow(query: WindowQuery, options: ReadOptions, sink: ItemSink): Promise<WindowAnswer>;
  /** Reads every item of a window too narrow to cut (1 ms) with the source's deep paging, once. */
  readExhaustive(query: WindowQuery, options: ReadOptions): Promise<RawAlert[]>;
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
