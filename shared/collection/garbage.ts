import { odata } from "@azure/data-tables";
import { isStatus } from "../platform/storage.js";
import { type AlertTables, GARBAGE_PREFIX, overflowKey, readAlertHead } from "./alert-store.js";

/**
 * Overflow parts of replaced big alerts. A writer never deletes parts at once: it records
 * a `~g` row (in the same transaction as the replacement) naming the parts of the version
 * it replaced, and they are deleted only after the grace period, so a reader that is
 * still on the old version finishes. Parts are named by content, so a version can come
 * back (A -> B -> A); a part is therefore deleted only if the alert row no longer points
 * at it. The sweep also collects orphans that no `~g` row names (a crash between writing
 * the parts and the row, or data from older versions of the app).
 */

export interface GarbageResult {
  partsDeleted: number;
}

/** Deletes the parts named by `~g` rows whose grace period has passed. */
export async function collectDueGarbage(tables: AlertTables, tenantId: string, now: Date, limit = 200): Promise<GarbageResult> {
  const filter = odata`PartitionKey eq ${tenantId} and RowKey ge ${GARBAGE_PREFIX} and RowKey lt ${`${GARBAGE_PREFIX}${now.toISOString()}`}`;
  let partsDeleted = 0;
  let seen = 0;
  for await (const row of tables.alerts.listEntities<{ alertRowKey: string; bodyKey: string; parts: number }>({
    queryOptions: { filter },
  })) {
    if (++seen > limit) break;
    partsDeleted += await deleteUnreferencedParts(tables, tenantId, row.alertRowKey, row.bodyKey, Number(row.parts));
    await deleteQuietly(() => tables.alerts.deleteEntity(tenantId, row.rowKey!));
  }
  return { partsDeleted };
}

/**
 * Deletes overflow parts that no alert row points at and that are older than the grace
 * period. Scans only the tenant's `alertbodies` partition, which holds big alerts alone.
 */
export async function collectOrphans(tables: AlertTables, tenantId: string, now: Date, graceMs: number): Promise<GarbageResult> {
  const groups = new Map<string, { alertRowKey: string; bodyKey: string; parts: number; newest: number }>();
  const filter = odata`PartitionKey eq ${tenantId}`;
  for await (const row of tables.bodies.listEntities({ queryOptions: { filter, select: ["RowKey", "Timestamp"] } })) {
    // `<alert RowKey>|<bodyKey>|<index>`, where a graph alert's RowKey holds a `|` itself.
    const parts = String(row.rowKey).split("|");
    const index = parts.pop();
    const bodyKey = parts.pop();
    const alertRowKey = parts.join("|");
    if (!alertRowKey || !bodyKey || index === undefined) continue;
    const key = `${alertRowKey}|${bodyKey}`;
    const at = Date.parse(String(row.timestamp ?? ""));
    const group = groups.get(key) ?? { alertRowKey, bodyKey, parts: 0, newest: 0 };
    group.parts = Math.max(group.parts, Number(index) + 1);
    group.newest = Math.max(group.newest, Number.isNaN(at) ? now.getTime() : at);
    groups.set(key, group);
  }
  let partsDeleted = 0;
  for (const group of groups.values()) {
    if (now.getTime() - group.newest < graceMs) continue;
    partsDeleted += await deleteUnreferencedParts(tables, tenantId, group.alertRowKey, group.bodyKey, group.parts);
  }
  return { partsDeleted };
}

async function deleteUnreferencedParts(
  tables: AlertTables,
  tenantId: string,
  alertRowKey: string,
  bodyKey: string,
  parts: number,
): Promise<number> {
  const current = await readAlertHead(tables.alerts, tenantId, alertRowKey);
  if (current?.bodyKey === bodyKey) return 0;
  let deleted = 0;
  for (let i = 0; i < parts; i++) {
    if (await deleteQuietly(() => tables.bodies.deleteEntity(tenantId, overflowKey(alertRowKey, bodyKey, i)))) deleted++;
  }
  return deleted;
}

async function deleteQuietly(run: () => Promise<unknown>): Promise<boolean> {
  try {
    await run();
    return true;
  } catch (err) {
    if (isStatus(err, 404)) return false;
    throw err;
  }
}
