import { randomUUID } from "node:crypto";
import type { TableClient, TableEntityResult } from "@azure/data-tables";
import { isStatus } from "../platform/storage.js";
import type { LeaseTiming } from "./lease-timing.js";

/**
 * A lease on one table row: one holder at a time for a unit of work (a (tenant, source)
 * pull, a (destination, tenant) delivery). Nothing steals a live lease, so a holder loses
 * it only by expiry, which it checks locally before every write. Every commit is an
 * ETag-conditioned merge of the row that throws LeaseLost if another holder took the lease
 * (the epoch grows at every acquisition) or a stop was requested after this lease was
 * taken (`stopRequestedAt`, set by offboarding and purge). Nobody ever clears or steals a
 * lease.
 */

export interface LeaseFields {
  leaseId?: string;
  leaseEpoch?: number;
  leaseAcquiredAt?: string;
  leaseUntil?: string;
  /** Set by offboarding and purge: a holder that took its lease before this time must stop. */
  stopRequestedAt?: string;
}

export class LeaseLost extends Error {
  constructor(reason: string) {
    super(`The lease was lost: ${reason}`);
    this.name = "LeaseLost";
  }
}

type Row<E> = TableEntityResult<E & { partitionKey: string; rowKey: string }>;

export class Lease<E extends LeaseFields> {
  private constructor(
    private readonly table: TableClient,
    private readonly timing: LeaseTiming,
    private readonly now: () => Date,
    /** The latest state of the row as this holder last wrote or read it. */
    public row: Row<E>,
  ) {}

  get leaseUntil(): number {
    return Date.parse(this.row.leaseUntil ?? "");
  }

  /**
   * Takes the lease if nobody holds a live one; returns "busy" otherwise. `extra` is merged
   * into the row in the same write.
   */
  static async acquire<E extends LeaseFields>(
    table: TableClient,
    partitionKey: string,
    rowKey: string,
    timing: LeaseTiming,
    now: () => Date,
    extra: Partial<E> = {},
  ): Promise<Lease<E> | "busy"> {
    const at = now();
    const existing = await getRow<E>(table, partitionKey, rowKey);
    if (existing && Date.parse(existing.leaseUntil ?? "") > at.getTime()) return "busy";
    const lease = {
      ...extra,
      leaseId: randomUUID(),
      leaseEpoch: (existing?.leaseEpoch ?? 0) + 1,
      leaseAcquiredAt: at.toISOString(),
      leaseUntil: new Date(at.getTime() + timing.leaseTtlMs).toISOString(),
    } as Partial<E>;
    try {
      if (existing) {
        const result = await table.updateEntity({ partitionKey, rowKey, ...lease }, "Merge", { etag: existing.etag });
        return new Lease<E>(table, timing, now, { ...existing, ...lease, etag: result.etag! });
      }
      const row = { partitionKey, rowKey, ...lease };
      const result = await table.createEntity(row);
      return new Lease<E>(table, timing, now, { ...row, etag: result.etag! } as Row<E>);
    } catch (err) {
      if (isStatus(err, 409, 412)) return "busy"; // another holder won the race
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
   * An ETag-conditioned merge of the row that also renews the lease. Throws LeaseLost if
   * the epoch changed or a stop was requested after this lease was taken; a change by
   * anyone else is merged over.
   */
  async commit(patch: Partial<E>, renew = true): Promise<void> {
    this.assertHeld();
    const full = (renew ? { ...patch, leaseUntil: new Date(this.now().getTime() + this.timing.leaseTtlMs).toISOString() } : patch) as Partial<E>;
    const { partitionKey, rowKey } = this.row;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const result = await this.table.updateEntity({ partitionKey, rowKey, ...full }, "Merge", { etag: this.row.etag });
        this.row = { ...this.row, ...full, etag: result.etag! };
        return;
      } catch (err) {
        if (!isStatus(err, 404, 412)) throw err;
      }
      const current = await getRow<E>(this.table, partitionKey, rowKey);
      if (!current) throw new LeaseLost("the row was removed");
      this.checkStillOurs(current);
      this.row = { ...current, ...full, etag: current.etag };
    }
    throw new LeaseLost("the row kept changing");
  }

  /** Ends the run: saves the patch and gives the lease up. */
  async release(patch: Partial<E>): Promise<void> {
    await this.commit({ ...patch, leaseId: "", leaseUntil: "" }, false);
  }

  private checkStillOurs(current: Row<E>): void {
    if (current.leaseEpoch !== this.row.leaseEpoch || current.leaseId !== this.row.leaseId) {
      throw new LeaseLost("another run took the lease");
    }
    const stop = Date.parse(current.stopRequestedAt ?? "");
    if (!Number.isNaN(stop) && stop >= Date.parse(this.row.leaseAcquiredAt ?? "")) {
      throw new LeaseLost("a stop was requested (offboarding or purge)");
    }
  }
}

async function getRow<E>(table: TableClient, partitionKey: string, rowKey: string): Promise<Row<E> | undefined> {
  try {
    return (await table.getEntity(partitionKey, rowKey)) as Row<E>;
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
}
