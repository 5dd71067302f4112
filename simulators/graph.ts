/**
 * An HTTPS fake of Microsoft Graph's security alerts API, `GET /v1.0/security/alerts_v2`
 * and `GET /v1.0/security/alerts_v2/{id}`, with the behaviour a collector must survive:
 *
 * - `$filter` on `lastUpdateDateTime`/`createdDateTime` with eq ne gt ge lt le, `and`,
 *   `or`, `not` and parentheses, compared at full 100-ns precision; the other documented
 *   filterable properties (severity, status, serviceSource, classification,
 *   determination, assignedTo) with eq/ne. `rejectLt` makes `lt` a 400, as a service that
 *   never learnt the undocumented operator would answer.
 * - `$top` (default page size 100 when absent) silently clamped to `maxTop` (1,000);
 *   server-driven paging through `@odata.nextLink` (before `value`, as in Graph's paging
 *   examples, or after it) with an opaque `$skiptoken` or `$skip` (an offset into the
 *   current order, so items shift between pages when data changes, like a real
 *   offset-based token); `nextLinks` can withhold links to test clients that must treat a
 *   full page as "maybe more"; `nextLinkOrigin` points links at another host.
 * - `$select`, `$skip`, `$count`; unknown `$` options are a 400 (`$orderby` included: it
 *   is not documented for alerts_v2, so a client must not depend on it).
 * - Results unordered, in an order that changes whenever the tenant's data changes.
 * - Evolvable enums: without `Prefer: include-unknown-enum-members`, members newer than
 *   `unknownFutureValue` (e.g. serviceSource `microsoftSentinel`) are sent as
 *   `unknownFutureValue`; with it, the real value and `Preference-Applied`.
 * - Bearer tokens checked by an `authenticate` callback; 401/403/400/404/429/5xx answered
 *   in Graph's error shape `{"error":{"code","message","innerError":{date,request-id,
 *   client-request-id}}}`.
 * - Fault injection (429 with Retry-After, 5xx, resets, delays, truncated bodies), an
 *   optional per-tenant rate limit (Graph allows 150 requests a minute per app per tenant
 *   for security alerts), a hook before each response, and a request log stamped by an
 *   injectable clock.
 *
 * The public API mirrors FakeDefender's so one parameterised suite can drive either.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { AlertFake, delay, mix32, type Rec as AlertRec, type TenantState as AlertTenantState } from "./alert-fake.js";
import { parseTimestamp, toTicks } from "./alerts.js";
import type { Fault, FilterComparison } from "./defender.js";
import { GRAPH_ALERT_KEYS, type GraphAlert, hideUnknownEnumMembers } from "./graph-alerts.js";

export type { Fault, FilterComparison };

/** Graph's documented throttling limit for security alerts: requests a minute per app per tenant. */
export const GRAPH_ALERTS_REQUESTS_PER_MINUTE = 150;
/** Path of the list endpoint. */
export const GRAPH_ALERTS_PATH = "/v1.0/security/alerts_v2";
export const INCLUDE_UNKNOWN_ENUM_MEMBERS = "include-unknown-enum-members";

export interface GraphPrincipal {
  tenantId: string;
  /**
   * Delegated scopes or application roles in the token. When given, the request needs one
   * of `requiredPermissions`, else 403; when absent, only `forbid()` answers 403.
   */
  permissions?: readonly string[];
}

export interface GraphRequestLogEntry {
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
  /** Comparisons found in a valid $filter, e.g. the queried lastUpdateDateTime window. */
  comparisons: FilterComparison[];
  /** The Prefer header(s) as sent, joined with ", "; null when absent. */
  prefer: string | null;
  /** Whether Prefer asked for include-unknown-enum-members. */
  includeUnknownEnumMembers: boolean;
  /** Items a full page holds (min($top or the default, maxTop)); 0 when not a list answer. */
  pageSize: number;
  /** $top was larger than maxTop and was cut down silently. */
  clamped: boolean;
  /** Position of the page's first item in the matching set ($skip or the $skiptoken offset). */
  offset: number;
  /** Final HTTP status; 0 for a reset or truncated connection. */
  status: number;
  /** Graph error code of an error answer, else null. */
  errorCode: string | null;
  fault: Fault | null;
  /** Alerts in the response body (list or single), else 0. */
  itemCount: number;
  nextLink: string | null;
  /** Body bytes written. */
  bytes: number;
  /** Wall-clock milliseconds from arrival to the end of the response (not `now()`). */
  elapsedMs: number;
}

export interface GraphRequestContext {
  tenantId: string;
  requestNumber: number;
  entry: GraphRequestLogEntry;
  fake: FakeGraph;
}

export type GraphBeforeResponseHook = (context: GraphRequestContext) => void | Promise<void>;

/** When pages carry `@odata.nextLink`. */
export type NextLinkMode =
  /** Whenever more items match than the page holds (Graph's documented behaviour). */
  | "always"
  /** Not when `$top` was clamped: the cut is silent and the client must notice the full page. */
  | "unlessClamped"
  /** Never: every answer looks final. */
  | "never";

export interface FakeGraphOptions {
  certs: { key: string; cert: string };
  /** Default 0 (any free port). */
  port?: number;
  /** Listen address, default 127.0.0.1. */
  host?: string;
  /** Host name in `url`, default 127.0.0.1 (the test certificate covers it and *.localhost). */
  hostname?: string;
  /** Maps a bearer token to its tenant (and optionally permissions); null means 401. */
  authenticate: (bearer: string) => Promise<GraphPrincipal | null>;
  /** Clock for the request log, the rate limit and error dates; default Date.now. */
  now?: () => number;
  /** Largest page; a larger $top is clamped without error. Default 1,000. */
  maxTop?: number;
  /** Items per page when $top is absent. Default 100. */
  defaultPageSize?: number;
  /** Answer 400 to any `lt` comparison in $filter. Default false. */
  rejectLt?: boolean;
  /** Default "always". */
  nextLinks?: NextLinkMode;
  /** Where `@odata.nextLink` sits in the envelope; default "beforeValue", as in Graph's paging examples. */
  nextLinkPlacement?: "beforeValue" | "afterValue";
  /** How links carry the position: an opaque `$skiptoken` (default) or `$skip` (Graph's docs say APIs use either). */
  nextLinkStyle?: "skiptoken" | "skip";
  /** Answer 429 once a tenant exceeds these many requests in the last minute / hour (by `now()`). */
  rateLimit?: { perMinute?: number; perHour?: number };
  /** Any one of these in GraphPrincipal.permissions is enough. Default SecurityAlert.Read.All / ReadWrite.All. */
  requiredPermissions?: readonly string[];
  beforeResponse?: GraphBeforeResponseHook;
}

type Rec = AlertRec<GraphAlert>;
type TenantState = AlertTenantState<GraphAlert, GraphRequestLogEntry>;

class GraphError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
const ERROR_CONTENT_TYPE = "application/json";
const CHUNK_CHARS = 256 * 1024;
const ALLOWED_OPTIONS = new Set(["$filter", "$top", "$skip", "$select", "$count", "$skiptoken"]);
const DEFAULT_PERMISSIONS = ["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"];
const SELECTABLE = new Map(GRAPH_ALERT_KEYS.filter((k) => !k.startsWith("@")).map((k) => [k.toLowerCase(), k as string]));

export class FakeGraph extends AlertFake<GraphAlert, GraphRequestLogEntry> {
  /**
   * Runs for each authenticated request before faults are applied and the response is
   * computed; it may change alerts (e.g. between two pages) or inject faults.
   */
  beforeResponse: GraphBeforeResponseHook | undefined;
  /** Clock for the request log and the rate limit (a test may swap in a virtual one). */
  now: () => number;
  /** Largest page; a larger $top is clamped silently. */
  maxTop: number;
  /** Items per page when $top is absent. */
  defaultPageSize: number;
  /** Answer 400 to `lt` in $filter, so a client must fall back to `le`. */
  rejectLt: boolean;
  nextLinks: NextLinkMode;
  nextLinkPlacement: "beforeValue" | "afterValue";
  nextLinkStyle: "skiptoken" | "skip";
  /** When set, nextLinks point at this origin instead of the fake's own. */
  nextLinkOrigin: string | undefined;

  private readonly options: FakeGraphOptions;
  private seq = 0;

  constructor(options: FakeGraphOptions) {
    super({
      name: "FakeGraph",
      listen: options,
      forbiddenMessage: "Missing role permissions on the request. The API requires one of 'SecurityAlert.Read.All, SecurityAlert.ReadWrite.All'.",
      touchSeed: "graph-touch",
      orderSalt: "graph",
    });
    this.options = options;
    this.now = options.now ?? Date.now;
    this.maxTop = options.maxTop ?? 1000;
    this.defaultPageSize = options.defaultPageSize ?? 100;
    this.rejectLt = options.rejectLt ?? false;
    this.nextLinks = options.nextLinks ?? "always";
    this.nextLinkPlacement = options.nextLinkPlacement ?? "beforeValue";
    this.nextLinkStyle = options.nextLinkStyle ?? "skiptoken";
    this.nextLinkOrigin = undefined;
    this.beforeResponse = options.beforeResponse;
  }

  /** FakeDefender's name for the page cap, so one suite can drive either fake; undefined restores the configured maxTop. */
  get clampTop(): number | undefined {
    return this.maxTop;
  }

  set clampTop(value: number | undefined) {
    this.maxTop = value ?? this.options.maxTop ?? 1000;
  }

  protected internalError(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    sendJson(res, 500, this.errorBody(req, "InternalServerError", String(err)));
  }

  protected toRec(alert: GraphAlert): Rec {
    return { alert, updated: toTicks(alert.lastUpdateDateTime), created: toTicks(alert.createdDateTime) };
  }

  protected retouch(alert: GraphAlert, changes: Partial<GraphAlert>, lastUpdateDateTime: string): GraphAlert {
    return { ...alert, ...changes, lastUpdateDateTime };
  }

  // -------------------------------------------------------------------------
  // HTTP.

  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const parsed = new URL(req.url ?? "/", "https://fake.invalid");
    const query: Record<string, string> = {};
    for (const [k, v] of parsed.searchParams) query[k] = v;
    const preferHeader = req.headers.prefer;
    const prefer = preferHeader === undefined ? null : Array.isArray(preferHeader) ? preferHeader.join(", ") : preferHeader;
    const includeUnknown = (prefer ?? "")
      .split(",")
      .map((p) => p.trim().toLowerCase())
      .includes(INCLUDE_UNKNOWN_ENUM_MEMBERS);
    const entry: GraphRequestLogEntry = {
      seq: ++this.seq,
      tenantId: null,
      requestNumber: 0,
      time: this.now(),
      method: req.method ?? "GET",
      path: parsed.pathname,
      query,
      comparisons: [],
      prefer,
      includeUnknownEnumMembers: includeUnknown,
      pageSize: 0,
      clamped: false,
      offset: 0,
      status: 0,
      errorCode: null,
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
    const requestId = randomUUID();
    const clientRequestId = firstHeader(req.headers["client-request-id"]) ?? requestId;
    res.setHeader("request-id", requestId);
    res.setHeader("client-request-id", clientRequestId);

    const auth = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "");
    let principal: GraphPrincipal | null = null;
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

    const ids = { requestId, clientRequestId };
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
      const [code, message] = FAULT_ERRORS[fault.status];
      entry.status = fault.status;
      entry.errorCode = code;
      entry.bytes = sendJson(res, fault.status, this.errorJson(ids, code, message), headers);
      return;
    }
    const truncateAfter = fault && "truncateAfterBytes" in fault ? fault.truncateAfterBytes : null;

    try {
      if (!tenant || !principal) {
        throw new GraphError(401, "InvalidAuthenticationToken", auth ? "Access token validation failure." : "Access token is empty.", {
          "www-authenticate":
            'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"',
        });
      }
      if (tenant.forbidden !== null) throw new GraphError(403, "Forbidden", tenant.forbidden);
      const required = this.options.requiredPermissions ?? DEFAULT_PERMISSIONS;
      if (principal.permissions && !principal.permissions.some((p) => required.includes(p))) {
        throw new GraphError(
          403,
          "Forbidden",
          `Missing role permissions on the request. The API requires one of '${required.join(", ")}'; the token has '${principal.permissions.join(", ")}'.`,
        );
      }
      this.enforceRateLimit(tenant, entry);
      if (entry.method !== "GET") {
        throw new GraphError(405, "Request_BadRequest", `The HTTP method '${entry.method}' is not supported by this fake.`);
      }
      const body = this.route(req, tenant, entry, parsed.pathname, includeUnknown);
      entry.status = 200;
      const out = new Writer(res, truncateAfter);
      const headers: Record<string, string> = { "content-type": CONTENT_TYPE, "odata-version": "4.0" };
      if (includeUnknown) headers["preference-applied"] = INCLUDE_UNKNOWN_ENUM_MEMBERS;
      res.writeHead(200, headers);
      await body(out);
      entry.bytes = out.bytes;
      if (out.truncated) {
        entry.status = 0;
        return;
      }
      res.end();
    } catch (err) {
      if (!(err instanceof GraphError)) throw err;
      entry.status = err.status;
      entry.errorCode = err.code;
      entry.itemCount = 0;
      entry.nextLink = null;
      entry.bytes = sendJson(res, err.status, this.errorJson(ids, err.code, err.message), err.headers);
    }
  }

  private errorJson(ids: { requestId: string; clientRequestId: string }, code: string, message: string): string {
    const date = new Date(this.now()).toISOString().slice(0, 19);
    return JSON.stringify({
      error: { code, message, innerError: { date, "request-id": ids.requestId, "client-request-id": ids.clientRequestId } },
    });
  }

  private errorBody(req: IncomingMessage, code: string, message: string): string {
    const requestId = randomUUID();
    return this.errorJson({ requestId, clientRequestId: firstHeader(req.headers["client-request-id"]) ?? requestId }, code, message);
  }

  private enforceRateLimit(tenant: TenantState, entry: GraphRequestLogEntry): void {
    const wait = this.rateLimitWait(this.options.rateLimit, tenant, entry);
    if (wait !== null) {
      throw new GraphError(429, "TooManyRequests", `Too many requests for this application in this tenant. Retry after ${wait} seconds.`, {
        "retry-after": String(wait),
      });
    }
  }

  /** Validates the request and returns the body writer; throws GraphError for 4xx. */
  private route(
    req: IncomingMessage,
    tenant: TenantState,
    entry: GraphRequestLogEntry,
    path: string,
    includeUnknown: boolean,
  ): (out: Writer) => Promise<void> {
    const origin = `https://${req.headers.host ?? new URL(this.url).host}`;
    const q = entry.query;
    const select = q.$select !== undefined ? parseSelect(q.$select) : null;
    const shape = (alert: GraphAlert): string => {
      const visible = includeUnknown ? alert : hideUnknownEnumMembers(alert);
      if (!select) return JSON.stringify(visible);
      const picked: Record<string, unknown> = { "@odata.type": visible["@odata.type"] };
      for (const key of GRAPH_ALERT_KEYS) if (key === "id" || select.includes(key)) picked[key] = visible[key];
      return JSON.stringify(picked);
    };
    const contextPath = `${origin}/v1.0/$metadata#security/alerts_v2${select ? `(${select.join(",")})` : ""}`;

    const single = /^\/v1\.0\/security\/alerts_v2\/([^/]+)\/?$/i.exec(path);
    if (single?.[1]) {
      for (const key of Object.keys(q)) {
        if (key.startsWith("$") && key !== "$select") throw badRequest(`Query option '${key}' is not supported for a single alert.`);
      }
      let id: string;
      try {
        id = decodeURIComponent(single[1]);
      } catch {
        throw badRequest(`Invalid alert id '${single[1]}'.`);
      }
      const rec = tenant.byId.get(id);
      if (!rec) throw new GraphError(404, "NotFound", `The alert '${id}' was not found.`);
      entry.itemCount = 1;
      const json = shape(rec.alert);
      const context = JSON.stringify(`${contextPath}/$entity`);
      return (out) => out.write(`{"@odata.context":${context}${json.length > 2 ? "," : ""}${json.slice(1)}`);
    }
    if (!/^\/v1\.0\/security\/alerts_v2\/?$/i.test(path)) {
      throw badRequest(`Resource not found for the segment '${path.split("/").filter(Boolean).pop() ?? ""}'.`);
    }

    for (const key of Object.keys(q)) {
      if (key.startsWith("$") && !ALLOWED_OPTIONS.has(key)) {
        throw badRequest(`Query option '${key}' is not supported by security/alerts_v2.`);
      }
    }
    const predicate = q.$filter !== undefined ? compileFilter(q.$filter, entry.comparisons, this.rejectLt) : null;
    const top = q.$top !== undefined ? parseCount("$top", q.$top) : null;
    let offset = q.$skip !== undefined ? parseCount("$skip", q.$skip) : 0;
    if (q.$skiptoken !== undefined) offset = decodeSkipToken(q.$skiptoken);
    let count = false;
    if (q.$count !== undefined) {
      if (q.$count !== "true" && q.$count !== "false") throw badRequest(`Invalid value '${q.$count}' for $count; use true or false.`);
      count = q.$count === "true";
    }

    const requested = top ?? this.defaultPageSize;
    const clamped = requested > this.maxTop;
    const pageSize = Math.min(requested, this.maxTop);
    entry.pageSize = pageSize;
    entry.clamped = clamped && top !== null;
    entry.offset = offset;

    const page: Rec[] = [];
    let matched = 0;
    for (const rec of this.orderedRecs(tenant)) {
      if (predicate && !predicate(rec)) continue;
      matched++;
      if (matched <= offset || page.length >= pageSize) continue;
      page.push(rec);
    }
    const more = matched > offset + page.length;
    entry.itemCount = page.length;
    const linkAllowed = this.nextLinks === "always" || (this.nextLinks === "unlessClamped" && !entry.clamped);
    let link = "";
    if (more && page.length > 0 && linkAllowed) {
      const params = Object.entries(q)
        .filter(([k]) => k !== "$skip" && k !== "$skiptoken")
        .map(([k, v]) => `${encodeQueryValue(k)}=${encodeQueryValue(v)}`);
      const next = offset + page.length;
      params.push(this.nextLinkStyle === "skip" ? `$skip=${next}` : `$skiptoken=${encodeSkipToken(next, tenant.version)}`);
      entry.nextLink = `${this.nextLinkOrigin ?? origin}${GRAPH_ALERTS_PATH}?${params.join("&")}`;
      link = `"@odata.nextLink":${JSON.stringify(entry.nextLink)}`;
    }
    const before = this.nextLinkPlacement === "beforeValue" && link ? `${link},` : "";
    const tail = this.nextLinkPlacement === "afterValue" && link ? `],${link}}` : "]}";
    const head = `{"@odata.context":${JSON.stringify(contextPath)},${count ? `"@odata.count":${matched},` : ""}${before}"value":[`;
    return async (out) => {
      let chunk = head;
      for (let i = 0; i < page.length; i++) {
        if (i > 0) chunk += ",";
        chunk += shape((page[i] as Rec).alert);
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

const FAULT_ERRORS: Record<429 | 500 | 502 | 503 | 504, [string, string]> = {
  429: ["TooManyRequests", "Too many requests. Retry after the number of seconds in Retry-After."],
  500: ["InternalServerError", "An internal server error occurred."],
  502: ["BadGateway", "The gateway received an invalid response."],
  503: ["ServiceUnavailable", "The service is temporarily unavailable."],
  504: ["GatewayTimeout", "The gateway timed out."],
};

function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Percent-encodes a query key or value (spaces as %20), keeping `$` and `,` readable as Graph's links do. */
function encodeQueryValue(value: string): string {
  return encodeURIComponent(value).replace(/%24/g, "$").replace(/%2C/g, ",");
}

/** An opaque token: base64url of the next offset and the data version it was cut at. */
function encodeSkipToken(offset: number, version: number): string {
  return Buffer.from(JSON.stringify({ o: offset, v: version, n: mix32(offset * 31 + version).toString(36) })).toString("base64url");
}

function decodeSkipToken(token: string): number {
  try {
    const parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { o?: unknown };
    if (typeof parsed.o === "number" && Number.isSafeInteger(parsed.o) && parsed.o >= 0) return parsed.o;
  } catch {
    // fall through
  }
  throw badRequest("The $skiptoken is invalid or expired.");
}

function parseSelect(text: string): string[] {
  const names: string[] = [];
  for (const part of text.split(",")) {
    const name = SELECTABLE.get(part.trim().toLowerCase());
    if (!name) throw badRequest(`Could not find a property named '${part.trim()}' on type 'microsoft.graph.security.alert'.`);
    if (!names.includes(name)) names.push(name);
  }
  return names;
}

/** Writes body text with backpressure, optionally cutting the connection after N bytes. */
class Writer {
  bytes = 0;
  truncated = false;
  constructor(
    private readonly res: ServerResponse,
    private readonly truncateAfter: number | null,
  ) {}

  get stopped(): boolean {
    return this.truncated || this.res.destroyed;
  }

  async write(text: string): Promise<void> {
    if (this.stopped) return;
    let buf = Buffer.from(text);
    if (this.truncateAfter !== null && this.bytes + buf.length >= this.truncateAfter) {
      buf = buf.subarray(0, Math.max(0, this.truncateAfter - this.bytes));
      this.truncated = true;
    }
    this.bytes += buf.length;
    const socket = this.res.socket;
    const flushed = this.res.write(buf, this.truncated ? () => socket?.destroy() : undefined);
    if (!flushed && !this.truncated) {
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
// $filter: comparisons of a property with a literal, combined with and/or/not and
// parentheses. DateTimeOffset literals are unquoted and compared as 100-ns ticks; enum and
// string literals are single-quoted.

type Predicate = (rec: Rec) => boolean;
type Value = bigint | string | null;

interface FilterProperty {
  name: string;
  kind: "datetime" | "string";
  get: (rec: Rec) => Value;
}

const FILTERABLE = new Map<string, FilterProperty>();
for (const p of [
  { name: "lastUpdateDateTime", kind: "datetime", get: (rec: Rec) => rec.updated },
  { name: "createdDateTime", kind: "datetime", get: (rec: Rec) => rec.created },
  { name: "severity", kind: "string", get: (rec: Rec) => rec.alert.severity },
  { name: "status", kind: "string", get: (rec: Rec) => rec.alert.status },
  { name: "serviceSource", kind: "string", get: (rec: Rec) => rec.alert.serviceSource },
  { name: "classification", kind: "string", get: (rec: Rec) => rec.alert.classification },
  { name: "determination", kind: "string", get: (rec: Rec) => rec.alert.determination },
  { name: "assignedTo", kind: "string", get: (rec: Rec) => rec.alert.assignedTo },
] as const) {
  FILTERABLE.set(p.name.toLowerCase(), p);
}

type Token = { kind: "open" | "close" } | { kind: "word" | "literal" | "quoted"; text: string };

const TOKEN_RE = /\s*(?:(\()|(\))|'((?:[^']|'')*)'|([A-Za-z_][\w.]*)|([0-9][0-9:.TZ+-]*))/y;

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  TOKEN_RE.lastIndex = 0;
  while (TOKEN_RE.lastIndex < text.length) {
    if (/^\s*$/.test(text.slice(TOKEN_RE.lastIndex))) break;
    const at = TOKEN_RE.lastIndex;
    const m = TOKEN_RE.exec(text);
    if (!m) throw invalidFilter(`syntax error at position ${at} in '${text}'.`);
    if (m[1]) tokens.push({ kind: "open" });
    else if (m[2]) tokens.push({ kind: "close" });
    else if (m[3] !== undefined) tokens.push({ kind: "quoted", text: m[3].replace(/''/g, "'") });
    else if (m[4]) tokens.push({ kind: "word", text: m[4] });
    else tokens.push({ kind: "literal", text: m[5] as string });
  }
  return tokens;
}

const OPS = new Set(["eq", "ne", "gt", "ge", "lt", "le"]);

function compileFilter(text: string, comparisons: FilterComparison[], rejectLt: boolean): Predicate {
  const tokens = tokenize(text);
  let pos = 0;
  const found: FilterComparison[] = [];
  const word = (): string | null => {
    const t = tokens[pos];
    return t?.kind === "word" ? t.text.toLowerCase() : null;
  };
  const parseOr = (): Predicate => {
    let left = parseAnd();
    while (word() === "or") {
      pos++;
      const [l, r] = [left, parseAnd()];
      left = (rec) => l(rec) || r(rec);
    }
    return left;
  };
  const parseAnd = (): Predicate => {
    let left = parseUnary();
    while (word() === "and") {
      pos++;
      const [l, r] = [left, parseUnary()];
      left = (rec) => l(rec) && r(rec);
    }
    return left;
  };
  const parseUnary = (): Predicate => {
    if (word() === "not") {
      pos++;
      const inner = parseUnary();
      return (rec) => !inner(rec);
    }
    if (tokens[pos]?.kind === "open") {
      pos++;
      const inner = parseOr();
      if (tokens[pos]?.kind !== "close") throw invalidFilter(`')' expected in '${text}'.`);
      pos++;
      return inner;
    }
    return parseComparison();
  };
  const parseComparison = (): Predicate => {
    const propTok = tokens[pos];
    if (propTok?.kind !== "word") throw invalidFilter(`a property name was expected in '${text}'.`);
    const prop = FILTERABLE.get(propTok.text.toLowerCase());
    if (!prop) throw invalidFilter(`the property '${propTok.text}' does not support filtering.`);
    const opTok = tokens[pos + 1];
    const op = opTok?.kind === "word" ? opTok.text.toLowerCase() : "";
    if (!OPS.has(op)) throw invalidFilter(`a comparison operator was expected after '${propTok.text}'.`);
    if (op === "lt" && rejectLt) throw invalidFilter(`the operator 'lt' is not supported for property '${prop.name}'.`);
    const lit = tokens[pos + 2];
    pos += 3;
    let value: Value;
    let literal: string;
    if (lit?.kind === "word" && lit.text === "null") {
      value = null;
      literal = "null";
    } else if (prop.kind === "datetime" && lit?.kind === "literal") {
      value = parseTimestamp(lit.text);
      literal = lit.text;
      if (value === null) throw invalidFilter(`'${lit.text}' is not a valid DateTimeOffset (up to 7 fractional digits, with Z or an offset).`);
      if (!/T.*(Z|[+-]\d{2}:\d{2})$/.test(lit.text)) throw invalidFilter(`'${lit.text}' needs a time and a time zone.`);
    } else if (prop.kind === "string" && lit?.kind === "quoted") {
      value = lit.text;
      literal = lit.text;
      if (op !== "eq" && op !== "ne") throw invalidFilter(`the operator '${op}' is not supported for property '${prop.name}'.`);
    } else {
      throw invalidFilter(
        `the literal after '${prop.name} ${op}' must be ${prop.kind === "datetime" ? "an unquoted DateTimeOffset" : "a quoted string"}.`,
      );
    }
    found.push({ property: prop.name, op: op as FilterComparison["op"], value: literal });
    return comparator(prop.get, op as FilterComparison["op"], value);
  };

  const predicate = parseOr();
  if (pos !== tokens.length) throw invalidFilter(`unexpected text at token ${pos} in '${text}'.`);
  comparisons.push(...found);
  return predicate;
}

function comparator(get: (rec: Rec) => Value, op: FilterComparison["op"], value: Value): Predicate {
  return (rec) => {
    const actual = get(rec);
    if (op === "eq") return actual === value;
    if (op === "ne") return actual !== value;
    if (actual === null || value === null) return false;
    if (op === "gt") return actual > value;
    if (op === "ge") return actual >= value;
    if (op === "lt") return actual < value;
    return actual <= value;
  };
}

function parseCount(name: string, text: string): number {
  if (!/^\d+$/.test(text) || Number(text) > 2_147_483_647) {
    throw badRequest(`Invalid value '${text}' for ${name}; a non-negative integer is required.`);
  }
  return Number(text);
}

function badRequest(message: string): GraphError {
  return new GraphError(400, "BadRequest", message);
}

function invalidFilter(detail: string): GraphError {
  return badRequest(`Invalid filter clause: ${detail}`);
}

function sendJson(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): number {
  const bytes = Buffer.byteLength(body);
  res.writeHead(status, { ...headers, "content-type": ERROR_CONTENT_TYPE, "content-length": bytes });
  res.end(body);
  return bytes;
}
