import { pipeline, Readable } from "node:stream";
import { createGzip, gunzipSync } from "node:zlib";
import { odata } from "@azure/data-tables";
import {
  ALERT_ROWS_ONLY,
  type AlertTables,
  BodyPartMissingError,
  overflowKey,
  readAlertJson,
  sha256Hex,
} from "../collection/alert-store.js";
import { getTenant } from "../onboarding/tenants.js";
import { ApiError, errorName } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES } from "../platform/storage.js";

/**
 * `GET /api/tenants/{tenantId}/export`: a tenant's alerts as gzip'd NDJSON, streamed.
 *
 * - One line per alert: its JSON exactly as Defender returned it and as
 *   `GET /api/tenants/{tenantId}/alerts/{alertId}` answers it. JSON allows a raw line break
 *   only as whitespace between tokens; such a byte (never sent by Defender, which answers
 *   compact JSON) becomes a space, which keeps the line the same JSON value.
 * - At most EXPORT_PAGE_ALERTS alerts per call, in RowKey order. When more remain, the last
 *   line is `{"next":"<token>"}`; the next call passes it as `?continuationToken=`.
 * - Rows are read a page of 500 at a time while the client reads: the stream's
 *   backpressure holds the reader, so memory stays bounded whatever the tenant's size.
 */

const PAGE_ROWS = 500;
const MAX_TOKEN_LENGTH = 2048;

export interface ExportOutcome {
  alerts: number;
  more: boolean;
  error?: string;
}

export interface AlertExport {
  stream: Readable;
  /** Resolves when the stream ended (or failed). */
  done: Promise<ExportOutcome>;
}

function encodeToken(rowKey: string): string {
  return Buffer.from(JSON.stringify({ k: rowKey }), "utf8").toString("base64url");
}

function decodeToken(token: string): string {
  if (token.length <= MAX_TOKEN_LENGTH) {
    try {
      const parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { k?: unknown };
      if (typeof parsed.k === "string" && parsed.k !== "" && !parsed.k.startsWith("~")) return parsed.k;
    } catch {
      // falls through
    }
  }
  throw new ApiError(400, "InvalidContinuationToken", "continuationToken is not valid.");
}

/** Validates the query (no storage call). */
export function parseExportQuery(query: URLSearchParams): { after?: string } {
  const unknown = [...query.keys()].filter((k) => k !== "continuationToken");
  if (unknown.length > 0) throw new ApiError(400, "UnknownParameter", `Unknown parameter(s): ${unknown.join(", ")}.`);
  const token = query.get("continuationToken");
  return token === null ? {} : { after: decodeToken(token) };
}

export async function exportAlerts(svc: Services, tenantId: string, query: URLSearchParams, log: Logger): Promise<AlertExport> {
  const { after } = parseExportQuery(query);
  if (!(await getTenant(svc.storage.table(TABLES.tenants), tenantId))) {
    throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
  }
  const tables: AlertTables = { alerts: svc.storage.table(TABLES.alerts), bodies: svc.storage.table(TABLES.alertBodies) };
  const limit = svc.config.lifecycle.exportPageAlerts;
  const outcome: ExportOutcome = { alerts: 0, more: false };

  async function* lines(): AsyncGenerator<Buffer> {
    const filter = after
      ? `${odata`PartitionKey eq ${tenantId} and RowKey gt ${after}`} and ${ALERT_ROWS_ONLY}`
      : `${odata`PartitionKey eq ${tenantId}`} and ${ALERT_ROWS_ONLY}`;
    let last: string | undefined;
    for await (const page of tables.alerts.listEntities<Record<string, unknown>>({ queryOptions: { filter } }).byPage({ maxPageSize: PAGE_ROWS })) {
      for (const row of page) {
        if (outcome.alerts === limit) {
          outcome.more = true;
          yield Buffer.from(`${JSON.stringify({ next: encodeToken(last!) })}\n`, "utf8");
          return;
        }
        const json = await bodyOf(tables, tenantId, row);
        last = String(row.rowKey);
        if (!json) continue; // deleted (retention) while the page was read
        yield Buffer.concat([oneLine(json), NEWLINE]);
        outcome.alerts++;
      }
    }
  }

  const gzip = createGzip();
  // The invocation's logger is done once the handler returns: the outcome goes to the audit entry.
  log.info(`export.started tenantId=${tenantId} continued=${after !== undefined}`);
  const done = new Promise<ExportOutcome>((resolve) => {
    pipeline(Readable.from(lines(), { objectMode: false }), gzip, (err) => {
      if (err) outcome.error = errorName(err);
      resolve(outcome);
    });
  });
  return { stream: gzip, done };
}

const NEWLINE = Buffer.from("\n");

function oneLine(json: Buffer): Buffer {
  if (!json.includes(0x0a) && !json.includes(0x0d)) return json;
  const copy = Buffer.from(json);
  for (let i = 0; i < copy.length; i++) if (copy[i] === 0x0a || copy[i] === 0x0d) copy[i] = 0x20;
  return copy;
}

/** The alert's exact JSON from a listed row (its inline parts plus overflow rows). */
async function bodyOf(tables: AlertTables, tenantId: string, row: Record<string, unknown>): Promise<Buffer | undefined> {
  try {
    const parts: Uint8Array[] = [];
    for (let i = 0; row[`body${i}`] !== undefined; i++) parts.push(row[`body${i}`] as Uint8Array);
    const overflow = Number(row.bodyOverflow ?? 0);
    for (let i = 0; i < overflow; i++) {
      let part: Record<string, unknown>;
      try {
        part = await tables.bodies.getEntity(tenantId, overflowKey(String(row.rowKey), String(row.bodyKey), i));
      } catch (err) {
        if (isStatus(err, 404)) throw new BodyPartMissingError();
        throw err;
      }
      for (let j = 0; part[`body${j}`] !== undefined; j++) parts.push(part[`body${j}`] as Uint8Array);
    }
    const json = gunzipSync(Buffer.concat(parts));
    if (sha256Hex(json) === row.bodySha256) return json;
  } catch (err) {
    if (!(err instanceof BodyPartMissingError)) throw err;
  }
  // Replaced while it was being read: read the current version (readAlertJson retries once).
  return readAlertJson(tables, tenantId, String(row.alertId));
}
