import type { TableClient, TableEntityResult } from "@azure/data-tables";
import { isStatus } from "../platform/storage.js";
import { Lease, type LeaseFields } from "./lease.js";
import type { LeaseTiming } from "./lease-timing.js";

export { LeaseLost } from "./lease.js";

/**
 * Per-(tenant, source) pull state in table `syncstate` (PartitionKey = tenant GUID):
 * - RowKey `<source>` (e.g. `defender`): the lease, the incremental cursor (watermark),
 *   the call budget, counts, lateness figures, skipped slices and the last pull error;
 * - RowKey `<source>:sweep`: the reconciliation sweep's cursors and any operator
 *   reconcile request.
 * The tenant row keeps identity, consent and status, so operator edits and consents never
 * compete with pull checkpoints for one ETag.
 *
 * The lease: nothing steals a live lease, so a holder loses it only by expiry, which it
 * checks locally before every write batch. Every checkpoint is an ETag-conditioned write
 * of the `<source>` row that throws LeaseLost if another run took the lease (a new epoch)
 * or an offboarding or purge set `stopRequestedAt` after this lease was taken. Offboarding
 * sets that flag; nothing ever clears or steals a lease.
 */

export const SYNC_TABLE = "syncstate";

export interface SkippedSlice {
  from: string;
  to: string;
  firstFailedAt: string;
  attempts: number;
  lastCode: string;
}

export interface SyncEntity extends LeaseFields {
  partitionKey: string;
  rowKey: string;
  /** The newest lastUpdateTime stored by the incremental cursor (full precision). */
  watermark?: string;
  /** JSON: the call budget's minute buckets (see budget.ts). */
  apiCalls?: string;
  alertsStored?: number;
  sameTimeChanges?: number;
  /** JSON: lateness coverage segments (see lateness.ts). */
  coverage?: string;
  /** JSON: lateness figures per hour (see lateness.ts). */
  lateness?: string;
  /** JSON: SkippedSlice[]. */
  skippedSlices?: string;
  /** 1 once the time index has been built for rows written before it existed. */
  indexVersion?: number;
  lastPullAt?: string;
  lastSuccessAt?: string;
  lastErrorCode?: string;
  lastErrorMessage?: string;
  lastErrorAt?: string;
}

export type SyncRow = TableEntityResult<SyncEntity>;
export type SyncPatch = Partial<Omit<SyncEntity, "partitionKey" | "rowKey">>;

/** A sweep pass in progress: [from, to) read up to `pos` (all ms since the epoch). */
export interface SweepPass {
  kind: "hourly" | "daily" | "reconcile";
  from: number;
  to: number;
  pos: number;
  startedAt: number;
}

export interface SweepEntity {
  partitionKey: string;
  rowKey: string;
  /** JSON SweepPass of each kind while in progress. */
  hourly?: string;
  daily?: string;
  reconcile?: string;
  /** When each kind's last pass started (ms), to schedule the next one. */
  hourlyStartedAt?: number;
  dailyStartedAt?: number;
  /** An operator's request: lookback hours, and when it was made. */
  reconcileRequestedHours?: number;
  reconcileRequestedAt?: string;
  /** The request time of the last reconcile that finished. */
  reconcileDoneFor?: string;
  lastSweepAt?: string;
}

export type SweepRow = TableEntityResult<SweepEntity>;

export async function getSyncRow(table: TableClient, tenantId: string, source: string): Promise<SyncRow | undefined> {
  try {
    return await table.getEntity<SyncEntity>(tenantId, source);
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
}

export async function getSweepRow(table: TableClient, tenantId: string, source: string): Promise<SweepRow | undefined> {
  try {
    return await table.getEntity<SweepEntity>(tenantId, `${source}:sweep`);
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
}

/** Offboarding and purge: ask a running pull to stop, without touching its lease. */
export async function requestStop(table: TableClient, tenantId: string, source: string, at: Date): Promise<void> {
  await table.upsertEntity<SyncEntity>({ partitionKey: tenantId, rowKey: source, stopRequestedAt: at.toISOString() }, "Merge");
}

/** The operator's reconcile request, kept on the sweep row so a busy worker cannot lose it. */
export async function requestReconcile(table: TableClient, tenantId: string, source: string, hours: number, at: Date): Promise<void> {
  await table.upsertEntity<SweepEntity>(
    {
      partitionKey: tenantId,
      rowKey: `${source}:sweep`,
      reconcileRequestedHours: hours,
      reconcileRequestedAt: at.toISOString(),
    },
    "Merge",
  );
}

/** The lease of a (tenant, source): one run at a time (see lease.ts). */
export type SyncLease = Lease<SyncEntity>;

/** Takes the (tenant, source) lease, or "busy" while another run holds a live one. */
export function acquireSyncLease(
  table: TableClient,
  tenantId: string,
  source: string,
  timing: LeaseTiming,
  now: () => Date,
): Promise<SyncLease | "busy"> {
  return Lease.acquire<SyncEntity>(table, tenantId, source, timing, now, { lastPullAt: now().toISOString() });
}

export function parseSlices(saved: string | undefined): SkippedSlice[] {
  try {
    const parsed = JSON.parse(saved ?? "[]") as unknown;
    return Array.isArray(parsed) ? (parsed as SkippedSlice[]) : [];
  } catch {
    return [];
  }
}
