import { odata, type TableClient, type TransactionAction } from "@azure/data-tables";
import type { AlertEntity } from "../collection/alert-store.js";
import type { AppConfig } from "../platform/config.js";
import { isStatus, TABLES } from "../platform/storage.js";
import type { Services } from "../platform/services.js";

/**
 * The durable outbox: at-least-once delivery of every alert version the collector stores.
 *
 * - **Entries.** Every write of an alert (new or changed) upserts an outbox entry
 *   `~o|<alert RowKey>` in the alert's own partition, in the same entity-group transaction
 *   as the alert row, so a crash can never store an alert without recording its delivery.
 *   The entry references the row (`alertId`, `lastUpdateTimeExact`, `bodySha256`) and holds
 *   one pending flag per routed destination (`d_<name>`, `-` written as `_`). Delivery
 *   sends the row's current version, so versions superseded before delivery are coalesced.
 *   A destination clears its flag with an ETag-conditioned merge: if a newer version
 *   replaced the entry meanwhile, the flag stays set and the newer version goes out next.
 *   An entry with no flag left is deleted.
 * - **Markers.** Before its first write, a run marks the tenant in `deliverystate`
 *   (PartitionKey `pending`, RowKey tenant, `pendingSince`). The queue message the run sends
 *   afterwards is only a wake-up: the timer queues delivery for every tenant whose marker is
 *   older than 5 minutes, so a crash between the transaction and the message delays
 *   delivery but never loses it. A delivery run that leaves nothing pending deletes the
 *   marker (ETag-guarded, so a write in the meantime keeps it).
 */

export const OUTBOX_PREFIX = "~o|";
export const PENDING_PARTITION = "pending";
/** A tenant whose oldest undelivered work is older than this is queued again by the timer. */
export const REDELIVER_AFTER_MS = 5 * 60_000;

export function outboxKey(alertRowKey: string): string {
  return `${OUTBOX_PREFIX}${alertRowKey}`;
}

/** The entry's pending-flag column of a destination (names are `[a-z0-9-]`, columns cannot hold `-`). */
export function flagOf(destination: string): string {
  return `d_${destination.replace(/-/g, "_")}`;
}

export interface OutboxEntry {
  partitionKey: string;
  rowKey: string;
  alertId: string;
  lastUpdateTimeExact: string;
  bodySha256: string;
  [flag: `d_${string}`]: boolean;
}

/**
 * The destinations a tenant's alerts go to: the tenant's own list (`destinations` on its
 * row) or, when it has none, every enabled destination; always only enabled ones.
 */
export function routedDestinations(config: AppConfig, tenantDestinations: string | undefined): string[] {
  const enabled = config.destinations.filter((d) => d.enabled).map((d) => d.name);
  const chosen = parseDestinationList(tenantDestinations);
  return chosen ? enabled.filter((name) => chosen.includes(name)) : enabled;
}

/** The tenant row's `destinations` column: a JSON array of names, or absent (= every enabled one). */
export function parseDestinationList(saved: string | undefined): string[] | undefined {
  if (!saved) return undefined;
  try {
    const parsed = JSON.parse(saved) as unknown;
    return Array.isArray(parsed) ? parsed.filter((n): n is string => typeof n === "string") : undefined;
  } catch {
    return undefined;
  }
}

/** The entry written with an alert version: every routed destination pending. */
export function entryFor(
  tenantId: string,
  alert: { alertId: string; rowKey: string; lastUpdateTimeExact: string; sha: string },
  destinations: readonly string[],
  merge = false,
): TransactionAction {
  const entity: AlertEntity = {
    partitionKey: tenantId,
    rowKey: outboxKey(alert.rowKey),
    alertId: alert.alertId,
    lastUpdateTimeExact: alert.lastUpdateTimeExact,
    bodySha256: alert.sha,
  };
  for (const name of destinations) entity[flagOf(name)] = true;
  // Replace: a new version resets the flags to today's routing; Merge (replay) adds to them.
  return ["upsert", entity, merge ? "Merge" : "Replace"];
}

/** Entries still pending for a destination, in RowKey order (a range scan of the outbox rows only). */
export async function* pendingEntries(alerts: TableClient, tenantId: string, destination: string): AsyncGenerator<OutboxEntry & { etag: string }> {
  const filter = `${odata`PartitionKey eq ${tenantId} and RowKey ge ${OUTBOX_PREFIX} and RowKey lt ${"~o}"}`} and ${flagOf(destination)} eq true`;
  for await (const row of alerts.listEntities<OutboxEntry>({ queryOptions: { filter } })) {
    yield row as OutboxEntry & { etag: string };
  }
}

/** Marks a tenant as having work for delivery, keeping the oldest `pendingSince`. */
export async function markPending(svc: Services, tenantId: string): Promise<void> {
  const table = svc.storage.table(TABLES.deliveryState);
  const at = svc.now().toISOString();
  try {
    await table.createEntity({ partitionKey: PENDING_PARTITION, rowKey: tenantId, pendingSince: at, markedAt: at });
  } catch (err) {
    if (!isStatus(err, 409)) throw err;
    // Touch it: the ETag changes, so a delivery run that started before keeps the marker.
    await table.updateEntity({ partitionKey: PENDING_PARTITION, rowKey: tenantId, markedAt: at }, "Merge");
  }
}

export interface PendingMarker {
  tenantId: string;
  pendingSince: string;
  etag: string;
}

export async function getMarker(svc: Services, tenantId: string): Promise<PendingMarker | undefined> {
  try {
    const row = await svc.storage.table(TABLES.deliveryState).getEntity<{ pendingSince: string }>(PENDING_PARTITION, tenantId);
    return { tenantId, pendingSince: row.pendingSince, etag: row.etag };
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
}

/** Removes the marker if nothing touched it since it was read. */
export async function clearMarker(svc: Services, marker: PendingMarker): Promise<boolean> {
  try {
    await svc.storage.table(TABLES.deliveryState).deleteEntity(PENDING_PARTITION, marker.tenantId, { etag: marker.etag });
    return true;
  } catch (err) {
    if (isStatus(err, 404, 412)) return false;
    throw err;
  }
}

/** Markers older than `olderThan`: tenants whose delivery is overdue. */
export async function overdueMarkers(svc: Services, olderThan: Date): Promise<PendingMarker[]> {
  const table = svc.storage.table(TABLES.deliveryState);
  const filter = odata`PartitionKey eq ${PENDING_PARTITION} and pendingSince lt ${olderThan.toISOString()}`;
  const out: PendingMarker[] = [];
  for await (const row of table.listEntities<{ pendingSince: string }>({ queryOptions: { filter } })) {
    out.push({ tenantId: row.rowKey!, pendingSince: row.pendingSince, etag: row.etag });
  }
  return out;
}

/** The oldest marker, for health (the age of the oldest undelivered work). */
export async function oldestMarker(svc: Services): Promise<string | undefined> {
  let oldest: string | undefined;
  const table = svc.storage.table(TABLES.deliveryState);
  const filter = odata`PartitionKey eq ${PENDING_PARTITION}`;
  for await (const row of table.listEntities<{ pendingSince: string }>({ queryOptions: { filter, select: ["pendingSince"] } })) {
    if (!oldest || row.pendingSince < oldest) oldest = row.pendingSince;
  }
  return oldest;
}
