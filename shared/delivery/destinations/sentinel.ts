import { isAggregateLogsUploadError, LogsIngestionClient, type LogsIngestionClientOptions } from "@azure/monitor-ingestion";
import { canonicalTime } from "../../collection/time.js";
import type { SentinelConfig } from "../config.js";
import { type DeliveryItem, type Destination, type DestinationDeps, DestinationError, type SendReport } from "../destination.js";
import { retryAfterMs } from "./retry-after.js";

/**
 * Microsoft Sentinel / Log Analytics through the Logs Ingestion API: each alert version
 * becomes one row of the custom table `MsspDefenderAlerts_CL`, sent with
 * `LogsIngestionClient.upload` and the app's identity (Monitoring Metrics Publisher on the
 * data collection rule). docs/delivery.md documents the table.
 *
 * Limits (Logs Ingestion API): 1 MB per call, 64 KB per field, Retry-After on throttling.
 * - The SDK cuts the rows into calls below 1,000,000 bytes of JSON and gzips each; a row is
 *   never above RECORD_MAX_BYTES (900 KiB), so every row fits a call on its own.
 * - `RawAlert` holds the parsed alert only when its JSON is at most RAW_ALERT_MAX_BYTES
 *   (60 KiB); otherwise it is omitted and `RawTruncated` is true. `EvidenceCount` and
 *   `CollectorUrl` (the alert's `GET /api/tenants/{tenantId}/alerts/{alertId}`) are always
 *   set, so a reader finds the whole alert either way.
 * - Other text columns are cut to STRING_FIELD_MAX_BYTES (32 KiB of JSON, at a character
 *   boundary), which keeps every field below 64 KB and a row below 900 KiB.
 * - The SDK's own retries are off (`maxRetries: 0`): the outbox retries and backs off, and
 *   a 429's Retry-After comes back as `retryAfterMs` instead of being slept here.
 * - Success can be partial: `upload` reports each failed call (`onError`) with its rows,
 *   and each row carries its `DeliveryKey`. A call refused as a whole for its content
 *   (400 or 413) is sent again one row per call, so only the rows at fault are refused
 *   (`permanent`). 401, 403, 404 and a 400 about the stream, rule, API version or encoding
 *   mean the setup is wrong: when nothing got through, the whole send fails with a
 *   DestinationError naming the status and code.
 *
 * Log Analytics cannot de-duplicate on ingestion: an at-least-once retry can store a row
 * twice; readers take the newest row per alert (docs/delivery.md).
 */

export const SENTINEL_TABLE = "MsspDefenderAlerts_CL";
export const SENTINEL_STREAM = `Custom-${SENTINEL_TABLE}`;

/** Stream-declaration types (the DCR's; the table's are the same, `dateTime` spelled so). */
export type LogColumnType = "datetime" | "string" | "dynamic" | "boolean" | "int";

/** The table's columns, in order. infra/modules/sentinel.bicep declares exactly these (test/infra.test.ts checks). */
export const SENTINEL_COLUMNS: readonly { name: string; type: LogColumnType }[] = [
  { name: "TimeGenerated", type: "datetime" },
  { name: "LastUpdateTime", type: "datetime" },
  { name: "CustomerTenantId", type: "string" },
  { name: "CustomerName", type: "string" },
  { name: "Source", type: "string" },
  { name: "AlertId", type: "string" },
  { name: "ProviderAlertId", type: "string" },
  { name: "IncidentId", type: "string" },
  { name: "AlertName", type: "string" },
  { name: "AlertSeverity", type: "string" },
  { name: "Status", type: "string" },
  { name: "Category", type: "string" },
  { name: "Classification", type: "string" },
  { name: "Determination", type: "string" },
  { name: "StartTime", type: "datetime" },
  { name: "EndTime", type: "datetime" },
  { name: "CompromisedEntity", type: "string" },
  { name: "LastUpdateTimeExact", type: "string" },
  { name: "DeliveryKey", type: "string" },
  { name: "RawAlert", type: "dynamic" },
  { name: "RawTruncated", type: "boolean" },
  { name: "EvidenceCount", type: "int" },
  { name: "CollectorUrl", type: "string" },
];

export const RAW_ALERT_MAX_BYTES = 60 * 1024;
export const STRING_FIELD_MAX_BYTES = 32 * 1024;
export const RECORD_MAX_BYTES = 900 * 1024;
export const SENTINEL_BATCH_SIZE = 200;
const DEFAULT_CONCURRENCY = 5;

/** One row of MsspDefenderAlerts_CL (absent values are left out, which Log Analytics stores as empty). */
export type SentinelRecord = Record<string, string | number | boolean | unknown>;

export interface SentinelOptions {
  /** Items per send (default 500). */
  batchSize?: number;
  /** Parallel calls per send (default 5, the SDK's). */
  maxConcurrency?: number;
  /** More LogsIngestionClient options (e.g. `audience` for a sovereign cloud). Retries stay off. */
  clientOptions?: LogsIngestionClientOptions;
}

/** The whole row for one alert version, sent at `sentAt`. */
export function toSentinelRecord(item: DeliveryItem, sentAt: Date): SentinelRecord {
  const c = item.columns;
  let parsed: unknown;
  let rawBytes = Number.POSITIVE_INFINITY;
  try {
    parsed = JSON.parse(item.json);
    rawBytes = Buffer.byteLength(JSON.stringify(parsed));
  } catch {
    parsed = undefined; // not JSON: the row still goes, without RawAlert
  }
  const evidence = isObject(parsed) ? parsed.evidence : undefined;
  const rawFits = parsed !== undefined && rawBytes <= RAW_ALERT_MAX_BYTES;
  const record: SentinelRecord = {
    TimeGenerated: sentAt.toISOString(),
    LastUpdateTime: canonicalTime(item.lastUpdateTimeExact),
    CustomerTenantId: text(item.tenantId),
    CustomerName: text(item.customerName),
    Source: text(item.source),
    AlertId: text(item.alertId),
    ProviderAlertId: text(item.providerAlertId),
    IncidentId: text(c.incidentId),
    AlertName: text(c.title),
    AlertSeverity: text(c.severity),
    Status: text(c.status),
    Category: text(c.category),
    Classification: text(c.classification),
    Determination: text(c.determination),
    StartTime: time(c.firstEventTime),
    EndTime: time(c.lastEventTime),
    CompromisedEntity: text(c.computerDnsName),
    LastUpdateTimeExact: text(item.lastUpdateTimeExact),
    DeliveryKey: item.deliveryKey,
    RawAlert: rawFits ? parsed : undefined,
    RawTruncated: !rawFits,
    EvidenceCount: Array.isArray(evidence) ? evidence.length : undefined,
    CollectorUrl: text(item.collectorUrl),
  };
  for (const key of Object.keys(record)) if (record[key] === undefined) delete record[key];
  // At most 60 KiB + 22 x 32 KiB of JSON plus the names: below RECORD_MAX_BYTES by construction.
  return record;
}

export function createSentinelDestination(config: SentinelConfig, deps: DestinationDeps, options: SentinelOptions = {}): Destination {
  const client = new LogsIngestionClient(config.dcrEndpoint, deps.credential, {
    ...options.clientOptions,
    retryOptions: { maxRetries: 0 },
  });
  const maxConcurrency = options.maxConcurrency ?? DEFAULT_CONCURRENCY;

  /** Uploads rows; returns the failed calls (rows and cause), empty when all went through. */
  async function upload(records: SentinelRecord[]): Promise<{ rows: SentinelRecord[]; cause: Failure }[]> {
    const failures: { rows: SentinelRecord[]; cause: Failure }[] = [];
    try {
      await client.upload(config.dcrImmutableId, config.stream, records, {
        maxConcurrency,
        onError: (e) => failures.push({ rows: e.failedLogs, cause: classify(e.cause, deps.now()) }),
      });
    } catch (err) {
      if (!isAggregateLogsUploadError(err)) {
        // Not a per-call failure (the SDK failed before sending): nothing went through.
        return [{ rows: records, cause: classify(err, deps.now()) }];
      }
    }
    return failures;
  }

  return {
    name: config.name,
    type: "sentinel",
    batchSize: options.batchSize ?? SENTINEL_BATCH_SIZE,
    async send(items: DeliveryItem[]): Promise<SendReport> {
      if (items.length === 0) return { delivered: [], failed: [] };
      const sentAt = deps.now();
      const records = items.map((item) => toSentinelRecord(item, sentAt));
      const omitted = records.filter((r) => r.RawTruncated === true).length;
      if (omitted > 0) deps.log.info(`delivery.sentinel.raw-omitted destination=${config.name} rows=${omitted}`);

      const failed = new Map<string, Failure>();
      for (const { rows, cause } of await upload(records)) {
        if (cause.kind === "content" && rows.length > 1) {
          // Find the rows at fault: each alone in its own call.
          deps.log.warn(`delivery.sentinel.isolate destination=${config.name} rows=${rows.length} status=${cause.code}`);
          for (let i = 0; i < rows.length; i += maxConcurrency) {
            const alone = await Promise.all(rows.slice(i, i + maxConcurrency).map((row) => upload([row])));
            for (const [again] of alone) if (again) failed.set(keyOf(again.rows[0]), again.cause);
          }
          continue;
        }
        for (const row of rows) failed.set(keyOf(row), cause);
      }

      const delivered = items.map((i) => i.deliveryKey).filter((k) => !failed.has(k));
      const causes = [...failed.values()];
      const retryAfter = causes.reduce<number | undefined>(
        (most, c) => (c.retryAfterMs === undefined ? most : Math.max(most ?? 0, c.retryAfterMs)),
        undefined,
      );
      const first = causes[0];
      if (delivered.length === 0 && first && causes.every((c) => c.kind === "transient" || c.kind === "config")) {
        throw new DestinationError(first.code, first.message, retryAfter);
      }
      return {
        delivered,
        failed: [...failed].map(([deliveryKey, c]) => ({ deliveryKey, permanent: c.kind === "content", code: c.code })),
        ...(retryAfter !== undefined ? { retryAfterMs: retryAfter } : {}),
      };
    },
  };
}

interface Failure {
  /** content: the rows themselves were refused (400, 413); config: rule, stream or role (401, 403, 404); throttled: 429; transient: the rest. */
  kind: "content" | "config" | "throttled" | "transient";
  code: string;
  message: string;
  retryAfterMs?: number;
}

/** 400 codes that blame the call's target or form (stream, rule, API version, encoding), not its rows. */
const CONFIG_CODES = /stream|rule|dcr|apiversion|contenttype|encoding/i;

function classify(cause: unknown, now: Date): Failure {
  const e = (cause ?? {}) as { statusCode?: unknown; code?: unknown; name?: unknown; response?: { headers?: { get?(n: string): string | undefined } } };
  const status = typeof e.statusCode === "number" ? e.statusCode : undefined;
  const serviceCode = typeof e.code === "string" && /^[\w.-]{1,64}$/.test(e.code) ? e.code : undefined;
  const code = status === undefined ? (serviceCode ?? errorName(e.name)) : serviceCode ? `${status} ${serviceCode}` : String(status);
  if (status === 429) {
    const wait = retryAfterMs(e.response?.headers?.get?.("retry-after"), now);
    return { kind: "throttled", code, message: "Logs Ingestion throttled the rule (429)", ...(wait !== undefined ? { retryAfterMs: wait } : {}) };
  }
  if (status === 400 && serviceCode && CONFIG_CODES.test(serviceCode)) {
    return { kind: "config", code, message: `Logs Ingestion refused the call (${code}): check STREAM against the rule's stream declarations` };
  }
  if (status === 400 || status === 413) return { kind: "content", code, message: `Logs Ingestion refused the rows (${code})` };
  if (status === 401 || status === 403) {
    return { kind: "config", code, message: `Logs Ingestion refused the identity (${code}): it needs Monitoring Metrics Publisher on the data collection rule` };
  }
  if (status === 404) return { kind: "config", code, message: `Logs Ingestion does not know the rule or stream (${code}): check DCR_ENDPOINT, DCR_IMMUTABLE_ID and STREAM` };
  if (status !== undefined) return { kind: "transient", code, message: `Logs Ingestion answered ${code}` };
  return { kind: "transient", code, message: `Logs Ingestion could not be reached (${code})` };
}

/** A safe error label: the error class name (never its message, which may quote a response). */
function errorName(name: unknown): string {
  return typeof name === "string" && /^\w{1,64}$/.test(name) ? name : "NetworkError";
}

function keyOf(row: SentinelRecord | undefined): string {
  return String(row?.DeliveryKey ?? "");
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function time(value: string | undefined): string | undefined {
  return value === undefined ? undefined : canonicalTime(value);
}

/** Text cut so that its JSON form (escapes included) is at most STRING_FIELD_MAX_BYTES; undefined stays undefined. */
function text(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (jsonBytes(value) <= STRING_FIELD_MAX_BYTES) return value;
  let size = 0;
  let out = "";
  for (const ch of value) {
    size += jsonBytes(ch);
    if (size > STRING_FIELD_MAX_BYTES) break;
    out += ch;
  }
  return out;
}

/** Bytes of a string's JSON form without the quotes. */
function jsonBytes(value: string): number {
  return Buffer.byteLength(JSON.stringify(value)) - 2;
}
