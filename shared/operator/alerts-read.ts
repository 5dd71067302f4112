import { odata } from "@azure/data-tables";
import { ALERT_COLUMNS, ALERT_ROWS_ONLY, type AlertTables, readAlertJson, readStoredAlert } from "../collection/alert-store.js";
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
  "source",
  "providerAlertId",
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
  /** With `include=raw`: each alert's exact JSON, in the order of `alerts`. */
  raw?: Buffer[];
}

/** With `include=raw`: at most this many alerts, and a page stops once it holds this much JSON. */
export const MAX_TOP_RAW = 100;
export const RAW_PAGE_BYTES = 8 * 1024 * 1024;
/** Rows fetched per storage request with `include=raw` (each row may hold up to 640 KiB of body). */
const RAW_FETCH = 5;

/**
 * Our continuation token: where to resume (the SDK's token `t`, or with `include=raw`,
 * which can stop inside a storage page, the exact next key `k`), plus when the scan started
 * by the service's clock (`s`).
 */
interface ScanToken {
  t?: string;
  k?: [string, string];
  s: string;
}

function encodeScanToken(token: ScanToken): string {
  return Buffer.from(JSON.stringify(token), "utf8").toString("base64url");
}

function decodeScanToken(value: string): ScanToken {
  try {
    const token = JSON.parse(Buffer.from(value, "base64url").toString("utf8")) as Partial<ScanToken>;
    if (typeof token.s === "string" && !Number.isNaN(Date.parse(token.s))) {
      if (typeof token.t === "string") return { t: token.t, s: token.s };
      if (Array.isArray(token.k) && token.k.length === 2 && token.k.every((x) => typeof x === "string")) {
        return { k: [token.k[0]!, token.k[1]!], s: token.s };
      }
    }
  } catch {
    // falls through
  }
  throw new ApiError(400, "InvalidContinuationToken", "continuationToken is not valid.");
}

export async function listAlerts(svc: Services, query: URLSearchParams): Promise<AlertListResult> {
  const known = new Set(["tenantId", "since", "severity", "status", "top", "continuationToken", "include", "code"]);
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
  const include = query.get("include");
  if (include !== null && include !== "raw") throw new ApiError(400, "InvalidInclude", "include must be raw.");
  const withRaw = include === "raw";
  const maxTop = withRaw ? MAX_TOP_RAW : MAX_TOP;
  const topRaw = query.get("top");
  const top = topRaw === null ? Math.min(100, maxTop) : Number(topRaw);
  if (!Number.isInteger(top) || top < 1 || top > maxTop) {
    throw new ApiError(400, "InvalidTop", `top must be an integer from 1 to ${maxTop}${withRaw ? " with include=raw" : ""}.`);
  }
  const given = query.get("continuationToken");
  const scan = given === null ? undefined : decodeScanToken(given);
  // Bookkeeping rows (time index, counts, garbage) share the partitions; see alert-store.ts.
  filters.push(ALERT_ROWS_ONLY);
  if (scan?.k) filters.push(odata`(PartitionKey gt ${scan.k[0]} or (PartitionKey eq ${scan.k[0]} and RowKey ge ${scan.k[1]}))`);
  if (withRaw) return listWithRaw(svc, filters, top, scan);

  let serviceDate: string | undefined;
  const table = svc.storage.table(TABLES.alerts);
  const pages = table
    .listEntities<Record<string, unknown>>({
      queryOptions: { filter: filters.join(" and "), select: [...SUMMARY_COLUMNS] },
      onResponse: (response) => {
        serviceDate ??= response.headers.get("date") ?? undefined;
      },
    })
    .byPage({ maxPageSize: top, ...(scan?.t ? { continuationToken: scan.t } : {}) });
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

/**
 * `include=raw`: rows are fetched a few at a time and the page stops once it holds
 * RAW_PAGE_BYTES of JSON (or `top` alerts), resuming exactly at the next row, so no answer
 * buffers tens of MiB whatever the alerts' sizes.
 */
async function listWithRaw(svc: Services, filters: string[], top: number, scan: ScanToken | undefined): Promise<AlertListResult> {
  let serviceDate: string | undefined;
  const tables: AlertTables = { alerts: svc.storage.table(TABLES.alerts), bodies: svc.storage.table(TABLES.alertBodies) };
  const pages = tables.alerts
    .listEntities<Record<string, unknown>>({
      queryOptions: { filter: filters.join(" and "), select: ["PartitionKey", "RowKey"] },
      onResponse: (response) => {
        serviceDate ??= response.headers.get("date") ?? undefined;
      },
    })
    .byPage({ maxPageSize: RAW_FETCH });
  const alerts: AlertSummary[] = [];
  const raw: Buffer[] = [];
  let bytes = 0;
  let resumeAt: [string, string] | undefined;
  try {
    for await (const page of pages) {
      for (const key of page) {
        if (alerts.length >= top || bytes >= RAW_PAGE_BYTES) {
          resumeAt = [String(key.partitionKey), String(key.rowKey)];
          break;
        }
        const stored = await readStoredAlert(tables, String(key.partitionKey), String(key.rowKey));
        if (!stored) continue; // deleted since the key was listed
        alerts.push(toSummary({ ...stored.row, timestamp: stored.row.timestamp }));
        raw.push(stored.json);
        bytes += stored.json.length;
      }
      if (resumeAt) break;
    }
  } catch (err) {
    if (scan) throw new ApiError(400, "InvalidContinuationToken", "continuationToken is not valid.");
    throw err;
  }
  const startedAt = scan?.s ?? new Date(Date.parse(serviceDate ?? "") || svc.now().getTime()).toISOString();
  if (resumeAt) return { alerts, raw, continuationToken: encodeScanToken({ k: resumeAt, s: startedAt }) };
  return { alerts, raw, nextSince: new Date(Date.parse(startedAt) - svc.config.alertsResumeMarginMs).toISOString() };
}

/**
 * The list answer as JSON text. With `include=raw` each alert's JSON is embedded as `raw`
 * exactly as the source sent it (not parsed and written again).
 */
export function renderAlertList(result: AlertListResult): string {
  const { raw, alerts, ...rest } = result;
  const items = alerts.map((alert, i) => {
    const text = JSON.stringify(alert);
    const json = raw?.[i];
    return json ? `${text.slice(0, -1)},"raw":${json.toString("utf8")}}` : text;
  });
  const tail = JSON.stringify(rest);
  return `{"alerts":[${items.join(",")}]${tail === "{}" ? "" : `,${tail.slice(1, -1)}`}}`;
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

/**
 * GET /api/tenants/{t}/alerts/{id}?source=defender|graph (default defender): the alert's
 * exact JSON. After a tenant switches source, both rows of one alert may exist; readers
 * de-duplicate on (tenantId, providerAlertId).
 */
export async function getAlertJson(svc: Services, tenantIdRaw: string, alertId: string, sourceParam: string | null = null): Promise<Buffer> {
  const tenantId = parseTenantId(tenantIdRaw);
  if (!alertId || alertId.length > 512) throw new ApiError(400, "InvalidAlertId", "alertId is missing or too long.");
  const source = sourceParam ?? "defender";
  if (source !== "defender" && source !== "graph") throw new ApiError(400, "InvalidSource", "source must be defender or graph.");
  const tables: AlertTables = {
    alerts: svc.storage.table(TABLES.alerts),
    bodies: svc.storage.table(TABLES.alertBodies),
  };
  const json = await readAlertJson(tables, tenantId, alertId, source);
  if (!json) throw new ApiError(404, "AlertNotFound", "No alert with that ID is stored for this tenant.");
  return json;
}
