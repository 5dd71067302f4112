import { odata } from "@azure/data-tables";
import { ALERT_COLUMNS, ALERT_ROWS_ONLY, type AlertTables, readAlertJson } from "../collection/alert-store.js";
import { ApiError, parseTenantId } from "../platform/http.js";
import type { Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";

/**
 * The operator's read API over stored alerts. Order is unspecified: Table Storage sorts
 * only within a partition (by alert id) and cannot sort across tenants. `since` filters on
 * when the collector stored or last changed a row (the row's Timestamp), not on Defender's
 * own times.
 *
 * The reader contract (docs/collection.md): the last page of a scan (the one without a
 * continuationToken) carries `nextSince`: the storage service's own time when the scan's
 * first page was answered (its Date header, carried inside our continuation token), minus
 * ALERTS_RESUME_MARGIN_SECONDS. A reader that passes it as `since` to its next scan misses
 * no row written or rewritten after its previous scan began, late alerts included.
 */

export const SEVERITIES = ["UnSpecified", "Informational", "Low", "Medium", "High"] as const;
export const STATUSES = ["Unknown", "New", "InProgress", "Resolved"] as const;
/** The query-friendly columns plus what the summary needs; never the body parts. */
const SUMMARY_COLUMNS = [
  ...ALERT_COLUMNS,
  "alertId",
  "alertCreationTime",
  "lastUpdateTimeExact",
  "incidentId",
  "Timestamp",
  "PartitionKey",
] as const;
export const MAX_TOP = 1000;

export interface AlertSummary {
  tenantId: string;
  id: string;
  storedAt: string;
  [column: string]: unknown;
}

export interface AlertListResult {
  alerts: AlertSummary[];
  continuationToken?: string;
  /** On the last page only: the `since` to pass to the next scan. */
  nextSince?: string;
}

/** Our continuation token: the SDK's, plus when the scan started by the service's clock. */
interface ScanToken {
  t: string;
  s: string;
}

function encodeScanToken(token: ScanToken): string {
  return Buffer.from(JSON.stringify(token), "utf8").toString("base64url");
}

function decodeScanToken(value: string): ScanToken {
  try {
    const token = JSON.parse(Buffer.from(value, "base64url").toString("utf8")) as Partial<ScanToken>;
    if (typeof token.t === "string" && typeof token.s === "string" && !Number.isNaN(Date.parse(token.s))) {
      return { t: token.t, s: token.s };
    }
  } catch {
    // falls through
  }
  throw new ApiError(400, "InvalidContinuationToken", "continuationToken is not valid.");
}

export async function listAlerts(svc: Services, query: URLSearchParams): Promise<AlertListResult> {
  const known = new Set(["tenantId", "since", "severity", "status", "top", "continuationToken", "code"]);
  const unknown = [...query.keys()].filter((k) => !known.has(k));
  if (unknown.length > 0) throw new ApiError(400, "UnknownParameter", `Unknown parameter(s): ${unknown.join(", ")}.`);

  const filters: string[] = [];
  const tenantId = query.get("tenantId");
  if (tenantId !== null) filters.push(odata`PartitionKey eq ${parseTenantId(tenantId)}`);
  const since = query.get("since");
  if (since !== null) {
    const at = Date.parse(since);
    if (!/^\d{4}-\d{2}-\d{2}T/.test(since) || Number.isNaN(at)) {
      throw new ApiError(400, "InvalidSince", "since must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z.");
    }
    filters.push(odata`Timestamp ge ${new Date(at)}`);
  }
  for (const [name, allowed] of [
    ["severity", SEVERITIES],
    ["status", STATUSES],
  ] as const) {
    const value = query.get(name);
    if (value === null) continue;
    const match = (allowed as readonly string[]).find((v) => v.toLowerCase() === value.toLowerCase());
    if (!match) throw new ApiError(400, `Invalid${name[0]!.toUpperCase()}${name.slice(1)}`, `${name} must be one of ${allowed.join(", ")}.`);
    filters.push(name === "severity" ? odata`severity eq ${match}` : odata`status eq ${match}`);
  }
  const topRaw = query.get("top");
  const top = topRaw === null ? 100 : Number(topRaw);
  if (!Number.isInteger(top) || top < 1 || top > MAX_TOP) {
    throw new ApiError(400, "InvalidTop", `top must be an integer from 1 to ${MAX_TOP}.`);
  }
  const given = query.get("continuationToken");
  const scan = given === null ? undefined : decodeScanToken(given);
  // Bookkeeping rows (time index, counts, garbage) share the partitions; see alert-store.ts.
  filters.push(ALERT_ROWS_ONLY);

  let serviceDate: string | undefined;
  const table = svc.storage.table(TABLES.alerts);
  const pages = table
    .listEntities<Record<string, unknown>>({
      queryOptions: { filter: filters.join(" and "), select: [...SUMMARY_COLUMNS] },
      onResponse: (response) => {
        serviceDate ??= response.headers.get("date") ?? undefined;
      },
    })
    .byPage({ maxPageSize: top, ...(scan ? { continuationToken: scan.t } : {}) });
  let page: Awaited<ReturnType<typeof pages.next>>;
  try {
    page = await pages.next();
  } catch (err) {
    if (scan) throw new ApiError(400, "InvalidContinuationToken", "continuationToken is not valid.");
    throw err;
  }
  const startedAt = scan?.s ?? new Date(Date.parse(serviceDate ?? "") || svc.now().getTime()).toISOString();
  const alerts = page.done || !page.value ? [] : page.value.map((row) => toSummary(row));
  const next = page.done ? undefined : page.value?.continuationToken;
  if (next) return { alerts, continuationToken: encodeScanToken({ t: next, s: startedAt }) };
  const nextSince = new Date(Date.parse(startedAt) - svc.config.alertsResumeMarginMs).toISOString();
  return { alerts, nextSince };
}

function toSummary(row: Record<string, unknown>): AlertSummary {
  const summary: AlertSummary = {
    tenantId: String(row.partitionKey),
    id: String(row.alertId),
    storedAt: String(row.timestamp ?? ""),
  };
  for (const column of SUMMARY_COLUMNS) {
    if (column === "alertId" || column === "Timestamp" || column === "PartitionKey") continue;
    const value = row[column];
    if (value === undefined || value === null) continue;
    const name = column === "lastUpdateTimeExact" ? "lastUpdateTime" : column;
    summary[name] = value instanceof Date ? value.toISOString() : value;
  }
  return summary;
}

export async function getAlertJson(svc: Services, tenantIdRaw: string, alertId: string): Promise<Buffer> {
  const tenantId = parseTenantId(tenantIdRaw);
  if (!alertId || alertId.length > 512) throw new ApiError(400, "InvalidAlertId", "alertId is missing or too long.");
  const tables: AlertTables = {
    alerts: svc.storage.table(TABLES.alerts),
    bodies: svc.storage.table(TABLES.alertBodies),
  };
  const json = await readAlertJson(tables, tenantId, alertId);
  if (!json) throw new ApiError(404, "AlertNotFound", "No alert with that ID is stored for this tenant.");
  return json;
}
