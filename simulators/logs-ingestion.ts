import type { IncomingMessage, ServerResponse } from "node:http";
import { gunzipSync } from "node:zlib";
import { HttpsFake } from "./https.js";
import type { TestCerts } from "./tls.js";

/**
 * Fake Azure Monitor Logs Ingestion API, the endpoint of a data collection rule (DCR) of
 * kind Direct, as `@azure/monitor-ingestion` 1.x calls it:
 *
 *   POST /dataCollectionRules/{immutableId}/streams/{stream}?api-version=2023-01-01
 *   Authorization: Bearer <token for https://monitor.azure.com>
 *   Content-Encoding: gzip (optional), Content-Type: application/json
 *   body: a JSON array of records                              -> 204 No Content
 *
 * What it checks, each with an `{"error":{"code","message"}}` answer:
 * - api-version 2023-01-01 (400 InvalidApiVersion);
 * - the bearer token, with `verifyToken(token, audience)` when given (401 InvalidToken);
 * - the rule's immutable id (404 DataCollectionRuleNotFound) and its declared stream
 *   (400 InvalidStream): declare them with `addRule`;
 * - 1 MB per call, compressed or not (`maxBodyBytes`, default 1 MiB; 413
 *   ContentLengthLimitExceeded);
 * - a JSON array of objects (400 InvalidPayload);
 * - a rate limit per rule (`requestsPerMinute`, default 12,000; 429 with Retry-After).
 *
 * Records are kept as the service would store them: fields longer than 64 KB
 * (`maxFieldBytes`) are truncated and listed in `truncatedFields`; columns the stream does
 * not declare are dropped and listed in `unknownColumns`; values that do not fit the
 * declared type are listed in `typeProblems`. Tests assert on `records()` and `requestLog`.
 *
 * Faults: `failNext(n, status)` (429 carries Retry-After), and `rejectRecords(predicate)`,
 * which fails every call holding a matching record (a partial failure of a multi-call
 * upload that does not depend on the order the SDK's parallel calls arrive in).
 */

export type ColumnType = "string" | "int" | "long" | "real" | "boolean" | "datetime" | "dynamic";

export interface FakeLogsIngestionOptions {
  certs: TestCerts;
  port?: number;
  /** Host name in `url` (default 127.0.0.1; the test certificate also covers *.localhost). */
  host?: string;
  /** Checks a bearer token for the audience, e.g. `(t, aud) => identity.isValid(t, aud)`. Without it any bearer token is accepted. */
  verifyToken?: (token: string, audience: string) => boolean | Promise<boolean>;
  /** Token audience (default https://monitor.azure.com). */
  audience?: string;
  maxBodyBytes?: number;
  maxFieldBytes?: number;
  requestsPerMinute?: number;
  /** Keep each record for `records()` (default true); false only counts them (benchmark, sandbox). */
  keepRecords?: boolean;
  /** Called with each record stored (also when keepRecords is false), e.g. to count alerts without keeping rows. */
  onRecord?: (record: IngestedRecord) => void;
  now?: () => number;
}

export interface IngestedRecord {
  ruleId: string;
  stream: string;
  /** Order of the call among all calls to the fake, from 1. */
  requestSeq: number;
  record: Record<string, unknown>;
  /** Bytes of the record's JSON as received. */
  bytes: number;
  truncatedFields: string[];
  unknownColumns: string[];
  typeProblems: string[];
}

export interface IngestionRequest {
  seq: number;
  ruleId: string;
  stream: string;
  status: number;
  /** Error code of a refused call. */
  code?: string;
  gzip: boolean;
  /** Body bytes as sent (compressed when gzip) and after decompression. */
  wireBytes: number;
  bytes: number;
  records: number;
  time: number;
}

export type IngestionFault = { status: number; retryAfterSec?: number; code?: string };

const API_VERSION = "2023-01-01";
const MIB = 1024 * 1024;

export class FakeLogsIngestion extends HttpsFake {
  readonly audience: string;
  maxBodyBytes: number;
  maxFieldBytes: number;
  requestsPerMinute: number;
  now: () => number;
  readonly requestLog: IngestionRequest[] = [];
  private readonly received: IngestedRecord[] = [];
  private readonly rules = new Map<string, Map<string, Map<string, ColumnType>>>();
  private readonly faults: IngestionFault[] = [];
  private rejecters: { match: (record: Record<string, unknown>) => boolean; fault: IngestionFault }[] = [];
  private readonly calls = new Map<string, number[]>();
  private readonly seen = new Set<string>();
  private seq = 0;
  private stored = 0;

  constructor(private readonly options: FakeLogsIngestionOptions) {
    super("FakeLogsIngestion", options);
    this.audience = options.audience ?? "https://monitor.azure.com";
    this.maxBodyBytes = options.maxBodyBytes ?? MIB;
    this.maxFieldBytes = options.maxFieldBytes ?? 64 * 1024;
    this.requestsPerMinute = options.requestsPerMinute ?? 12_000;
    this.now = options.now ?? Date.now;
  }

  /** Declares a rule (its immutable id) and its input streams with their columns. */
  addRule(immutableId: string, streams: Record<string, readonly { name: string; type: ColumnType }[]>): void {
    const map = new Map<string, Map<string, ColumnType>>();
    for (const [stream, columns] of Object.entries(streams)) map.set(stream, new Map(columns.map((c) => [c.name, c.type])));
    this.rules.set(immutableId, map);
  }

  /** The next `n` calls fail with `status` (429 with Retry-After, default 1 s). */
  failNext(n: number, status: number, options: { retryAfterSec?: number; code?: string } = {}): void {
    for (let i = 0; i < n; i++) this.faults.push({ status, ...options });
  }

  /** Every call holding a record that matches fails with `status` (until `clearRejects`). */
  rejectRecords(match: (record: Record<string, unknown>) => boolean, status = 500, options: { retryAfterSec?: number; code?: string } = {}): void {
    this.rejecters.push({ match, fault: { status, ...options } });
  }

  clearRejects(): void {
    this.rejecters = [];
  }

  /** Records stored so far, oldest first (optionally of one stream). */
  records(stream?: string): IngestedRecord[] {
    return this.received.filter((r) => stream === undefined || r.stream === stream);
  }

  /** Records stored since the last reset (counted even with keepRecords false). */
  get receivedCount(): number {
    return this.stored;
  }

  /** Bearer tokens received (8+ chars), for the leak check. */
  secretsSeen(): string[] {
    return [...this.seen];
  }

  reset(): void {
    this.received.length = 0;
    this.stored = 0;
    this.requestLog.length = 0;
    this.faults.length = 0;
    this.rejecters = [];
    this.calls.clear();
  }

  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://ingest");
    const match = /^\/dataCollectionRules\/([^/]+)\/streams\/([^/]+)\/?$/.exec(url.pathname);
    const ruleId = decodeURIComponent(match?.[1] ?? "");
    const stream = decodeURIComponent(match?.[2] ?? "");
    const gzip = /gzip/i.test(String(req.headers["content-encoding"] ?? ""));
    const entry: IngestionRequest = { seq: ++this.seq, ruleId, stream, status: 0, gzip, wireBytes: 0, bytes: 0, records: 0, time: this.now() };
    this.requestLog.push(entry);
    const answer = (status: number, code?: string, message?: string, headers: Record<string, string> = {}) => {
      entry.status = status;
      if (code) entry.code = code;
      if (status === 204) {
        res.writeHead(204, headers);
        res.end();
        return;
      }
      const body = JSON.stringify({ error: { code, message } });
      res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body), ...headers });
      res.end(body);
    };

    let wire: Buffer;
    try {
      wire = await readAll(req, this.maxBodyBytes * 4);
    } catch {
      return answer(413, "ContentLengthLimitExceeded", "The request body is larger than the limit.");
    }
    entry.wireBytes = wire.length;
    if (req.method !== "POST" || !match) return answer(404, "NotFound", "Unknown path.");
    if (url.searchParams.get("api-version") !== API_VERSION) {
      return answer(400, "InvalidApiVersion", `The api-version must be ${API_VERSION}.`);
    }
    const auth = String(req.headers.authorization ?? "");
    const token = /^Bearer (.+)$/.exec(auth)?.[1];
    if (token && token.length >= 8) this.seen.add(token);
    if (!token || (this.options.verifyToken && !(await this.options.verifyToken(token, this.audience)))) {
      return answer(401, "InvalidToken", `The bearer token is missing, expired or not for ${this.audience}.`);
    }
    const rule = this.rules.get(ruleId);
    if (!rule) return answer(404, "DataCollectionRuleNotFound", "No data collection rule with this immutable id.");
    const columns = rule.get(stream);
    if (!columns) return answer(400, "InvalidStream", "The rule declares no such stream.");
    if (wire.length > this.maxBodyBytes) return answer(413, "ContentLengthLimitExceeded", "The compressed body is larger than 1 MB.");
    let body: Buffer;
    try {
      body = gzip ? gunzipSync(wire, { maxOutputLength: this.maxBodyBytes + 1 }) : wire;
    } catch (err) {
      if ((err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
        return answer(413, "ContentLengthLimitExceeded", "The uncompressed body is larger than 1 MB.");
      }
      return answer(400, "InvalidContentEncoding", "The body is not valid gzip.");
    }
    entry.bytes = body.length;
    if (body.length > this.maxBodyBytes) return answer(413, "ContentLengthLimitExceeded", "The uncompressed body is larger than 1 MB.");
    let records: unknown;
    try {
      records = JSON.parse(body.toString("utf8"));
    } catch {
      return answer(400, "InvalidPayload", "The body is not JSON.");
    }
    if (!Array.isArray(records) || records.some((r) => typeof r !== "object" || r === null || Array.isArray(r))) {
      return answer(400, "InvalidPayload", "The body must be a JSON array of objects.");
    }
    const rows = records as Record<string, unknown>[];
    entry.records = rows.length;

    const now = this.now();
    const recent = (this.calls.get(ruleId) ?? []).filter((t) => t > now - 60_000);
    this.calls.set(ruleId, recent);
    if (recent.length >= this.requestsPerMinute) {
      const wait = Math.max(1, Math.ceil(((recent[0] ?? now) + 60_000 - now) / 1000));
      return answer(429, "TooManyRequests", "Too many requests for this rule.", { "Retry-After": String(wait) });
    }
    recent.push(now);

    const fault = this.faults.shift() ?? this.rejecters.find((r) => rows.some(r.match))?.fault;
    if (fault) {
      const headers: Record<string, string> = {};
      if (fault.retryAfterSec !== undefined || fault.status === 429) headers["Retry-After"] = String(fault.retryAfterSec ?? 1);
      return answer(fault.status, fault.code ?? (fault.status === 429 ? "TooManyRequests" : "InjectedFailure"), "Injected failure.", headers);
    }

    this.stored += rows.length;
    if (this.options.keepRecords !== false || this.options.onRecord) {
      for (const row of rows) {
        const stored = this.store(ruleId, stream, columns, row, entry.seq);
        if (this.options.keepRecords !== false) this.received.push(stored);
        this.options.onRecord?.(stored);
      }
    }
    answer(204);
  }

  private store(ruleId: string, stream: string, columns: Map<string, ColumnType>, row: Record<string, unknown>, requestSeq: number): IngestedRecord {
    const record: Record<string, unknown> = {};
    const truncatedFields: string[] = [];
    const unknownColumns: string[] = [];
    const typeProblems: string[] = [];
    for (const [name, value] of Object.entries(row)) {
      const type = columns.get(name);
      if (!type) {
        unknownColumns.push(name);
        continue;
      }
      if (!fits(type, value)) typeProblems.push(`${name} is not a ${type}`);
      const text = typeof value === "string" ? value : JSON.stringify(value);
      if (Buffer.byteLength(text) > this.maxFieldBytes) {
        truncatedFields.push(name);
        record[name] = Buffer.from(text).subarray(0, this.maxFieldBytes).toString("utf8");
      } else record[name] = value;
    }
    return { ruleId, stream, requestSeq, record, bytes: Buffer.byteLength(JSON.stringify(row)), truncatedFields, unknownColumns, typeProblems };
  }
}

function fits(type: ColumnType, value: unknown): boolean {
  if (value === null) return true;
  switch (type) {
    case "string":
      return typeof value === "string";
    case "int":
    case "long":
      return typeof value === "number" && Number.isInteger(value);
    case "real":
      return typeof value === "number";
    case "boolean":
      return typeof value === "boolean";
    case "datetime":
      return typeof value === "string" && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})$/.test(value);
    case "dynamic":
      return true;
  }
}

async function readAll(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    size += buf.length;
    if (size > limit) throw new Error("too large");
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}
