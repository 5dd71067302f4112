import { createHash } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { odata, type TableClient } from "@azure/data-tables";
import { isStatus } from "../platform/storage.js";
import type { SourceName } from "./source.js";
import { canonicalTime, formatTicks, parseTime } from "./time.js";

/**
 * Alerts in Table Storage: table `alerts`, PartitionKey = tenant GUID, RowKey = alert id.
 * Each row has query-friendly columns and the alert's exact JSON, gzip-compressed and cut
 * into binary properties `body0..bodyN` of at most 64 KiB (Table Storage's property cap).
 * A compressed body too large for one entity (1 MiB cap) overflows into table
 * `alertbodies` as rows `<RowKey>|<bodyKey>|<index>` holding the rest of the parts; those
 * rows are written before the alert row that points at them, so a reader never sees a
 * row whose body is missing. To read an alert back: concatenate body0..bodyN of the alert
 * row, then (when bodyOverflow > 0) of each overflow row in index order, gunzip, and check
 * bodySha256 (hex SHA-256 of the JSON bytes).
 *
 * Bookkeeping rows share the alert's partition, so that they change in the same
 * entity-group transaction as the alert row. Their RowKeys start with `~`, which an alert
 * RowKey never does (`~` is percent-encoded in alert ids), and list queries exclude them
 * with `RowKey lt '~'`:
 * - `~i|<lastUpdateTime, 7 fractional digits>|<alert RowKey>`: the time index. One per
 *   stored alert, naming its stored version (time, SHA-256, overflow key). A window's
 *   stored versions are one key-range query, and every write of an alert goes through its
 *   index row, which makes the index row the alert's concurrency token (see alert-writer.ts).
 * - `~g|<not before>|<alert RowKey>|<bodyKey>`: overflow parts of a replaced version,
 *   deleted once the grace period has passed (see garbage.ts).
 * - `~n|<unique>` and `~c`: the exact alert count: each transaction that inserts new alerts
 *   adds a `~n` row with their number, and runs fold them into `~c` (see alert-writer.ts).
 */

export const PART_BYTES = 64 * 1024;
/** Parts kept in one row: 10 x 64 KiB, so even the base64 form (which Azurite measures) stays below the 1 MiB entity cap. */
export const INLINE_PARTS = 10;
/** Entity-group transactions: at most 100 entities and 4 MiB of payload, one partition. */
export const MAX_BATCH_ENTITIES = 100;
export const MAX_BATCH_BYTES = 3.5 * 1024 * 1024;

/**
 * The query-friendly columns, copied from the alert's `fields` (each source maps its own
 * schema to these names and to the read API's vocabulary; see docs/sources.md).
 */
export const ALERT_COLUMNS = [
  "title",
  "severity",
  "status",
  "category",
  "classification",
  "determination",
  "detectionSource",
  "firstEventTime",
  "lastEventTime",
  "machineId",
  "computerDnsName",
  "assignedTo",
] as const;

/** One alert as a source returned it. */
export interface RawAlert {
  /** The alert exactly as the API returned it. */
  json: string;
  id: string;
  /** The update time exactly as the API wrote it (up to 7 fractional digits). */
  lastUpdateTime: string;
  fields: Record<string, unknown>;
}

export type AlertEntity = Record<string, unknown> & { partitionKey: string; rowKey: string };

export interface EncodedAlert {
  row: AlertEntity;
  /** Overflow rows for table alertbodies, written before `row`. */
  overflow: AlertEntity[];
  /** Estimated size on the wire, for batching. */
  bytes: number;
  sha: string;
}

/** Prefixes of the bookkeeping rows in an alert partition; alert RowKeys sort before `~`. */
export const INDEX_PREFIX = "~i|";
export const GARBAGE_PREFIX = "~g|";
export const COUNT_PREFIX = "~n|";
export const COUNT_TOTAL_KEY = "~c";
/** Alert rows only: the filter every alert list query adds. */
export const ALERT_ROWS_ONLY = odata`RowKey lt ${"~"}`;

/**
 * The alert row's RowKey: the encoded id for `defender` rows (the layout of earlier
 * versions stays valid), `g|` + the encoded id for `graph` rows (an encoded id never holds
 * a raw `|`, so the two can never collide).
 */
export function alertRowKey(source: SourceName, id: string): string {
  return source === "graph" ? `g|${encodeKey(id)}` : encodeKey(id);
}

/** RowKey-safe alert id: `/ \ # ? % | ~` and control characters are percent-encoded. */
export function encodeKey(id: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: Table Storage forbids them in keys
  return id.replace(/[/\\#?%|~\u0000-\u001f\u007f-\u009f]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** The index RowKey of an alert version; `time` in canonical form (see time.ts). */
export function indexKey(time: string, alertRowKey: string): string {
  return `${INDEX_PREFIX}${time}|${alertRowKey}`;
}

/** The index RowKey bound for a window edge in milliseconds. */
export function indexBound(ms: number): string {
  return `${INDEX_PREFIX}${formatTicks(BigInt(ms) * 10_000n)}`;
}

export function overflowKey(alertRowKey: string, bodyKey: string, index: number): string {
  return `${alertRowKey}|${bodyKey}|${String(index).padStart(4, "0")}`;
}

export function sha256Hex(json: string | Buffer): string {
  return createHash("sha256").update(json).digest("hex");
}

const GZIP_OPTIONS = { level: 1, memLevel: 6 } as const;

export function encodeAlert(tenantId: string, alert: RawAlert, source: SourceName = "defender"): EncodedAlert {
  const sha = sha256Hex(alert.json);
  const bytes = Buffer.from(alert.json, "utf8");
  // Level 1: about 25 % less CPU than the default level, 3 % larger. memLevel 6: a quarter of
  // the default hash table, which every call clears; for alerts of a few KB that setup is
  // a fifth of the cost (39 against 51 µs an alert), with the same output size.
  const packed = gzipSync(bytes, GZIP_OPTIONS);
  const parts: Buffer[] = [];
  for (let offset = 0; offset < packed.length; offset += PART_BYTES) {
    parts.push(packed.subarray(offset, offset + PART_BYTES));
  }
  const rowKey = alertRowKey(source, alert.id);
  const row: AlertEntity = { partitionKey: tenantId, rowKey, alertId: alert.id, source };
  const providerAlertId = alert.fields.providerAlertId;
  row.providerAlertId = typeof providerAlertId === "string" && providerAlertId ? providerAlertId : alert.id;
  for (const column of ALERT_COLUMNS) {
    const value = alert.fields[column];
    if (value !== null && value !== undefined) row[column] = typeof value === "string" ? value : JSON.stringify(value);
  }
  const incidentId = alert.fields.incidentId;
  if (incidentId !== null && incidentId !== undefined) row.incidentId = String(incidentId);
  const created = parseTime(alert.fields.alertCreationTime);
  if (created) row.alertCreationTime = created;
  const updated = parseTime(alert.lastUpdateTime);
  if (updated) row.lastUpdateTime = updated;
  row.lastUpdateTimeExact = alert.lastUpdateTime;
  row.bodyEncoding = "gzip";
  row.bodySha256 = sha;
  row.bodyBytes = bytes.length;
  const inline = parts.slice(0, INLINE_PARTS);
  inline.forEach((part, i) => {
    row[`body${i}`] = new Uint8Array(part);
  });
  const overflow: AlertEntity[] = [];
  const rest = parts.slice(INLINE_PARTS);
  if (rest.length > 0) {
    const bodyKey = sha.slice(0, 16);
    for (let i = 0; i * INLINE_PARTS < rest.length; i++) {
      const chunk: AlertEntity = { partitionKey: tenantId, rowKey: overflowKey(rowKey, bodyKey, i) };
      rest.slice(i * INLINE_PARTS, (i + 1) * INLINE_PARTS).forEach((part, j) => {
        chunk[`body${j}`] = new Uint8Array(part);
      });
      overflow.push(chunk);
    }
    row.bodyKey = bodyKey;
    row.bodyOverflow = overflow.length;
  }
  // Base64 on the wire is 4/3 of the binary size, plus the columns.
  const wire = Math.ceil((Math.min(packed.length, INLINE_PARTS * PART_BYTES) * 4) / 3) + 4096;
  return { row, overflow, bytes: wire, sha };
}

/** Groups entities of one partition into transactions within the count and size caps. */
export function toBatches<T extends { bytes: number; entities?: number }>(items: T[], maxEntities = MAX_BATCH_ENTITIES): T[][] {
  const batches: T[][] = [];
  let current: T[] = [];
  let size = 0;
  let count = 0;
  for (const item of items) {
    const entities = item.entities ?? 1;
    if (current.length > 0 && (count + entities > maxEntities || size + item.bytes > MAX_BATCH_BYTES)) {
      batches.push(current);
      current = [];
      size = 0;
      count = 0;
    }
    current.push(item);
    size += item.bytes;
    count += entities;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

export interface AlertTables {
  alerts: TableClient;
  bodies: TableClient;
}

/** The stored version of an alert, as its index row names it. */
export interface IndexEntry {
  alertId: string;
  rowKey: string;
  /** Canonical form (7 fractional digits), as in the index RowKey. */
  time: string;
  sha: string;
  bodyKey?: string;
  bodyOverflow?: number;
}

type IndexRow = Record<string, unknown> & {
  partitionKey: string;
  rowKey: string;
  alertId: string;
  bodySha256: string;
  bodyKey?: string;
  bodyOverflow?: number;
};

export function indexRow(tenantId: string, entry: IndexEntry): IndexRow {
  const row: IndexRow = {
    partitionKey: tenantId,
    rowKey: indexKey(entry.time, entry.rowKey),
    alertId: entry.alertId,
    bodySha256: entry.sha,
  };
  if (entry.bodyKey) {
    row.bodyKey = entry.bodyKey;
    row.bodyOverflow = entry.bodyOverflow ?? 0;
  }
  return row;
}

function entryFromIndexRow(row: IndexRow): IndexEntry | undefined {
  const rest = row.rowKey.slice(INDEX_PREFIX.length);
  const bar = rest.indexOf("|");
  if (bar < 0) return undefined;
  const entry: IndexEntry = { alertId: row.alertId, rowKey: rest.slice(bar + 1), time: rest.slice(0, bar), sha: row.bodySha256 };
  if (row.bodyKey) {
    entry.bodyKey = row.bodyKey;
    entry.bodyOverflow = Number(row.bodyOverflow ?? 0);
  }
  return entry;
}

/** The index entry of a stored alert row (for alerts whose version lies outside a window). */
export function entryFromAlertRow(row: Record<string, unknown>): IndexEntry | undefined {
  const time = canonicalTime(String(row.lastUpdateTimeExact ?? ""));
  if (!time) return undefined;
  const entry: IndexEntry = {
    alertId: String(row.alertId),
    rowKey: String(row.rowKey),
    time,
    sha: String(row.bodySha256 ?? ""),
  };
  if (row.bodyKey) {
    entry.bodyKey = String(row.bodyKey);
    entry.bodyOverflow = Number(row.bodyOverflow ?? 0);
  }
  return entry;
}

/**
 * The stored versions whose lastUpdateTime lies in [fromMs, toMs): one key-range query
 * over the time index, whose cost follows the window, not the tenant's whole partition.
 */
export async function listIndex(alerts: TableClient, tenantId: string, fromMs: number, toMs: number): Promise<IndexEntry[]> {
  const filter = odata`PartitionKey eq ${tenantId} and RowKey ge ${indexBound(fromMs)} and RowKey lt ${indexBound(toMs)}`;
  const entries: IndexEntry[] = [];
  for await (const row of alerts.listEntities<IndexRow>({ queryOptions: { filter } })) {
    const entry = entryFromIndexRow(row);
    if (entry) entries.push(entry);
  }
  return entries;
}

/** Reads an alert row with the columns that decide newest-wins (no body), or undefined. */
export async function readAlertHead(alerts: TableClient, tenantId: string, rowKey: string): Promise<IndexEntry | undefined> {
  try {
    const row = await alerts.getEntity(tenantId, rowKey, {
      queryOptions: { select: ["alertId", "lastUpdateTimeExact", "bodySha256", "bodyKey", "bodyOverflow"] },
    });
    return entryFromAlertRow({ ...row, rowKey });
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
}

export class BodyPartMissingError extends Error {
  constructor() {
    super("An overflow part of the alert's body is missing");
    this.name = "BodyPartMissingError";
  }
}

/**
 * Reads an alert's exact JSON back, or undefined if it is not stored. The overflow parts
 * of a version that was just replaced stay for a grace period, so a reader that read the
 * old row finishes; one that is slower than that finds a part missing and re-reads the row.
 */
export async function readAlertJson(
  tables: AlertTables,
  tenantId: string,
  alertId: string,
  source: SourceName = "defender",
): Promise<Buffer | undefined> {
  return (await readStoredAlert(tables, tenantId, alertRowKey(source, alertId)))?.json;
}

/** The stored alert row (columns) and its exact JSON, or undefined (see readAlertJson). */
export async function readStoredAlert(
  tables: AlertTables,
  tenantId: string,
  rowKey: string,
): Promise<{ row: AlertEntity; json: Buffer } | undefined> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await readOnce(tables, tenantId, rowKey);
    } catch (err) {
      if (err instanceof BodyPartMissingError && attempt === 0) continue;
      throw err;
    }
  }
}

async function readOnce(tables: AlertTables, tenantId: string, rowKey: string): Promise<{ row: AlertEntity; json: Buffer } | undefined> {
  let row: AlertEntity;
  try {
    row = await tables.alerts.getEntity(tenantId, rowKey);
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
  const parts: Uint8Array[] = partsOf(row);
  const overflow = Number(row.bodyOverflow ?? 0);
  for (let i = 0; i < overflow; i++) {
    try {
      parts.push(...partsOf(await tables.bodies.getEntity(tenantId, overflowKey(row.rowKey, String(row.bodyKey), i))));
    } catch (err) {
      if (isStatus(err, 404)) throw new BodyPartMissingError();
      throw err;
    }
  }
  const json = gunzipSync(Buffer.concat(parts));
  if (sha256Hex(json) !== row.bodySha256) {
    throw new Error(`Stored body of alert ${row.rowKey} fails its checksum`);
  }
  return { row, json };
}

function partsOf(entity: Record<string, unknown>): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (let i = 0; entity[`body${i}`] !== undefined; i++) parts.push(entity[`body${i}`] as Uint8Array);
  return parts;
}

export { parseTime };
