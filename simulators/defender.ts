/**
 * An HTTPS fake of the Microsoft Defender for Endpoint alerts API (`GET /api/alerts`,
 * `GET /api/alerts/{id}`), with the quirks of the real service that a collector must
 * survive: items come back unsorted in an order that changes whenever the tenant's data
 * changes, `$top` (at most 10,000) disables `@odata.nextLink`, pages without `$top` are
 * capped and linked with `$skip`, `evidence` is `[]` unless `$expand=evidence`, and
 * timestamps carry up to 7 fractional digits that `$filter` compares at full precision.
 *
 * Tests get per-tenant data sets, fault injection (429 with Retry-After, 500/503,
 * connection resets, delays, truncated bodies), an optional per-tenant rate limit, a
 * hook that runs before each response, and a request log stamped by an injectable clock.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { AlertFake, delay, type Fault, type Rec as AlertRec, type TenantState as AlertTenantState } from "./alert-fake.js";
import { type DefenderAlert, parseTimestamp, toTicks } from "./alerts.js";

export type { Fault };

export interface FilterComparison {
  property: string;
  op: "eq" | "ne" | "gt" | "ge" | "lt" | "le";
  /** The literal as written in the request. */
  value: string;
}

export interface RequestLogEntry {
  /** Order among all requests to this fake, from 1. */
  seq: number;
  /** null when the bearer token was missing or rejected. */
  tenantId: string | null;
  /** Order among this tenant's requests, from 1 (0 when unauthenticated). */
  requestNumber: number;
  /** `now()` when the request arrived. */
  time: number;
  method: string;
  path: string;
  /** Decoded query parameters. */
  query: Record<string, string>;
  /** Comparisons found in a valid $filter, e.g. the queried lastUpdateTime window. */
  comparisons: FilterComparison[];
  /** Final HTTP status; 0 for a reset connection. */
  status: number;
  fault: Fault | null;
  /** Alerts in the response body (list or single), else 0. */
  itemCount: number;
  nextLink: string | null;
  /** Body bytes written. */
  bytes: number;
  /** Wall-clock milliseconds from arrival to the end of the response (not `now()`), to tell the fake's cost apart. */
  elapsedMs: number;
}

export interface RequestContext {
  tenantId: string;
  requestNumber: number;
  entry: RequestLogEntry;
  fake: FakeDefender;
}

export type BeforeResponseHook = (context: RequestContext) => void | Promise<void>;

export interface FakeDefenderOptions {
  certs: { key: string; cert: string };
  /** Default 0 (any free port). */
  port?: number;
  /** Listen address, default 127.0.0.1. */
  host?: string;
  /** Host name in `url`, default 127.0.0.1 (the test certificate covers it and *.localhost). */
  hostname?: string;
  /** Maps a bearer token to its tenant; null means 401, `forbidden` a 403 with that message. */
  authenticate: (bearer: string) => Promise<{ tenantId: string; forbidden?: string } | null>;
  /** Clock for the request log and the rate limit; default Date.now. */
  now?: () => number;
  /** Largest accepted $top; default 10,000 like the real API. */
  maxTop?: number;
  /** Items per page when $top is absent; default 10,000 like the real API. */
  defaultPageSize?: number;
  /** Answer 429 once a tenant exceeds these many requests in the last minute / hour (by `now()`). */
  rateLimit?: { perMinute?: number; perHour?: number };
  beforeResponse?: BeforeResponseHook;
}

type Rec = AlertRec<DefenderAlert>;
type TenantState = AlertTenantState<DefenderAlert, RequestLogEntry>;

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const LIST_CONTENT_TYPE = "application/json; odata.metadata=minimal";
const ERROR_CONTENT_TYPE = "application/json; charset=utf-8";
const CHUNK_CHARS = 256 * 1024;
const ALLOWED_OPTIONS = new Set(["$filter", "$top", "$skip", "$expand"]);

export class FakeDefender extends AlertFake<DefenderAlert, RequestLogEntry> {
  /**
   * Runs for each authenticated request before faults are applied and the response is
   * computed; it may change alerts (e.g. between two pages) or inject faults.
   */
  beforeResponse: BeforeResponseHook | undefined;

  private readonly options: FakeDefenderOptions;
  /** Clock for the request log and the rate limit (a test may swap in a virtual one). */
  now: () => number;
  /**
   * When set, a page holds at most this many items even under a larger `$top`, and links
   * the rest with `@odata.nextLink` (as Graph does): collectors must follow it.
   */
  clampTop: number | undefined;
  /** When set, nextLinks point at this origin instead of the fake's own. */
  nextLinkOrigin: string | undefined;
  private readonly maxTop: number;
  private readonly defaultPageSize: number;
  private seq = 0;

  constructor(options: FakeDefenderOptions) {
    super({
      name: "FakeDefender",
      listen: options,
      forbiddenMessage:
        "The application does not have any of the required application permissions (Alert.ReadWrite.All, Alert.Read.All) to access the resource.",
      touchSeed: "touch",
      orderSalt: "",
    });
    this.options = options;
    this.now = options.now ?? Date.now;
    this.clampTop = undefined;
    this.nextLinkOrigin = undefined;
    this.maxTop = options.maxTop ?? 10_000;
    this.defaultPageSize = options.defaultPageSize ?? 10_000;
    this.beforeResponse = options.beforeResponse;
  }

  protected internalError(_req: IncomingMessage, res: ServerResponse, err: unknown): void {
    sendJson(res, 500, ERROR_CONTENT_TYPE, errorBody("InternalServerError", String(err)));
  }

  protected toRec(alert: DefenderAlert): Rec {
    return { alert, updated: toTicks(alert.lastUpdateTime), created: toTicks(alert.alertCreationTime) };
  }

  protected retouch(alert: DefenderAlert, changes: Partial<DefenderAlert>, lastUpdateTime: string): DefenderAlert {
    return { ...alert, ...changes, lastUpdateTime };
  }

  // -------------------------------------------------------------------------
  // HTTP.

  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = new URL(req.url ?? "/", "https://fake.invalid");
    const query: Record<string, string> = {};
    for (const [k, v] of parsed.searchParams) query[k] = v;
    const entry: RequestLogEntry = {
      seq: ++this.seq,
      tenantId: null,
      requestNumber: 0,
      time: this.now(),
      method: req.method ?? "GET",
      path: parsed.pathname,
      query,
      comparisons: [],
      status: 0,
      fault: null,
      itemCount: 0,
      nextLink: null,
      bytes: 0,
      elapsedMs: 0,
    };
    this.log.push(entry);
    const started = performance.now();
    res.once("close", () => {
      entry.elapsedMs = performance.now() - started;
    });

    const auth = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
    let principal: { tenantId: string; forbidden?: string } | null = null;
    if (auth?.[1]) {
      try {
        principal = await this.options.authenticate(auth[1]);
      } catch {
        principal = null;
      }
    }
    let tenant: TenantState | null = null;
    if (principal) {
      tenant = this.tenant(principal.tenantId);
      entry.tenantId = principal.tenantId;
      tenant.log.push(entry);
      entry.requestNumber = tenant.log.length;
      if (this.beforeResponse) {
        await this.beforeResponse({ tenantId: principal.tenantId, requestNumber: entry.requestNumber, entry, fake: this });
      }
    }

    let fault = this.takeFault(tenant);
    if (fault && "delayMs" in fault) {
      entry.fault = fault;
      await delay(fault.delayMs, this.stopping.signal);
      fault = null;
    }
    if (fault) entry.fault = fault;
    if (fault && "reset" in fault) {
      req.socket.destroy();
      return;
    }
    if (fault && "status" in fault) {
      const headers: Record<string, string> = {};
      if (fault.status === 429 || fault.retryAfterSeconds !== undefined) {
        headers["retry-after"] = String(fault.retryAfterSeconds ?? 1);
      }
      const err =
        fault.status === 429
          ? errorBody("TooManyRequests", `Rate limit is exceeded. Try again in ${headers["retry-after"]} seconds.`)
          : errorBody(fault.status === 500 ? "InternalServerError" : "ServiceUnavailable", "");
      entry.status = fault.status;
      entry.bytes = sendJson(res, fault.status, ERROR_CONTENT_TYPE, err, headers);
      return;
    }
    const truncateAfter = fault && "truncateAfterBytes" in fault ? fault.truncateAfterBytes : null;

    try {
      if (!tenant || !principal) {
        throw new HttpError(401, "Unauthorized", "Unauthorized (invalid or expired authorization header).", {
          "www-authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"',
        });
      }
      if (principal.forbidden !== undefined) throw new HttpError(403, "Forbidden", principal.forbidden);
      if (tenant.forbidden !== null) throw new HttpError(403, "Forbidden", tenant.forbidden);
      this.enforceRateLimit(tenant, entry);
      if (entry.method !== "GET") throw new HttpError(405, "BadRequest", `The requested resource does not support http method '${entry.method}'.`);
      const body = this.route(req, tenant, entry, parsed.pathname);
      entry.status = 200;
      const out = new Writer(res, truncateAfter);
      res.writeHead(200, { "content-type": LIST_CONTENT_TYPE, "odata-version": "4.0" });
      await body(out);
      entry.bytes = out.bytes;
      if (out.truncated) {
        entry.status = 0;
        return;
      }
      res.end();
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      entry.status = err.status;
      entry.itemCount = 0;
      entry.nextLink = null;
      entry.bytes = sendJson(res, err.status, ERROR_CONTENT_TYPE, errorBody(err.code, err.message), err.headers);
    }
  }

  private enforceRateLimit(tenant: TenantState, entry: RequestLogEntry): void {
    const wait = this.rateLimitWait(this.options.rateLimit, tenant, entry);
    if (wait !== null) {
      throw new HttpError(429, "TooManyRequests", `Rate limit is exceeded. Try again in ${wait} seconds.`, {
        "retry-after": String(wait),
      });
    }
  }

  /** Validates the request and returns the body writer; throws HttpError for 4xx. */
  private route(
    req: IncomingMessage,
    tenant: TenantState,
    entry: RequestLogEntry,
    path: string,
  ): (out: Writer) => Promise<void> {
    const origin = `https://${req.headers.host ?? new URL(this.url).host}`;
    const single = /^\/api\/alerts\/([^/]+)\/?$/.exec(path);
    if (single?.[1]) {
      let id: string;
      try {
        id = decodeURIComponent(single[1]);
      } catch {
        throw new HttpError(400, "BadRequest", `Invalid alert id '${single[1]}'.`);
      }
      const rec = tenant.byId.get(id);
      if (!rec) throw new HttpError(404, "ResourceNotFound", `Alert ${id} was not found`);
      entry.itemCount = 1;
      const json = JSON.stringify(rec.alert);
      const context = JSON.stringify(`${origin}/api/$metadata#Alerts/$entity`);
      return (out) => out.write(`{"@odata.context":${context}${json.length > 2 ? "," : ""}${json.slice(1)}`);
    }
    if (!/^\/api\/alerts\/?$/.test(path)) throw new HttpError(404, "NotFound", `No HTTP resource was found that matches the request URI '${path}'.`);

    const q = entry.query;
    for (const key of Object.keys(q)) {
      if (key.startsWith("$") && !ALLOWED_OPTIONS.has(key)) {
        throw odataError(
          `Query option '${key.slice(1)}' is not allowed. To allow it, set the 'AllowedQueryOptions' property on EnableQueryAttribute or QueryValidationSettings.`,
        );
      }
    }
    const predicate = q.$filter !== undefined ? compileFilter(q.$filter, entry.comparisons) : null;
    const top = q.$top !== undefined ? parseCount("$top", q.$top) : null;
    if (top !== null && top > this.maxTop) {
      throw odataError(`The limit of '${this.maxTop}' for Top query has been exceeded. The value from the incoming request is '${top}'.`);
    }
    const skip = q.$skip !== undefined ? parseCount("$skip", q.$skip) : 0;
    let expand = false;
    if (q.$expand !== undefined) {
      for (const part of q.$expand.split(",")) {
        const name = part.trim();
        if (name.toLowerCase() !== "evidence") {
          throw odataError(`Could not find a property named '${name}' on type 'Alert'.`);
        }
        expand = true;
      }
    }

    const ordered = this.orderedRecs(tenant);
    const clamped = top !== null && this.clampTop !== undefined && top > this.clampTop;
    const limit = clamped ? (this.clampTop as number) : (top ?? this.defaultPageSize);
    const page: Rec[] = [];
    let matched = 0;
    let more = false;
    for (const rec of ordered) {
      if (predicate && !predicate(rec)) continue;
      matched++;
      if (matched <= skip) continue;
      if (page.length >= limit) {
        more = true;
        break;
      }
      page.push(rec);
    }
    entry.itemCount = page.length;
    let tail = "]}";
    if ((top === null || clamped) && more) {
      const params = Object.entries(q)
        .filter(([k]) => k !== "$skip")
        .map(([k, v]) => `${k}=${encodeURIComponent(v)}`);
      params.push(`$skip=${skip + page.length}`);
      entry.nextLink = `${this.nextLinkOrigin ?? origin}/api/alerts?${params.join("&")}`;
      tail = `],"@odata.nextLink":${JSON.stringify(entry.nextLink)}}`;
    }
    const head = `{"@odata.context":${JSON.stringify(`${origin}/api/$metadata#Alerts`)},"value":[`;
    return async (out) => {
      let chunk = head;
      for (let i = 0; i < page.length; i++) {
        const alert = (page[i] as Rec).alert;
        if (i > 0) chunk += ",";
        chunk += JSON.stringify(expand ? alert : { ...alert, evidence: [] });
        if (chunk.length >= CHUNK_CHARS) {
          await out.write(chunk);
          if (out.stopped) return;
          chunk = "";
        }
      }
      await out.write(chunk + tail);
    };
  }
}

/** Writes body text with backpressure, optionally cutting the connection after N bytes. */
class Writer {
  bytes = 0;
  truncated = false;
  constructor(
    private readonly res: ServerResponse,
    private readonly truncateAfter: number | null,
  ) {}

  /** True once nothing more can be written (truncated, or the client went away). */
  get stopped(): boolean {
    return this.truncated || this.res.destroyed;
  }

  async write(text: string): Promise<void> {
    if (this.truncated || this.res.destroyed) return;
    let data: string | Buffer = text;
    if (this.truncateAfter !== null) {
      const buf = Buffer.from(text);
      if (this.bytes + buf.length >= this.truncateAfter) {
        const part = buf.subarray(0, Math.max(0, this.truncateAfter - this.bytes));
        this.bytes += part.length;
        this.truncated = true;
        const socket = this.res.socket;
        this.res.write(part, () => socket?.destroy());
        return;
      }
      data = buf;
    }
    this.bytes += typeof data === "string" ? Buffer.byteLength(data) : data.length;
    if (!this.res.write(data)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.res.off("drain", done);
          this.res.off("close", done);
          resolve();
        };
        this.res.on("drain", done);
        this.res.on("close", done);
      });
    }
  }
}

// ---------------------------------------------------------------------------
// $filter: a small OData subset. Comparisons (eq ne gt ge lt le) of a property with a
// literal, combined with and/or/not and parentheses. Datetime literals are unquoted
// (`lastUpdateTime ge 2024-01-01T00:00:00.1234567Z`, also date-only or with an offset)
// and compared as 100-ns ticks; strings are single-quoted; numbers are integers.

type Predicate = (rec: Rec) => boolean;
type Kind = "datetime" | "string" | "number";

const PROPERTIES: Record<string, { name: string; kind: Kind; get: (rec: Rec) => bigint | string | number | null }> = {};
for (const [name, kind, get] of [
  ["lastUpdateTime", "datetime", (rec: Rec) => rec.updated],
  ["alertCreationTime", "datetime", (rec: Rec) => rec.created],
  ["lastEventTime", "datetime", (rec: Rec) => (rec.alert.lastEventTime ? parseTimestamp(rec.alert.lastEventTime) : null)],
  ["firstEventTime", "datetime", (rec: Rec) => (rec.alert.firstEventTime ? parseTimestamp(rec.alert.firstEventTime) : null)],
  ["id", "string", (rec: Rec) => rec.alert.id],
  ["status", "string", (rec: Rec) => rec.alert.status],
  ["severity", "string", (rec: Rec) => rec.alert.severity],
  ["category", "string", (rec: Rec) => rec.alert.category],
  ["detectionSource", "string", (rec: Rec) => rec.alert.detectionSource],
  ["assignedTo", "string", (rec: Rec) => rec.alert.assignedTo],
  ["incidentId", "number", (rec: Rec) => rec.alert.incidentId],
  ["investigationId", "number", (rec: Rec) => rec.alert.investigationId],
] as const) {
  PROPERTIES[name.toLowerCase()] = { name, kind, get };
}

type Token =
  | { t: "(" | ")" }
  | { t: "word"; v: string }
  | { t: "datetime"; v: string }
  | { t: "string"; v: string }
  | { t: "number"; v: string }
  | { t: "null" };

const DATETIME_TOKEN = /\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?/y;

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === " " || c === "\t") {
      i++;
    } else if (c === "(" || c === ")") {
      tokens.push({ t: c });
      i++;
    } else if (c === "'") {
      let v = "";
      i++;
      for (;;) {
        if (i >= text.length) throw odataError(`There is an unterminated string literal in '${text}'.`);
        if (text[i] === "'") {
          if (text[i + 1] === "'") {
            v += "'";
            i += 2;
            continue;
          }
          i++;
          break;
        }
        v += text[i];
        i++;
      }
      tokens.push({ t: "string", v });
    } else if (/\d/.test(c)) {
      DATETIME_TOKEN.lastIndex = i;
      const m = DATETIME_TOKEN.exec(text);
      if (m) {
        tokens.push({ t: "datetime", v: m[0] });
        i += m[0].length;
      } else {
        const n = /\d+/y;
        n.lastIndex = i;
        const v = (n.exec(text) as RegExpExecArray)[0];
        tokens.push({ t: "number", v });
        i += v.length;
      }
      if (i < text.length && /[\w:.-]/.test(text[i] as string)) {
        throw odataError(`Syntax error at position ${i} in '${text}'.`);
      }
    } else if (c === "-" && /\d/.test(text[i + 1] ?? "")) {
      const n = /-\d+/y;
      n.lastIndex = i;
      const v = (n.exec(text) as RegExpExecArray)[0];
      tokens.push({ t: "number", v });
      i += v.length;
    } else if (/[A-Za-z_]/.test(c)) {
      const w = /[A-Za-z_]\w*/y;
      w.lastIndex = i;
      const v = (w.exec(text) as RegExpExecArray)[0];
      tokens.push(v === "null" ? { t: "null" } : { t: "word", v });
      i += v.length;
    } else {
      throw odataError(`Syntax error: character '${c}' is not valid at position ${i} in '${text}'.`);
    }
  }
  return tokens;
}

const COMPARISON_OPS = new Set(["eq", "ne", "gt", "ge", "lt", "le"]);

function compileFilter(text: string, comparisons: FilterComparison[]): Predicate {
  const tokens = tokenize(text);
  let pos = 0;
  const found: FilterComparison[] = [];
  const peekWord = (): string | null => {
    const tok = tokens[pos];
    return tok?.t === "word" ? tok.v : null;
  };

  const parseOr = (): Predicate => {
    let left = parseAnd();
    while (peekWord() === "or") {
      pos++;
      const l = left;
      const r = parseAnd();
      left = (rec) => l(rec) || r(rec);
    }
    return left;
  };
  const parseAnd = (): Predicate => {
    let left = parseUnary();
    while (peekWord() === "and") {
      pos++;
      const l = left;
      const r = parseUnary();
      left = (rec) => l(rec) && r(rec);
    }
    return left;
  };
  const parseUnary = (): Predicate => {
    if (peekWord() === "not") {
      pos++;
      const inner = parseUnary();
      return (rec) => !inner(rec);
    }
    const tok = tokens[pos];
    if (tok?.t === "(") {
      pos++;
      const inner = parseOr();
      if (tokens[pos]?.t !== ")") throw odataError(`')' or operator expected at position ${pos} in '${text}'.`);
      pos++;
      return inner;
    }
    return parseComparison();
  };
  const parseComparison = (): Predicate => {
    const propTok = tokens[pos];
    if (propTok?.t !== "word") throw odataError(`Expression expected at position ${pos} in '${text}'.`);
    const prop = PROPERTIES[propTok.v.toLowerCase()];
    if (!prop) throw odataError(`Could not find a property named '${propTok.v}' on type 'Alert'.`);
    const opTok = tokens[pos + 1];
    if (opTok?.t !== "word" || !COMPARISON_OPS.has(opTok.v)) {
      throw odataError(`Syntax error: a comparison operator was expected after '${propTok.v}' in '${text}'.`);
    }
    const op = opTok.v as FilterComparison["op"];
    const lit = tokens[pos + 2];
    if (!lit || lit.t === "(" || lit.t === ")" || lit.t === "word") {
      throw odataError(`Expression expected after '${op}' in '${text}'.`);
    }
    pos += 3;
    let value: bigint | string | number | null;
    if (lit.t === "null") {
      value = null;
    } else if (prop.kind === "datetime" && lit.t === "datetime") {
      value = parseTimestamp(lit.v);
      if (value === null) throw odataError(`The DateTimeOffset text '${lit.v}' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range.`);
    } else if (prop.kind === "string" && lit.t === "string") {
      value = lit.v;
    } else if (prop.kind === "number" && lit.t === "number") {
      value = Number(lit.v);
    } else {
      const found = lit.t === "datetime" ? "Edm.DateTimeOffset" : lit.t === "string" ? "Edm.String" : "Edm.Int32";
      const expected = prop.kind === "datetime" ? "Edm.DateTimeOffset" : prop.kind === "string" ? "Edm.String" : "Edm.Int32";
      throw odataError(
        `A binary operator with incompatible types was detected. Found operand types '${expected}' and '${found}' for operator kind '${op}'.`,
      );
    }
    found.push({ property: prop.name, op, value: "v" in lit ? lit.v : "null" });
    return comparator(prop.get, op, value);
  };

  const predicate = parseOr();
  if (pos !== tokens.length) throw odataError(`Syntax error at position ${pos} in '${text}'.`);
  comparisons.push(...found);
  return predicate;
}

function comparator(
  get: (rec: Rec) => bigint | string | number | null,
  op: FilterComparison["op"],
  value: bigint | string | number | null,
): Predicate {
  return (rec) => {
    const actual = get(rec);
    if (op === "eq") return actual === value;
    if (op === "ne") return actual !== value;
    if (actual === null || value === null) return false;
    switch (op) {
      case "gt":
        return actual > value;
      case "ge":
        return actual >= value;
      case "lt":
        return actual < value;
      default:
        return actual <= value;
    }
  };
}

function parseCount(name: string, text: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text)) || Number(text) > 2_147_483_647) {
    throw odataError(`Invalid value '${text}' for ${name} query option found. The ${name} query option requires a non-negative integer value.`);
  }
  return Number(text);
}

function odataError(message: string): HttpError {
  return new HttpError(400, "ODataError", message);
}

function errorBody(code: string, message: string): string {
  return JSON.stringify({ error: { code, message, target: randomUUID() } });
}

function sendJson(
  res: ServerResponse,
  status: number,
  contentType: string,
  body: string,
  headers: Record<string, string> = {},
): number {
  const bytes = Buffer.byteLength(body);
  res.writeHead(status, { ...headers, "content-type": contentType, "content-length": bytes });
  res.end(body);
  return bytes;
}
