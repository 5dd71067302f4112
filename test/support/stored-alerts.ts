import { odata, TableClient } from "@azure/data-tables";
import pLimit from "p-limit";
import { encodeAlert, type RawAlert, toBatches } from "../../shared/collection/alert-store.js";
import { AlertWriter, foldAlertCount } from "../../shared/collection/alert-writer.js";
import { services } from "../../shared/platform/services.js";
import { TABLES } from "../../shared/platform/storage.js";
import type { DefenderAlert } from "../../simulators/alerts.js";

/**
 * Stores alerts for a tenant the way a pull does (the engine's AlertWriter: rows, index,
 * overflow parts, count rows, and with `outbox` delivery outbox entries), without a pull, so
 * a test can store alerts of any age.
 */
export async function storeAlerts(tenantId: string, alerts: DefenderAlert[], options: { fresh?: boolean; outbox?: string[] } = {}): Promise<void> {
  const svc = await services();
  const writer = new AlertWriter({
    tenantId,
    source: "defender",
    tables: { alerts: svc.storage.table(TABLES.alerts), bodies: svc.storage.table(TABLES.alertBodies) },
    concurrency: 4,
    gcGraceMs: svc.config.pull.overflowGcGraceMs,
    now: svc.now,
    fence: async () => {},
    // `outbox`: each version also gets a delivery outbox entry for these destinations, as with DESTINATIONS__* set.
    ...(options.outbox ? { outbox: { destinations: options.outbox, beforeFirstWrite: async () => {} } } : {}),
  });
  const raw: RawAlert[] = alerts.map((alert) => ({
    json: JSON.stringify(alert),
    id: alert.id,
    lastUpdateTime: alert.lastUpdateTime,
    fields: alert as unknown as Record<string, unknown>,
  }));
  // `fresh`: none of these alerts is stored yet (distinct ids), so the writer needs no lookups.
  for (let i = 0; i < raw.length; i += 500) await writer.write(raw.slice(i, i + 500), new Map(), options.fresh === true);
  await foldAlertCount(svc.storage.table(TABLES.alerts), tenantId);
}

/**
 * Alert rows only (and their overflow parts), as encodeAlert lays them out, without the time
 * index or counts: the fastest way to fill a partition for tests of readers (the export).
 */
export async function storeAlertRows(tenantId: string, alerts: DefenderAlert[]): Promise<void> {
  const svc = await services();
  const encoded = alerts.map((alert) =>
    encodeAlert(tenantId, { json: JSON.stringify(alert), id: alert.id, lastUpdateTime: alert.lastUpdateTime, fields: alert as unknown as Record<string, unknown> }),
  );
  const limit = pLimit(8);
  const bodies = svc.storage.table(TABLES.alertBodies);
  const rows = svc.storage.table(TABLES.alerts);
  await Promise.all(encoded.flatMap((e) => e.overflow).map((row) => limit(() => bodies.upsertEntity(row, "Replace"))));
  await Promise.all(
    toBatches(encoded).map((batch) => limit(() => rows.submitTransaction(batch.map((e) => ["upsert", e.row, "Replace"])))),
  );
}

/** Every row of one partition of a table: RowKey -> row. */
export async function partition(connectionString: string, table: string, partitionKey: string): Promise<Map<string, Record<string, unknown>>> {
  const client = TableClient.fromConnectionString(connectionString, table, { allowInsecureConnection: true });
  const rows = new Map<string, Record<string, unknown>>();
  for await (const row of client.listEntities({ queryOptions: { filter: odata`PartitionKey eq ${partitionKey}` } })) {
    rows.set(row.rowKey!, row as Record<string, unknown>);
  }
  return rows;
}

/** Every row of a table. */
export async function allRows(connectionString: string, table: string): Promise<Record<string, unknown>[]> {
  const client = TableClient.fromConnectionString(connectionString, table, { allowInsecureConnection: true });
  const rows: Record<string, unknown>[] = [];
  try {
    for await (const row of client.listEntities()) rows.push(row as Record<string, unknown>);
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode !== 404) throw err;
  }
  return rows;
}
