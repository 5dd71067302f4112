import { randomBytes } from "node:crypto";
import { odata, type TableClient, type TransactionAction } from "@azure/data-tables";
import { ALERT_ROWS_ONLY } from "../collection/alert-store.js";
import { countRow } from "../collection/alert-writer.js";
import { leaseTiming } from "../collection/lease-timing.js";
import { requestStop } from "../collection/sync-state.js";
import { offboardTenant } from "../onboarding/offboard.js";
import { getTenant, TENANT_PARTITION } from "../onboarding/tenants.js";
import { ApiError, isGuid } from "../platform/http.js";
import { encodeQueueMessage, queueMessageFields } from "../platform/queue-message.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES, type TableName } from "../platform/storage.js";

/**
 * Purge on exit: `DELETE /api/tenants/{id}?purge=true` offboards the tenant (the refresh
 * token is soft-deleted), marks the tenant row with a purge ID (registration refuses the
 * tenant until the purge is done), asks every running pull of the tenant to stop at its next
 * checkpoint (`stopRequestedAt` on its sync-state rows), records the purge in the audit
 * table (partition `purge`) and queues a message on `tenant-purges`. The queue-driven job then:
 *
 *   1. waits (re-queues itself with a delay) while any pull still holds one of the tenant's
 *      leases: a holder stops at its next checkpoint, or its lease runs out; a pull whose
 *      lease has run out cannot write (it checks the lease before every write batch);
 *   2. deletes, in bounded runs that resume where the data ends, every row of the tenant in
 *      every app table (PURGE_PLAN): its `alerts` partition (alert rows first, each batch
 *      with a negative `~n` count row so that `alertsStored` stays exact, then the time index,
 *      garbage, count and delivery outbox rows), its `alertbodies` partition, its consent
 *      states, its rows in `deliverystate`, its `syncstate` partition, and finally its
 *      tenant row;
 *   3. reports counts and progress on its record (`GET /api/tenants/{id}/purge`).
 *
 * What stays: the audit trail (`audit`, with the purge's record), the soft-deleted Key
 * Vault secret (until its retention ends; purge protection forbids purging it) and log lines
 * (until the workspace's retention ends). docs/operator.md says so.
 */

/** How the purge treats each app table. A table added without a decision does not compile. */
export type PurgeTablePlan = "alerts-partition" | "tenant-partition" | "consent-states" | "delivery-rows" | "tenant-row" | "keep";

export const PURGE_PLAN: Record<TableName, PurgeTablePlan> = {
  alerts: "alerts-partition",
  alertbodies: "tenant-partition",
  consentstates: "consent-states",
  syncstate: "tenant-partition",
  tenants: "tenant-row",
  // The tenant's delivery marker, its per-destination state and parked entries, replays of it.
  deliverystate: "delivery-rows",
  // App-wide state: no tenant's data.
  appstate: "keep",
  // Who did what stays, and the record of the purge with it (partition `purge`).
  audit: "keep",
};

/** The order of deletion; the tenant row goes last. */
const ORDER: TableName[] = (Object.keys(PURGE_PLAN) as TableName[])
  .filter((t) => PURGE_PLAN[t] !== "keep" && PURGE_PLAN[t] !== "tenant-row")
  .sort((a, b) => rank(a) - rank(b));

function rank(table: TableName): number {
  // Alert data first, the sync state (with its stop request) after it.
  return table === TABLES.alerts ? 0 : table === TABLES.syncState ? 2 : 1;
}

export type PurgeState = "waiting" | "deleting" | "done";

/** Purge records live in the audit table: they are the trail of what was deleted, and follow its retention. */
export const PURGE_PARTITION = "purge";

interface PurgeEntity {
  partitionKey: string;
  /** `<tenantId>|<purgeId>`: a tenant's purges, newest first (purge IDs start with an inverted time). */
  rowKey: string;
  tenantId: string;
  purgeId: string;
  state: PurgeState;
  requestedAt: string;
  requestedBy: string;
  startedAt?: string;
  completedAt?: string;
  /** JSON Record<table, rows deleted>. */
  deleted?: string;
  alertsDeleted?: number;
  /** What the job waits for, while waiting. */
  waitingFor?: string;
  runs?: number;
  lastRunAt?: string;
  /** The job's own lease, so that two messages of one purge never run at once. */
  runUntil?: string;
}

export interface PurgeStatus {
  purgeId: string;
  tenantId: string;
  state: PurgeState;
  requestedAt: string;
  requestedBy: string;
  startedAt?: string;
  completedAt?: string;
  waitingFor?: string;
  runs: number;
  /** Rows deleted so far, per table; `alerts` counts alerts, `alertsBookkeeping` the index, garbage and count rows. */
  deleted: Record<string, number>;
  alertsDeleted: number;
}

export interface PurgeMessage {
  tenantId: string;
  purgeId: string;
}

const MAX_MS = 9_999_999_999_999;
/** A run stops after this many deleted rows and queues the next one. */
export const PURGE_ROWS_PER_RUN = 20_000;
/** ... or after this long, well inside the function timeout. */
const PURGE_RUN_MS = 4 * 60_000;
const MAX_VISIBILITY_S = 7 * 24 * 3600;

export function parsePurgeMessage(raw: unknown): PurgeMessage | undefined {
  const { tenantId, purgeId } = queueMessageFields(raw);
  if (!isGuid(tenantId) || typeof purgeId !== "string" || !/^\d{13}-[0-9a-f]{12}$/.test(purgeId)) return undefined;
  return { tenantId: tenantId.toLowerCase(), purgeId };
}

async function enqueue(svc: Services, message: PurgeMessage, delayMs = 0): Promise<void> {
  const visibilityTimeout = Math.min(MAX_VISIBILITY_S, Math.max(0, Math.ceil(delayMs / 1000)));
  await svc.storage.purgeQueue.sendMessage(encodeQueueMessage(message), visibilityTimeout > 0 ? { visibilityTimeout } : {});
}

function toStatus(row: PurgeEntity): PurgeStatus {
  let deleted: Record<string, number> = {};
  try {
    deleted = JSON.parse(row.deleted ?? "{}") as Record<string, number>;
  } catch {
    // unreadable counts show as none
  }
  const status: PurgeStatus = {
    purgeId: row.purgeId,
    tenantId: row.tenantId,
    state: row.state,
    requestedAt: row.requestedAt,
    requestedBy: row.requestedBy,
    runs: row.runs ?? 0,
    deleted,
    alertsDeleted: row.alertsDeleted ?? 0,
  };
  if (row.startedAt) status.startedAt = row.startedAt;
  if (row.completedAt) status.completedAt = row.completedAt;
  if (row.waitingFor && row.state === "waiting") status.waitingFor = row.waitingFor;
  return status;
}

/** The lease rows of a tenant's sync state (one per source; `<source>:sweep` rows hold no lease). */
async function syncLeaseRows(sync: TableClient, tenantId: string): Promise<{ rowKey: string; leaseId?: string; leaseUntil?: string }[]> {
  const rows: { rowKey: string; leaseId?: string; leaseUntil?: string }[] = [];
  const filter = odata`PartitionKey eq ${tenantId}`;
  for await (const row of sync.listEntities<{ leaseId?: string; leaseUntil?: string }>({
    queryOptions: { filter, select: ["RowKey", "leaseId", "leaseUntil"] },
  })) {
    if (!row.rowKey!.includes(":")) rows.push({ rowKey: row.rowKey!, leaseId: row.leaseId, leaseUntil: row.leaseUntil });
  }
  return rows;
}

/**
 * DELETE /api/tenants/{id}?purge=true. Idempotent: asking again while a purge runs answers
 * its ID (and queues it again, in case the first message was lost).
 */
export async function requestPurge(svc: Services, tenantId: string, requestedBy: string, log: Logger): Promise<PurgeStatus> {
  const tenants = svc.storage.table(TABLES.tenants);
  const purges = svc.storage.table(TABLES.audit);
  const row = await getTenant(tenants, tenantId);
  if (!row) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
  const now = svc.now();
  let purgeId = row.purgeId;
  let existing: PurgeEntity | undefined;
  if (purgeId) existing = await getPurgeRow(purges, tenantId, purgeId);
  if (!purgeId || !existing) {
    purgeId ??= `${String(MAX_MS - now.getTime()).padStart(13, "0")}-${randomBytes(6).toString("hex")}`;
    existing = {
      partitionKey: PURGE_PARTITION,
      rowKey: `${tenantId}|${purgeId}`,
      tenantId,
      purgeId,
      state: "waiting",
      requestedAt: now.toISOString(),
      requestedBy,
      waitingFor: "start",
      deleted: "{}",
      alertsDeleted: 0,
      runs: 0,
    };
    await purges.upsertEntity(existing, "Replace");
  }
  if (!row.purgeId) {
    // Offboards (status, generation, link, refresh token, stop request) and marks the row in one write.
    const found = await offboardTenant(svc, tenantId, log, { purgeId });
    if (!found) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
  }
  const sync = svc.storage.table(TABLES.syncState);
  const sources = new Set(["defender", ...(await syncLeaseRows(sync, tenantId)).map((r) => r.rowKey)]);
  for (const source of sources) await requestStop(sync, tenantId, source, now);
  await enqueue(svc, { tenantId, purgeId });
  log.info(`purge.requested tenantId=${tenantId} purgeId=${purgeId}`);
  return toStatus(existing);
}

async function getPurgeRow(purges: TableClient, tenantId: string, purgeId: string): Promise<(PurgeEntity & { etag: string }) | undefined> {
  try {
    return (await purges.getEntity<PurgeEntity>(PURGE_PARTITION, `${tenantId}|${purgeId}`)) as PurgeEntity & { etag: string };
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
}

/** GET /api/tenants/{id}/purge: the tenant's latest purge, or 404. */
export async function latestPurge(svc: Services, tenantId: string): Promise<PurgeStatus> {
  const purges = svc.storage.table(TABLES.audit);
  const filter = odata`PartitionKey eq ${PURGE_PARTITION} and RowKey gt ${`${tenantId}|`} and RowKey lt ${`${tenantId}}`}`;
  // Purge IDs start with an inverted time: the first row is the newest.
  for await (const page of purges.listEntities<PurgeEntity>({ queryOptions: { filter } }).byPage({ maxPageSize: 1 })) {
    const row = page[0];
    if (row) return toStatus(row as PurgeEntity);
    break;
  }
  throw new ApiError(404, "PurgeNotFound", "No purge was requested for this tenant.");
}

export interface PurgeRunOptions {
  /** Rows a run deletes at most before it queues the next run. */
  maxRows?: number;
}

export type PurgeRunOutcome = "done" | "waiting" | "continued" | "busy" | "unknown";

/** One run of the purge job (the purge-worker function). */
export async function runPurge(svc: Services, message: PurgeMessage, log: Logger, options: PurgeRunOptions = {}): Promise<PurgeRunOutcome> {
  const { tenantId, purgeId } = message;
  const purges = svc.storage.table(TABLES.audit);
  const key = `${tenantId}|${purgeId}`;
  let row = await getPurgeRow(purges, tenantId, purgeId);
  if (!row || row.state === "done") return "unknown";
  const started = svc.now();
  // The job's own lease: another message of this purge waits for it.
  const runUntil = Date.parse(row.runUntil ?? "");
  if (!Number.isNaN(runUntil) && runUntil > started.getTime()) {
    await enqueue(svc, message, runUntil - started.getTime() + 1000);
    return "busy";
  }
  const leaseMs = leaseTiming().leaseTtlMs;
  try {
    const result = await purges.updateEntity(
      { partitionKey: PURGE_PARTITION, rowKey: key, runUntil: new Date(started.getTime() + leaseMs).toISOString() },
      "Merge",
      { etag: row.etag },
    );
    row = { ...row, etag: result.etag! };
  } catch (err) {
    if (!isStatus(err, 404, 412)) throw err;
    await enqueue(svc, message, 30_000);
    return "busy";
  }
  const save = async (patch: Partial<PurgeEntity>) => {
    const result = await purges.updateEntity({ partitionKey: PURGE_PARTITION, rowKey: key, ...patch }, "Merge", { etag: row!.etag });
    row = { ...row!, ...patch, etag: result.etag! };
  };
  const runs = (row.runs ?? 0) + 1;

  // 1. Wait while a pull holds one of the tenant's leases.
  const sync = svc.storage.table(TABLES.syncState);
  const held = (await syncLeaseRows(sync, tenantId))
    .map((r) => (r.leaseId ? Date.parse(r.leaseUntil ?? "") : Number.NaN))
    .filter((until) => !Number.isNaN(until) && until > started.getTime());
  if (held.length > 0) {
    const until = Math.max(...held);
    await save({ state: "waiting", waitingFor: "pull-lease", runs, lastRunAt: started.toISOString(), runUntil: "" });
    await enqueue(svc, message, until - started.getTime() + 1000);
    log.info(`purge.waiting tenantId=${tenantId} purgeId=${purgeId} reason=pull-lease`);
    return "waiting";
  }

  // 2. Delete, within this run's bounds.
  const deleted = JSON.parse(row.deleted ?? "{}") as Record<string, number>;
  let alertsDeleted = row.alertsDeleted ?? 0;
  const maxRows = options.maxRows ?? PURGE_ROWS_PER_RUN;
  let budget = maxRows;
  const deadline = started.getTime() + PURGE_RUN_MS;
  const within = () => budget > 0 && svc.now().getTime() < deadline;
  const count = (table: string, n: number) => {
    deleted[table] = (deleted[table] ?? 0) + n;
    budget -= n;
  };
  await save({ state: "deleting", waitingFor: "", startedAt: row.startedAt ?? started.toISOString(), runs, lastRunAt: started.toISOString() });
  let complete = true;
  for (const table of ORDER) {
    if (!within()) {
      complete = false;
      break;
    }
    const client = svc.storage.table(table);
    const plan = PURGE_PLAN[table];
    let finished: boolean;
    if (plan === "alerts-partition") {
      const alerts = await deleteAlertRows(client, tenantId, () => within(), (n) => {
        count("alerts", n);
        alertsDeleted += n;
      });
      finished = alerts && (await deletePartition(client, tenantId, () => within(), (n) => count("alertsBookkeeping", n)));
    } else if (plan === "consent-states") {
      finished = await deleteMatching(client, odata`tenantId eq ${tenantId}`, () => within(), (n) => count(table, n));
    } else if (plan === "delivery-rows") {
      finished = await deleteMatching(client, deliveryRowsOf(tenantId), () => within(), (n) => count(table, n));
    } else {
      finished = await deletePartition(client, tenantId, () => within(), (n) => count(table, n));
    }
    await save({ deleted: JSON.stringify(deleted), alertsDeleted });
    if (!finished) {
      complete = false;
      break;
    }
  }
  if (!complete) {
    await save({ runUntil: "" });
    await enqueue(svc, message);
    log.info(`purge.progress tenantId=${tenantId} purgeId=${purgeId} rows=${maxRows - budget}`);
    return "continued";
  }

  // 3. The tenant row, last, if it is still the one this purge marked.
  const tenants = svc.storage.table(TABLES.tenants);
  const tenant = await getTenant(tenants, tenantId);
  if (tenant && tenant.purgeId === purgeId) {
    try {
      await tenants.deleteEntity(TENANT_PARTITION, tenantId, { etag: tenant.etag });
      count(TABLES.tenants, 1);
    } catch (err) {
      if (!isStatus(err, 404, 412)) throw err;
      // Changed meanwhile: the next run looks again.
      await save({ runUntil: "", deleted: JSON.stringify(deleted) });
      await enqueue(svc, message, 1000);
      return "continued";
    }
  }
  await save({ state: "done", completedAt: svc.now().toISOString(), deleted: JSON.stringify(deleted), alertsDeleted, runUntil: "" });
  log.info(`purge.done tenantId=${tenantId} purgeId=${purgeId} alerts=${alertsDeleted}`);
  return "done";
}

/** Deletes `keys` of one partition (and runs `extra`) in one transaction; -1 when some were gone already (list again). */
async function deleteKeys(table: TableClient, partitionKey: string, keys: string[], extra: TransactionAction[] = []): Promise<number> {
  if (keys.length === 0) return 0;
  try {
    await table.submitTransaction([...keys.map((rowKey): TransactionAction => ["delete", { partitionKey, rowKey }]), ...extra]);
    return keys.length;
  } catch (err) {
    if (!isStatus(err, 404)) throw err;
  }
  return -1;
}

/**
 * The tenant's alert rows, in batches of 99 with a `~n` row of minus their number, so that
 * the exact count (`~c` plus the `~n` rows) stays right while the purge runs.
 */
async function deleteAlertRows(alerts: TableClient, tenantId: string, within: () => boolean, counted: (n: number) => void): Promise<boolean> {
  // ALERT_ROWS_ONLY is a filter already: joined, not interpolated (which would quote it).
  const filter = `${odata`PartitionKey eq ${tenantId}`} and ${ALERT_ROWS_ONLY}`;
  for (;;) {
    if (!within()) return false;
    const keys = await firstKeys(alerts, filter, 99);
    if (keys.length === 0) return true;
    const n = await deleteKeys(alerts, tenantId, keys, [["create", countRow(tenantId, -keys.length)]]);
    if (n < 0) continue; // some were gone; list again
    counted(n);
  }
}

/** Every row of the partition, in transactions of up to 100. */
async function deletePartition(table: TableClient, partitionKey: string, within: () => boolean, counted: (n: number) => void): Promise<boolean> {
  const filter = odata`PartitionKey eq ${partitionKey}`;
  for (;;) {
    if (!within()) return false;
    const keys = await firstKeys(table, filter, 100);
    if (keys.length === 0) return true;
    const n = await deleteKeys(table, partitionKey, keys);
    if (n > 0) counted(n);
  }
}

async function firstKeys(table: TableClient, filter: string, n: number): Promise<string[]> {
  for await (const page of table.listEntities({ queryOptions: { filter, select: ["RowKey"] } }).byPage({ maxPageSize: n })) {
    if (page.length > 0) return page.map((row) => row.rowKey!);
  }
  return [];
}

/**
 * A tenant's rows in `deliverystate` (shared/delivery): keyed by the tenant (the `pending`
 * marker, each destination's lease and backoff row), by `<tenant>|...` (parked entries), or
 * naming it in a `tenantId` column (parked entries, replays of that tenant).
 */
function deliveryRowsOf(tenantId: string): string {
  return odata`RowKey eq ${tenantId} or (RowKey ge ${`${tenantId}|`} and RowKey lt ${`${tenantId}}`}) or tenantId eq ${tenantId}`;
}

/** Rows spread over partitions (consent states: one partition per link; delivery state), found by `filter`. */
async function deleteMatching(table: TableClient, filter: string, within: () => boolean, counted: (n: number) => void): Promise<boolean> {
  for await (const row of table.listEntities({ queryOptions: { filter, select: ["PartitionKey", "RowKey"] } })) {
    if (!within()) return false;
    try {
      await table.deleteEntity(row.partitionKey!, row.rowKey!);
      counted(1);
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
  }
  return true;
}
