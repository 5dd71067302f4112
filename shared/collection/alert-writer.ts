import { randomUUID } from "node:crypto";
import { odata, type TableClient, type TransactionAction } from "@azure/data-tables";
import pLimit from "p-limit";
import { isStatus } from "../platform/storage.js";
import {
  type AlertEntity,
  type AlertTables,
  COUNT_PREFIX,
  COUNT_TOTAL_KEY,
  type EncodedAlert,
  alertRowKey,
  encodeAlert,
  GARBAGE_PREFIX,
  INLINE_PARTS,
  type IndexEntry,
  MAX_BATCH_ENTITIES,
  indexKey,
  indexRow,
  listIndex,
  PART_BYTES,
  type RawAlert,
  readAlertHead,
  sha256Hex,
  toBatches,
} from "./alert-store.js";
import { entryFor } from "../delivery/outbox.js";
import type { SourceName } from "./source.js";
import { canonicalTime, compareTimes } from "./time.js";

/**
 * Newest-wins writes of one tenant's alerts.
 *
 * - A stored alert is never replaced by a version whose lastUpdateTime is older (compared
 *   at full 100 ns precision).
 * - An equal time with a different body replaces the stored one: the source's current
 *   answer is the best evidence of the latest state. Such writes are counted as
 *   same-time changes.
 * - An identical version is not written at all.
 * - Every write of an alert changes its index row in the same entity-group transaction:
 *   a new alert creates it (and the alert row with "create"), a newer version deletes the
 *   old index row and creates the new one, a same-time change updates it (which fails if
 *   it is gone). So when two writers race, the one whose view is stale fails its whole
 *   transaction, re-reads the alert and decides again: nobody can interleave a check and
 *   a write.
 * - Replaced overflow parts are not deleted at once: the transaction records a `~g` row,
 *   and garbage.ts deletes the parts once OVERFLOW_GC_GRACE_MINUTES have passed.
 */

export interface WriterOptions {
  tenantId: string;
  /** The source of the alerts written (their RowKeys and `source` column). */
  source: SourceName;
  tables: AlertTables;
  /** Transactions in flight at once. */
  concurrency: number;
  /** How long replaced overflow parts stay for readers that are still on the old version. */
  gcGraceMs: number;
  now: () => Date;
  /** Called before every write batch; throws when this writer may no longer write (fencing). */
  fence: () => Promise<void>;
  /**
   * The delivery outbox (shared/delivery/outbox.ts): every version written also records an
   * outbox entry for these destinations, in the same transaction; `beforeFirstWrite` runs
   * once, before the first transaction.
   */
  outbox?: { destinations: readonly string[]; beforeFirstWrite(): Promise<void> };
}

export interface WrittenAlert {
  id: string;
  lastUpdateTime: string;
  /** First time this alert is stored. */
  isNew: boolean;
  sameTime: boolean;
}

export interface WriteResult {
  written: WrittenAlert[];
  /** Alerts whose stored version was identical. */
  unchanged: number;
  /** Alerts whose stored version was newer than the one offered. */
  stale: number;
}

type Plan =
  | { kind: "insert"; alert: RawAlert; time: string }
  | { kind: "replace"; alert: RawAlert; time: string; stored: IndexEntry }
  | { kind: "skip"; reason: "unchanged" | "stale" };

interface Prepared {
  plan: Extract<Plan, { kind: "insert" | "replace" }>;
  /** The index entry of the version written. */
  entry: IndexEntry;
  encoded: EncodedAlert;
  actions: TransactionAction[];
  bytes: number;
  entities: number;
}

const MAX_CONFLICT_ROUNDS = 5;

export class AlertWriter {
  private readonly alerts: TableClient;
  private readonly limit: ReturnType<typeof pLimit>;
  private marked: Promise<void> | undefined;

  constructor(private readonly options: WriterOptions) {
    this.alerts = options.tables.alerts;
    this.limit = pLimit(options.concurrency);
  }

  /**
   * The stored versions of this source's alerts in a window, for callers that compare
   * before fetching bodies (the index holds both sources' rows of the tenant).
   */
  async storedIn(fromMs: number, toMs: number): Promise<Map<string, IndexEntry>> {
    const { source, tenantId } = this.options;
    const entries = (await listIndex(this.alerts, tenantId, fromMs, toMs)).filter((e) => e.rowKey === alertRowKey(source, e.alertId));
    return new Map(entries.map((e) => [e.alertId, e]));
  }

  /**
   * Writes a batch of alerts of one window. `known` holds the index entries already known
   * for the window (from `storedIn`, by alert id); the writer adds what it writes, so later
   * batches of the same window see it. Alerts without a known entry are looked up one by
   * one, unless `assumeAbsent` (nothing of the window can be stored yet).
   */
  async write(alerts: RawAlert[], known: Map<string, IndexEntry>, assumeAbsent = false): Promise<WriteResult> {
    const result: WriteResult = { written: [], unchanged: 0, stale: 0 };
    const unique = new Map<string, RawAlert>();
    for (const alert of alerts) {
      const seen = unique.get(alert.id);
      if (!seen || compareTimes(alert.lastUpdateTime, seen.lastUpdateTime) >= 0) unique.set(alert.id, alert);
    }
    const lookups = await Promise.all(
      [...unique.values()].map(async (alert) => {
        if (known.has(alert.id) || assumeAbsent) return [alert, known.get(alert.id)] as const;
        return [alert, await this.limit(() => readAlertHead(this.alerts, this.options.tenantId, alertRowKey(this.options.source, alert.id)))] as const;
      }),
    );
    let pending: Plan[] = lookups.map(([alert, entry]) => plan(alert, entry));
    for (let round = 0; pending.length > 0; round++) {
      if (round >= MAX_CONFLICT_ROUNDS) throw new Error("Alert writes kept conflicting with another writer");
      const conflicted = await this.apply(pending, result, known);
      // Re-read each alert of a failed transaction and decide again.
      pending = await Promise.all(
        conflicted.map(async (alert) =>
          plan(alert, await this.limit(() => readAlertHead(this.alerts, this.options.tenantId, alertRowKey(this.options.source, alert.id)))),
        ),
      );
    }
    return result;
  }

  /** Writes the plans; returns the alerts of transactions that lost a race. */
  private async apply(plans: Plan[], result: WriteResult, known: Map<string, IndexEntry>): Promise<RawAlert[]> {
    const toWrite: Prepared[] = [];
    for (const p of plans) {
      if (p.kind === "skip") {
        if (p.reason === "unchanged") result.unchanged++;
        else result.stale++;
        continue;
      }
      toWrite.push(this.prepare(p));
    }
    if (toWrite.length === 0) return [];
    // Overflow parts are named by content and written before the rows that point at them.
    const overflow = toWrite.flatMap((p) => p.encoded.overflow).map((row) => ({ row, bytes: OVERFLOW_ROW_BYTES }));
    await Promise.all(
      toBatches(overflow).map((batch) =>
        this.limit(async () => {
          await this.options.fence();
          await this.options.tables.bodies.submitTransaction(batch.map(({ row }) => ["upsert", row, "Replace"]));
        }),
      ),
    );
    const conflicted: RawAlert[] = [];
    await Promise.all(
      // One entity of each transaction is kept for the count row.
      toBatches(toWrite, MAX_BATCH_ENTITIES - 1).map((batch) =>
        this.limit(async () => {
          const inserts = batch.filter((p) => p.plan.kind === "insert").length;
          const actions = batch.flatMap((p) => p.actions);
          if (inserts > 0) actions.push(["create", countRow(this.options.tenantId, inserts)]);
          await this.options.fence();
          if (this.options.outbox) {
            this.marked ??= this.options.outbox.beforeFirstWrite();
            await this.marked;
          }
          try {
            await this.alerts.submitTransaction(actions);
          } catch (err) {
            if (!isStatus(err, 404, 409, 412)) throw err;
            conflicted.push(...batch.map((p) => p.plan.alert));
            return;
          }
          for (const p of batch) {
            known.set(p.plan.alert.id, p.entry);
            const sameTime = p.plan.kind === "replace" && p.plan.stored.time === p.plan.time;
            result.written.push({
              id: p.plan.alert.id,
              lastUpdateTime: p.plan.alert.lastUpdateTime,
              isNew: p.plan.kind === "insert",
              sameTime,
            });
          }
        }),
      ),
    );
    return conflicted;
  }

  private prepare(p: Extract<Plan, { kind: "insert" | "replace" }>): Prepared {
    const { tenantId } = this.options;
    const encoded = encodeAlert(tenantId, p.alert, this.options.source);
    const row = encoded.row;
    const entry: IndexEntry = {
      alertId: p.alert.id,
      rowKey: row.rowKey,
      time: p.time,
      sha: encoded.sha,
      ...(row.bodyKey ? { bodyKey: String(row.bodyKey), bodyOverflow: Number(row.bodyOverflow) } : {}),
    };
    const actions: TransactionAction[] = [];
    if (p.kind === "insert") {
      actions.push(["create", indexRow(tenantId, entry)], ["create", row]);
    } else {
      const stored = p.stored;
      if (stored.time === p.time) {
        // Fails if the index row is gone, i.e. another writer stored another time meanwhile.
        actions.push(["update", indexRow(tenantId, entry), "Replace"]);
      } else {
        // Fails if the old index row is gone, i.e. another writer replaced that version.
        actions.push(["delete", { partitionKey: tenantId, rowKey: indexKey(stored.time, stored.rowKey) }]);
        actions.push(["create", indexRow(tenantId, entry)]);
      }
      actions.push(["upsert", row, "Replace"]);
      if (stored.bodyKey && stored.bodyKey !== entry.bodyKey) {
        actions.push(["upsert", this.garbageRow(stored), "Replace"]);
      }
    }
    const outbox = this.options.outbox;
    if (outbox && outbox.destinations.length > 0) {
      actions.push(entryFor(tenantId, { ...entry, lastUpdateTimeExact: p.alert.lastUpdateTime }, outbox.destinations));
    }
    return { plan: p, entry, encoded, actions, bytes: encoded.bytes + 1024 * actions.length, entities: actions.length };
  }

  private garbageRow(replaced: IndexEntry): AlertEntity {
    const notBefore = new Date(this.options.now().getTime() + this.options.gcGraceMs).toISOString();
    return {
      partitionKey: this.options.tenantId,
      rowKey: `${GARBAGE_PREFIX}${notBefore}|${replaced.rowKey}|${replaced.bodyKey}`,
      alertRowKey: replaced.rowKey,
      bodyKey: replaced.bodyKey ?? "",
      parts: replaced.bodyOverflow ?? 0,
    };
  }
}

/** Overflow rows hold up to INLINE_PARTS full parts, base64 on the wire. */
const OVERFLOW_ROW_BYTES = Math.ceil((INLINE_PARTS * PART_BYTES * 4) / 3) + 1024;

function plan(alert: RawAlert, stored: IndexEntry | undefined): Plan {
  const time = canonicalTime(alert.lastUpdateTime);
  if (!time) throw new Error("An alert has an unreadable lastUpdateTime");
  if (!stored) return { kind: "insert", alert, time };
  // Canonical times are fixed-width, so text order is time order at full precision.
  if (time < stored.time) return { kind: "skip", reason: "stale" };
  if (time === stored.time && sha256Hex(alert.json) === stored.sha) return { kind: "skip", reason: "unchanged" };
  return { kind: "replace", alert, time, stored };
}

/** A `~n` count row: `n` alerts more (or, negative, fewer) for the tenant; foldAlertCount folds it into `~c`. */
export function countRow(tenantId: string, inserted: number): AlertEntity {
  return { partitionKey: tenantId, rowKey: `${COUNT_PREFIX}${randomUUID()}`, n: inserted };
}

/**
 * The exact number of alerts stored for a tenant: `~c` plus the `~n` rows not folded yet.
 * Folding moves the `~n` rows into `~c` in one transaction (ETag-guarded), so a crash at
 * any point neither loses nor double-counts an insert.
 */
export async function foldAlertCount(alerts: TableClient, tenantId: string): Promise<number> {
  for (let attempt = 0; attempt < 5; attempt++) {
    let total: { value: number; etag?: string } = { value: 0 };
    try {
      const row = await alerts.getEntity<{ total?: number }>(tenantId, COUNT_TOTAL_KEY);
      total = { value: Number(row.total ?? 0), etag: row.etag };
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
    const filter = odata`PartitionKey eq ${tenantId} and RowKey ge ${COUNT_PREFIX} and RowKey lt ${"~n}"}`;
    const pending: { rowKey: string; n: number }[] = [];
    for await (const row of alerts.listEntities<{ n?: number }>({ queryOptions: { filter } })) {
      pending.push({ rowKey: row.rowKey!, n: Number(row.n ?? 0) });
      if (pending.length >= 98) break;
    }
    if (pending.length === 0) return total.value;
    const sum = total.value + pending.reduce((s, p) => s + p.n, 0);
    const totalRow = { partitionKey: tenantId, rowKey: COUNT_TOTAL_KEY, total: sum };
    const actions: TransactionAction[] = pending.map((p) => ["delete", { partitionKey: tenantId, rowKey: p.rowKey }]);
    actions.push(total.etag ? ["update", totalRow, "Replace", { etag: total.etag }] : ["create", totalRow]);
    try {
      await alerts.submitTransaction(actions);
    } catch (err) {
      if (!isStatus(err, 404, 409, 412)) throw err;
      continue; // another fold won; read again
    }
    if (pending.length < 98) return sum;
    attempt = -1; // more to fold
  }
  throw new Error("The alert count kept changing while it was folded");
}
