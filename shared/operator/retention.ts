import { odata, type TableClient, type TransactionAction } from "@azure/data-tables";
import { type AlertTables, GARBAGE_PREFIX, INDEX_PREFIX, indexBound } from "../collection/alert-store.js";
import { countRow, foldAlertCount } from "../collection/alert-writer.js";
import { collectDueGarbage } from "../collection/garbage.js";
import { OUTBOX_PREFIX } from "../delivery/outbox.js";
import { listTenants } from "../onboarding/tenants.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES } from "../platform/storage.js";
import { purgeOldAudit } from "./audit.js";
import { PURGE_PARTITION } from "./purge.js";

/**
 * Retention (the daily `lifecycle-timer`): every tenant's alerts whose lastUpdateTime is older
 * than ALERT_RETENTION_DAYS are deleted with their index rows and overflow parts; audit
 * entries and purge records older than AUDIT_RETENTION_DAYS go too.
 *
 * - The expired alerts are found through the time index: one key-range query per tenant
 *   (`~i|` up to the cutoff), never a scan of the partition.
 * - Each transaction deletes up to 33 alerts: the index row, the alert row, a `~g` row that
 *   names the alert's overflow parts (due at once; the parts are then deleted the way the
 *   collector deletes replaced parts, see garbage.ts), and one `~n` row of minus their number,
 *   so the exact count never drifts. The tenant's count is then folded and `alertsStored` on
 *   the sync state of the tenant's source updated.
 * - A deleted alert's delivery outbox entry (`~o|<alert RowKey>`, shared/delivery/outbox.ts),
 *   if it still waits for a destination, is deleted after its alert: there is nothing left
 *   to deliver. (The delivery worker would also drop it, but only while a destination runs.)
 * - A writer that stores a newer version of an alert meanwhile moves its index row, so the
 *   transaction that would delete it fails as a whole and is re-planned; newer versions are
 *   outside the range and stay.
 * - Bounded per run (RETENTION_MAX_ALERTS_PER_RUN, and a time limit), shared fairly between
 *   tenants; what is left is deleted by the next run, which starts again at the oldest.
 */

/** Per transaction: 33 alerts x (index + row + garbage) + one count row = 100 entities. */
const ALERTS_PER_BATCH = 33;
/** A run stops after this long, well inside the function timeout. */
const RUN_MS = 8 * 60_000;

export interface RetentionReport {
  tenants: number;
  alertsDeleted: number;
  partsDeleted: number;
  /** Outbox entries of deleted alerts that were still waiting for delivery. */
  deliveryEntriesDeleted: number;
  auditDeleted: number;
  purgeRecordsDeleted: number;
  /** False when the run stopped at its bound with expired alerts left. */
  complete: boolean;
}

export interface RetentionOptions {
  maxAlerts?: number;
}

interface IndexRowView {
  rowKey: string;
  alertRowKey: string;
  bodyKey?: string;
  parts: number;
}

export async function applyRetention(svc: Services, log: Logger, options: RetentionOptions = {}): Promise<RetentionReport> {
  const started = svc.now();
  const cutoff = started.getTime() - svc.config.lifecycle.alertRetentionMs;
  const deadline = started.getTime() + RUN_MS;
  const tables: AlertTables = { alerts: svc.storage.table(TABLES.alerts), bodies: svc.storage.table(TABLES.alertBodies) };
  const rows = await listTenants(svc.storage.table(TABLES.tenants));
  const tenants = rows.map((row) => row.rowKey);
  const sourceOf = new Map(rows.map((row) => [row.rowKey, row.source ?? svc.config.defaultSource]));
  const report: RetentionReport = {
    tenants: tenants.length,
    alertsDeleted: 0,
    partsDeleted: 0,
    deliveryEntriesDeleted: 0,
    auditDeleted: 0,
    purgeRecordsDeleted: 0,
    complete: true,
  };
  let budget = options.maxAlerts ?? svc.config.lifecycle.retentionMaxAlertsPerRun;
  const share = Math.max(ALERTS_PER_BATCH, Math.ceil(budget / Math.max(1, tenants.length)));
  const unfinished = new Set<string>();
  // First every tenant gets its share; what is left of the budget goes to those with more to delete.
  for (const pass of [0, 1]) {
    for (const tenantId of pass === 0 ? tenants : [...unfinished]) {
      const limit = pass === 0 ? Math.min(share, budget) : budget;
      if (limit <= 0 || svc.now().getTime() >= deadline) {
        unfinished.add(tenantId);
        continue;
      }
      const result = await expireTenant(svc, tables, tenantId, sourceOf.get(tenantId) ?? "defender", cutoff, limit, deadline);
      budget -= result.deleted;
      report.alertsDeleted += result.deleted;
      report.partsDeleted += result.parts;
      report.deliveryEntriesDeleted += result.outbox;
      if (result.more) unfinished.add(tenantId);
      else unfinished.delete(tenantId);
      if (result.deleted > 0) {
        log.info(`retention.tenant tenantId=${tenantId} alerts=${result.deleted} parts=${result.parts} outbox=${result.outbox} more=${result.more}`);
      }
    }
  }
  report.complete = unfinished.size === 0;
  const auditRetention = svc.config.lifecycle.auditRetentionMs;
  report.auditDeleted = await purgeOldAudit(svc.storage.table(TABLES.audit), started, auditRetention);
  report.purgeRecordsDeleted = await purgeOldPurgeRecords(svc.storage.table(TABLES.audit), started, auditRetention);
  log.info(
    `retention.done alerts=${report.alertsDeleted} parts=${report.partsDeleted} outbox=${report.deliveryEntriesDeleted} audit=${report.auditDeleted} purges=${report.purgeRecordsDeleted} complete=${report.complete}`,
  );
  return report;
}

async function expireTenant(
  svc: Services,
  tables: AlertTables,
  tenantId: string,
  source: string,
  cutoff: number,
  limit: number,
  deadline: number,
): Promise<{ deleted: number; parts: number; outbox: number; more: boolean }> {
  let deleted = 0;
  let garbage = 0;
  const deletedKeys = new Set<string>();
  let more = false;
  for (;;) {
    if (deleted >= limit || svc.now().getTime() >= deadline) {
      more = (await expiredIndexRows(tables.alerts, tenantId, cutoff, 1)).length > 0;
      break;
    }
    const rows = await expiredIndexRows(tables.alerts, tenantId, cutoff, Math.min(ALERTS_PER_BATCH, limit - deleted));
    if (rows.length === 0) break;
    const result = await deleteBatch(tables.alerts, tenantId, rows, svc.now());
    deleted += result.deleted;
    garbage += result.garbage;
    for (const key of result.keys) deletedKeys.add(key);
  }
  let parts = 0;
  let outbox = 0;
  if (deleted > 0) {
    outbox = await deleteOutboxEntries(tables.alerts, tenantId, deletedKeys);
    // The parts named by the `~g` rows just written (due at once), 200 rows per call.
    for (let i = 0; i <= Math.ceil(garbage / 200); i++) parts += (await collectDueGarbage(tables, tenantId, svc.now())).partsDeleted;
    const total = await foldAlertCount(tables.alerts, tenantId);
    await setAlertsStored(svc.storage.table(TABLES.syncState), tenantId, source, total);
  }
  return { deleted, parts, outbox, more };
}

/** The outbox entries of `alertRowKeys` still waiting for delivery: one key-range query over the (small) outbox. */
async function deleteOutboxEntries(alerts: TableClient, tenantId: string, alertRowKeys: Set<string>): Promise<number> {
  const filter = odata`PartitionKey eq ${tenantId} and RowKey ge ${OUTBOX_PREFIX} and RowKey lt ${"~o}"}`;
  let deleted = 0;
  for await (const row of alerts.listEntities({ queryOptions: { filter, select: ["RowKey"] } })) {
    if (!alertRowKeys.has(row.rowKey!.slice(OUTBOX_PREFIX.length))) continue;
    try {
      await alerts.deleteEntity(tenantId, row.rowKey!);
      deleted++;
    } catch (err) {
      if (!isStatus(err, 404)) throw err; // delivered meanwhile
    }
  }
  return deleted;
}

/** Up to `n` index rows of alerts whose lastUpdateTime is before the cutoff: one key-range query. */
async function expiredIndexRows(alerts: TableClient, tenantId: string, cutoff: number, n: number): Promise<IndexRowView[]> {
  const filter = odata`PartitionKey eq ${tenantId} and RowKey ge ${INDEX_PREFIX} and RowKey lt ${indexBound(cutoff)}`;
  const pages = alerts
    .listEntities<{ bodyKey?: string; bodyOverflow?: number }>({ queryOptions: { filter, select: ["RowKey", "bodyKey", "bodyOverflow"] } })
    .byPage({ maxPageSize: n });
  for await (const page of pages) {
    if (page.length === 0) continue;
    return page.slice(0, n).flatMap((row) => {
      const rest = row.rowKey!.slice(INDEX_PREFIX.length);
      const bar = rest.indexOf("|");
      if (bar < 0) return [];
      return [{ rowKey: row.rowKey!, alertRowKey: rest.slice(bar + 1), ...(row.bodyKey ? { bodyKey: row.bodyKey } : {}), parts: Number(row.bodyOverflow ?? 0) }];
    });
  }
  return [];
}

function actionsFor(tenantId: string, row: IndexRowView, now: Date): TransactionAction[] {
  const actions: TransactionAction[] = [
    ["delete", { partitionKey: tenantId, rowKey: row.rowKey }],
    ["delete", { partitionKey: tenantId, rowKey: row.alertRowKey }],
  ];
  if (row.bodyKey) {
    // Due at once: no reader can be on a version that no longer has a row to read.
    const notBefore = new Date(now.getTime() - 1).toISOString();
    actions.push([
      "upsert",
      {
        partitionKey: tenantId,
        rowKey: `${GARBAGE_PREFIX}${notBefore}|${row.alertRowKey}|${row.bodyKey}`,
        alertRowKey: row.alertRowKey,
        bodyKey: row.bodyKey,
        parts: row.parts,
      },
      "Replace",
    ]);
  }
  return actions;
}

async function deleteBatch(
  alerts: TableClient,
  tenantId: string,
  rows: IndexRowView[],
  now: Date,
): Promise<{ deleted: number; garbage: number; keys: string[] }> {
  const garbageOf = (list: IndexRowView[]) => list.filter((r) => r.bodyKey).length;
  try {
    await alerts.submitTransaction([...rows.flatMap((row) => actionsFor(tenantId, row, now)), ["create", countRow(tenantId, -rows.length)]]);
    return { deleted: rows.length, garbage: garbageOf(rows), keys: rows.map((r) => r.alertRowKey) };
  } catch (err) {
    if (!isStatus(err, 404, 409)) throw err;
  }
  // A writer moved one of them meanwhile (or a row is missing): one alert at a time.
  let deleted = 0;
  let garbage = 0;
  const keys: string[] = [];
  for (const row of rows) {
    try {
      await alerts.submitTransaction([...actionsFor(tenantId, row, now), ["create", countRow(tenantId, -1)]]);
      deleted++;
      garbage += garbageOf([row]);
      keys.push(row.alertRowKey);
      continue;
    } catch (err) {
      if (!isStatus(err, 404, 409)) throw err;
    }
    // The index row without its alert row (never written so; repaired here), or the index row is gone.
    try {
      await alerts.submitTransaction([["delete", { partitionKey: tenantId, rowKey: row.rowKey }], ["create", countRow(tenantId, -1)]]);
      deleted++;
      keys.push(row.alertRowKey);
    } catch (err) {
      if (!isStatus(err, 404, 409)) throw err;
    }
  }
  return { deleted, garbage, keys };
}

async function setAlertsStored(sync: TableClient, tenantId: string, source: string, total: number): Promise<void> {
  try {
    await sync.updateEntity({ partitionKey: tenantId, rowKey: source, alertsStored: total }, "Merge");
  } catch (err) {
    if (!isStatus(err, 404)) throw err; // never pulled: nothing shows a count
  }
}

/** Purge records follow the audit trail's retention (they say what was deleted, and when). */
async function purgeOldPurgeRecords(audit: TableClient, now: Date, retentionMs: number): Promise<number> {
  const cutoff = new Date(now.getTime() - retentionMs).toISOString();
  const filter = odata`PartitionKey eq ${PURGE_PARTITION} and state eq ${"done"} and completedAt lt ${cutoff}`;
  let deleted = 0;
  for await (const row of audit.listEntities({ queryOptions: { filter, select: ["PartitionKey", "RowKey"] } })) {
    try {
      await audit.deleteEntity(row.partitionKey!, row.rowKey!);
      deleted++;
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
  }
  return deleted;
}
