import { randomUUID } from "node:crypto";
import type { TableClient, TableEntityResult } from "@azure/data-tables";
import { isStatus } from "../platform/storage.js";
import type { LeaseTiming } from "./lease-timing.js";

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

export interface SyncEntity {
  partitionKey: string;
  rowKey: string;
  leaseId?: string;
  leaseEpoch?: number;
  leaseAcquiredAt?: string;
  leaseUntil?: string;
  /** Set by offboarding and purge: a holder that took its lease before this time must stop. */
  stopRequestedAt?: string;
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

export class LeaseLost extends Error {
  constructor(reason: string) {
    super(`The pull lease was lost: ${reason}`);
    this.name = "LeaseLost";
  }
}

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

export class SyncLease {
  private constructor(
    private readonly table: TableClient,
    private readonly timing: LeaseTiming,
    private readonly now: () => Date,
    /** The latest state of the `<source>` row as this holder last wrote or read it. */
    public row: SyncRow,
  ) {}

  get leaseUntil(): number {
    return Date.parse(this.row.leaseUntil ?? "");
  }

  /**
   * Takes the lease if nobody holds a live one; returns "busy" otherwise. The epoch grows
   * at every acquisition, so a holder whose lease expired and was taken can tell.
   */
  static async acquire(
    table: TableClient,
    tenantId: string,
    source: string,
    timing: LeaseTiming,
    now: () => Date,
  ): Promise<SyncLease | "busy"> {
    const at = now();
    const existing = await getSyncRow(table, tenantId, source);
    if (existing && Date.parse(existing.leaseUntil ?? "") > at.getTime()) return "busy";
    const lease: SyncPatch = {
      leaseId: randomUUID(),
      leaseEpoch: (existing?.leaseEpoch ?? 0) + 1,
      leaseAcquiredAt: at.toISOString(),
      leaseUntil: new Date(at.getTime() + timing.leaseTtlMs).toISOString(),
      lastPullAt: at.toISOString(),
    };
    try {
      if (existing) {
        const result = await table.updateEntity({ partitionKey: tenantId, rowKey: source, ...lease }, "Merge", {
          etag: existing.etag,
        });
        return new SyncLease(table, timing, now, { ...existing, ...lease, etag: result.etag! });
      }
      const row = { partitionKey: tenantId, rowKey: source, ...lease };
      const result = await table.createEntity(row);
      return new SyncLease(table, timing, now, { ...row, etag: result.etag! } as SyncRow);
    } catch (err) {
      if (isStatus(err, 409, 412)) return "busy"; // another run won the race
      throw err;
    }
  }

  /** Local check before a write: throws LeaseLost when the lease is (nearly) over. */
  assertHeld(): void {
    if (this.now().getTime() + this.timing.safetyMs >= this.leaseUntil) {
      throw new LeaseLost("it expired before the next write");
    }
  }

  /** Before every write batch: the local check, then a renewal when less than half remains. */
  async beforeWrite(): Promise<void> {
    this.assertHeld();
    if (this.leaseUntil - this.now().getTime() < this.timing.leaseTtlMs / 2) await this.commit({});
  }

  /**
   * An ETag-conditioned merge of the `<source>` row that also renews the lease. Throws
   * LeaseLost if the epoch changed or a stop was requested after this lease was taken;
   * a change by anyone else (there is none today) is merged over.
   */
  async commit(patch: SyncPatch, renew = true): Promise<void> {
    this.assertHeld();
    const full: SyncPatch = renew
      ? { ...patch, leaseUntil: new Date(this.now().getTime() + this.timing.leaseTtlMs).toISOString() }
      : patch;
    const { partitionKey, rowKey } = this.row;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const result = await this.table.updateEntity({ partitionKey, rowKey, ...full }, "Merge", { etag: this.row.etag });
        this.row = { ...this.row, ...full, etag: result.etag! };
        return;
      } catch (err) {
        if (!isStatus(err, 404, 412)) throw err;
      }
      const current = await getSyncRow(this.table, partitionKey, rowKey);
      if (!current) throw new LeaseLost("the sync state was removed");
      this.checkStillOurs(current);
      this.row = { ...current, ...full, etag: current.etag };
    }
    throw new LeaseLost("the sync state kept changing");
  }

  /** Ends the run: saves the patch and gives the lease up. */
  async release(patch: SyncPatch): Promise<void> {
    await this.commit({ ...patch, leaseId: "", leaseUntil: "" }, false);
  }

  private checkStillOurs(current: SyncRow): void {
    if (current.leaseEpoch !== this.row.leaseEpoch || current.leaseId !== this.row.leaseId) {
      throw new LeaseLost("another run took the lease");
    }
    const stop = Date.parse(current.stopRequestedAt ?? "");
    if (!Number.isNaN(stop) && stop >= Date.parse(this.row.leaseAcquiredAt ?? "")) {
      throw new LeaseLost("the tenant was offboarded or purged");
    }
  }
}

export function parseSlices(saved: string | undefined): SkippedSlice[] {
  try {
    const parsed = JSON.parse(saved ?? "[]") as unknown;
    return Array.isArray(parsed) ? (parsed as SkippedSlice[]) : [];
  } catch {
    return [];
  }
}
