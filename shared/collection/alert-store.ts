import { createHash } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { odata, type TableClient, type TransactionAction } from "@azure/data-tables";
import pLimit from "p-limit";
import { isStatus } from "../platform/storage.js";

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
 */

export const PART_BYTES = 64 * 1024;
/** Parts kept in one row: 10 x 64 KiB, so even the base64 form (which Azurite measures) stays below the 1 MiB entity cap. */
export const INLINE_PARTS = 10;
/** Entity-group transactions: at most 100 entities and 4 MiB of payload, one partition. */
export const MAX_BATCH_ENTITIES = 100;
export const MAX_BATCH_BYTES = 3.5 * 1024 * 1024;

/** The query-friendly columns, copied as they are from the alert. */
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

export interface RawAlert {
  /** The alert exactly as the API returned it. */
  json: string;
  id: string;
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
}

/** RowKey-safe alert id: `/ \ # ?`, control characters, `%` and `|` are percent-encoded. */
export function encodeKey(id: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: Table Storage forbids them in keys
  return id.replace(/[/\\#?%|\u0000-\u001f\u007f-\u009f]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** Parses Defender's timestamps (1 to 7 fractional digits) to a Date (millisecond precision). */
export function parseTime(value: unknown): Date | undefined {
  if (typeof value !== "string") return undefined;
  const ms = Date.parse(value.replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(ms) ? undefined : new Date(ms);
}

export function sha256Hex(json: string | Buffer): string {
  return createHash("sha256").update(json).digest("hex");
}

export function encodeAlert(tenantId: string, alert: RawAlert): EncodedAlert {
  const bytes = Buffer.from(alert.json, "utf8");
  const sha = sha256Hex(bytes);
  const packed = gzipSync(bytes, { level: 1 }); // level 1: ~25% less CPU, ~3% larger
  const parts: Buffer[] = [];
  for (let offset = 0; offset < packed.length; offset += PART_BYTES) {
    parts.push(packed.subarray(offset, offset + PART_BYTES));
  }
  const rowKey = encodeKey(alert.id);
  const row: AlertEntity = { partitionKey: tenantId, rowKey, alertId: alert.id };
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
      const chunk: AlertEntity = {
        partitionKey: tenantId,
        rowKey: `${rowKey}|${bodyKey}|${String(i).padStart(4, "0")}`,
      };
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
  return { row, overflow, bytes: wire };
}

/** Groups entities of one partition into transactions within the count and size caps. */
export function toBatches<T extends { bytes: number }>(items: T[]): T[][] {
  const batches: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const item of items) {
    if (current.length > 0 && (current.length >= MAX_BATCH_ENTITIES || size + item.bytes > MAX_BATCH_BYTES)) {
      batches.push(current);
      current = [];
      size = 0;
    }
    current.push(item);
    size += item.bytes;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

export interface AlertTables {
  alerts: TableClient;
  bodies: TableClient;
}

/**
 * Upserts alerts of one tenant in entity-group transactions (Replace mode, so a rerun or
 * an update leaves exactly one row per alert, with no stale parts). Overflow rows go
 * first; old overflow rows of a changed big alert are removed afterwards.
 */
export async function writeAlerts(
  tables: AlertTables,
  encoded: EncodedAlert[],
  concurrency: number,
): Promise<void> {
  const limit = pLimit(concurrency);
  const overflowRows = encoded.flatMap((e) =>
    e.overflow.map((row) => ({ row, bytes: Math.ceil((INLINE_PARTS * PART_BYTES * 4) / 3) + 1024 })),
  );
  await Promise.all(toBatches(overflowRows).map((batch) => limit(() => submit(tables.bodies, batch))));
  await Promise.all(toBatches(encoded).map((batch) => limit(() => submit(tables.alerts, batch))));
  for (const big of encoded.filter((e) => e.overflow.length > 0)) {
    await removeStaleOverflow(tables.bodies, big.row);
  }
}

async function submit(table: TableClient, batch: { row: AlertEntity }[]): Promise<void> {
  const actions: TransactionAction[] = batch.map(({ row }) => ["upsert", row, "Replace"]);
  await table.submitTransaction(actions);
}

async function removeStaleOverflow(bodies: TableClient, row: AlertEntity): Promise<void> {
  const prefix = `${row.rowKey}|`;
  const filter = odata`PartitionKey eq ${row.partitionKey} and RowKey ge ${prefix} and RowKey lt ${`${row.rowKey}}`}`;
  const keep = `${prefix}${row.bodyKey}|`;
  for await (const chunk of bodies.listEntities({ queryOptions: { filter, select: ["RowKey"] } })) {
    if (chunk.rowKey && !chunk.rowKey.startsWith(keep)) {
      try {
        await bodies.deleteEntity(row.partitionKey, chunk.rowKey);
      } catch (err) {
        if (!isStatus(err, 404)) throw err;
      }
    }
  }
}

/** Reads an alert's exact JSON back, or undefined if it is not stored. */
export async function readAlertJson(tables: AlertTables, tenantId: string, alertId: string): Promise<Buffer | undefined> {
  let row: AlertEntity;
  try {
    row = await tables.alerts.getEntity(tenantId, encodeKey(alertId));
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
  const parts: Uint8Array[] = partsOf(row);
  const overflow = Number(row.bodyOverflow ?? 0);
  for (let i = 0; i < overflow; i++) {
    const key = `${row.rowKey}|${row.bodyKey}|${String(i).padStart(4, "0")}`;
    parts.push(...partsOf(await tables.bodies.getEntity(tenantId, key)));
  }
  const json = gunzipSync(Buffer.concat(parts));
  if (sha256Hex(json) !== row.bodySha256) {
    throw new Error(`Stored body of alert ${row.rowKey} fails its checksum`);
  }
  return json;
}

function partsOf(entity: Record<string, unknown>): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (let i = 0; entity[`body${i}`] !== undefined; i++) parts.push(entity[`body${i}`] as Uint8Array);
  return parts;
}
