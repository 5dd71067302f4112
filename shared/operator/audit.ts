import { randomBytes } from "node:crypto";
import { odata, type TableClient } from "@azure/data-tables";
import { ApiError, errorName } from "../platform/http.js";
import type { Logger } from "../platform/services.js";
import type { OperatorIdentity } from "./auth.js";

/**
 * The audit trail: table `audit`, one row per state-changing operator call and per alert
 * export. The row is written before the action (result `started`) and completed after it
 * (`succeeded` or `failed`, with the HTTP status); an action whose row cannot be written is
 * refused with 503, so nothing changes unrecorded. Rows hold who (object ID, sign-in name or
 * application ID), role, action, tenant, route, time and result, never a token or request
 * body. The daily lifecycle timer deletes rows older than AUDIT_RETENTION_DAYS; a tenant
 * purge leaves them.
 *
 * Layout: one partition `audit`; RowKey = inverted milliseconds (13 digits) + `-` + random,
 * so a plain query returns the newest first and a time range is a key range. One partition
 * takes about 2,000 writes a second, far above what operators do.
 */

export const AUDIT_PARTITION = "audit";
const MAX_MS = 9_999_999_999_999;
export const MAX_AUDIT_TOP = 1000;

export type AuditResult = "started" | "succeeded" | "failed";

export interface AuditEntity {
  partitionKey: string;
  rowKey: string;
  at: string;
  completedAt?: string;
  actorType: "user" | "app";
  oid: string;
  upn?: string;
  appId?: string;
  /** The highest operator role the token held. */
  role: string;
  action: string;
  tenantId?: string;
  /** `METHOD route-template`, e.g. `DELETE tenants/{tenantId}`. */
  route: string;
  result: AuditResult;
  status?: number;
  /** Small JSON of what the action did (e.g. a purge ID, exported counts). */
  detail?: string;
}

export interface AuditRecord {
  id: string;
  at: string;
  completedAt?: string;
  actor: { type: "user" | "app"; oid: string; upn?: string; appId?: string };
  role: string;
  action: string;
  tenantId?: string;
  route: string;
  result: AuditResult;
  status?: number;
  detail?: Record<string, unknown>;
}

function invert(ms: number): string {
  return String(MAX_MS - ms).padStart(13, "0");
}

/** The open entry of one action; `complete` records how it ended. */
export class AuditEntry {
  private detail: Record<string, unknown> = {};

  constructor(
    private readonly table: TableClient,
    readonly rowKey: string,
    private readonly now: () => Date,
    private readonly log: Logger,
  ) {}

  /** Adds to what the entry says the action did (kept small: IDs and counts). */
  note(detail: Record<string, unknown>): void {
    this.detail = { ...this.detail, ...detail };
  }

  /**
   * Completes the entry. A failure here is logged, never thrown: the action has happened, and
   * the entry stays `started`, which readers see as "outcome unknown".
   */
  async complete(result: Exclude<AuditResult, "started">, status: number): Promise<void> {
    const patch: Partial<AuditEntity> & { partitionKey: string; rowKey: string } = {
      partitionKey: AUDIT_PARTITION,
      rowKey: this.rowKey,
      result,
      status,
      completedAt: this.now().toISOString(),
    };
    if (Object.keys(this.detail).length > 0) patch.detail = JSON.stringify(this.detail);
    try {
      await this.table.updateEntity(patch, "Merge");
    } catch (err) {
      this.log.error(`audit.complete-failed entry=${this.rowKey} error=${errorName(err)}`);
    }
  }
}

export interface AuditStart {
  identity: OperatorIdentity;
  action: string;
  route: string;
  tenantId?: string;
}

/** Writes the `started` entry, or throws 503 AuditUnavailable so that the action is not taken. */
export async function startAudit(
  table: TableClient,
  start: AuditStart,
  now: () => Date,
  log: Logger,
): Promise<AuditEntry> {
  const at = now();
  const rowKey = `${invert(at.getTime())}-${randomBytes(6).toString("hex")}`;
  const { identity } = start;
  const entity: AuditEntity = {
    partitionKey: AUDIT_PARTITION,
    rowKey,
    at: at.toISOString(),
    actorType: identity.kind,
    oid: identity.oid,
    ...(identity.upn ? { upn: identity.upn } : {}),
    ...(identity.appId ? { appId: identity.appId } : {}),
    role: identity.role,
    action: start.action,
    ...(start.tenantId ? { tenantId: start.tenantId } : {}),
    route: start.route,
    result: "started",
  };
  try {
    await table.createEntity(entity);
  } catch (err) {
    log.error(`audit.write-failed action=${start.action} error=${errorName(err)}`);
    throw new ApiError(503, "AuditUnavailable", "The audit trail cannot be written right now, so the action was not taken; try again shortly.");
  }
  return new AuditEntry(table, rowKey, now, log);
}

export function toRecord(row: AuditEntity): AuditRecord {
  const record: AuditRecord = {
    id: row.rowKey,
    at: row.at,
    actor: {
      type: row.actorType,
      oid: row.oid,
      ...(row.upn ? { upn: row.upn } : {}),
      ...(row.appId ? { appId: row.appId } : {}),
    },
    role: row.role,
    action: row.action,
    route: row.route,
    result: row.result,
  };
  if (row.completedAt) record.completedAt = row.completedAt;
  if (row.tenantId) record.tenantId = row.tenantId;
  if (typeof row.status === "number") record.status = row.status;
  if (row.detail) {
    try {
      record.detail = JSON.parse(row.detail) as Record<string, unknown>;
    } catch {
      // an unreadable detail is left out
    }
  }
  return record;
}

export interface AuditPage {
  entries: AuditRecord[];
  continuationToken?: string;
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** GET /api/audit: newest first, `?tenantId=&action=&since=&until=&top=&continuationToken=`. */
export async function listAudit(table: TableClient, query: URLSearchParams): Promise<AuditPage> {
  const known = new Set(["tenantId", "action", "since", "until", "top", "continuationToken"]);
  const unknown = [...query.keys()].filter((k) => !known.has(k));
  if (unknown.length > 0) throw new ApiError(400, "UnknownParameter", `Unknown parameter(s): ${unknown.join(", ")}.`);
  const filters = [odata`PartitionKey eq ${AUDIT_PARTITION}`];
  const time = (name: "since" | "until"): number | undefined => {
    const value = query.get(name);
    if (value === null) return undefined;
    const ms = Date.parse(value);
    if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(ms)) {
      throw new ApiError(400, `Invalid${name[0]!.toUpperCase()}${name.slice(1)}`, `${name} must be an ISO 8601 date-time.`);
    }
    return ms;
  };
  const since = time("since");
  const until = time("until");
  // Inverted keys: newer is smaller.
  if (since !== undefined) filters.push(odata`RowKey lt ${`${invert(since)}.`}`);
  if (until !== undefined) filters.push(odata`RowKey gt ${invert(until)}`);
  const tenantId = query.get("tenantId");
  if (tenantId !== null) {
    if (!GUID.test(tenantId)) throw new ApiError(400, "InvalidTenantId", "tenantId must be a GUID.");
    filters.push(odata`tenantId eq ${tenantId.toLowerCase()}`);
  }
  const action = query.get("action");
  if (action !== null) {
    if (!/^[a-z.-]{1,64}$/.test(action)) throw new ApiError(400, "InvalidAction", "action must be an action name such as tenant.offboard.");
    filters.push(odata`action eq ${action}`);
  }
  const topRaw = query.get("top");
  const top = topRaw === null ? 100 : Number(topRaw);
  if (!Number.isInteger(top) || top < 1 || top > MAX_AUDIT_TOP) {
    throw new ApiError(400, "InvalidTop", `top must be an integer from 1 to ${MAX_AUDIT_TOP}.`);
  }
  const token = query.get("continuationToken");
  const pages = table
    .listEntities<AuditEntity>({ queryOptions: { filter: filters.join(" and ") } })
    .byPage({ maxPageSize: top, ...(token ? { continuationToken: token } : {}) });
  let page: Awaited<ReturnType<typeof pages.next>>;
  try {
    page = await pages.next();
  } catch (err) {
    if (token) throw new ApiError(400, "InvalidContinuationToken", "continuationToken is not valid.");
    throw err;
  }
  const entries = page.done || !page.value ? [] : page.value.map((row) => toRecord(row as AuditEntity));
  const next = page.done ? undefined : page.value?.continuationToken;
  return next ? { entries, continuationToken: next } : { entries };
}

/** Deletes entries older than the retention, oldest first; returns how many. One key-range query. */
export async function purgeOldAudit(table: TableClient, now: Date, retentionMs: number, max = 20_000): Promise<number> {
  const cutoff = now.getTime() - retentionMs;
  const filter = odata`PartitionKey eq ${AUDIT_PARTITION} and RowKey gt ${invert(cutoff)}`;
  let deleted = 0;
  let batch: string[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await table.submitTransaction(batch.map((rowKey) => ["delete", { partitionKey: AUDIT_PARTITION, rowKey }]));
    deleted += batch.length;
    batch = [];
  };
  for await (const row of table.listEntities({ queryOptions: { filter, select: ["RowKey"] } })) {
    batch.push(row.rowKey!);
    if (batch.length === 100) await flush();
    if (deleted + batch.length >= max) break;
  }
  await flush();
  return deleted;
}
