import type { IncomingMessage, ServerResponse } from "node:http";
import { HttpsFake } from "./https.js";
import type { TestCerts } from "./tls.js";

/**
 * Fake Splunk HTTP Event Collector (HEC), JSON event endpoint and indexer acknowledgement:
 *
 *   POST /services/collector/event (also /services/collector, /services/collector/event/1.0)
 *        Authorization: Splunk <token>
 *        body: JSON event objects one after another ({"time","host","source","sourcetype",
 *        "index","event","fields"}), whitespace between them allowed, not an array
 *        -> 200 {"text":"Success","code":0}        (+ "ackId": n when the token uses ack)
 *   POST /services/collector/ack?channel=<uuid>  (or X-Splunk-Request-Channel)
 *        body {"acks":[0,1]} -> 200 {"acks":{"0":true,"1":false}}
 *   GET  /services/collector/health -> 200 {"text":"HEC is healthy","code":17}
 *
 * Answers use HEC's codes: 401 code 2 (no token) or 3 (not `Splunk <token>`), 403 code 4
 * (unknown token) or 1 (disabled), 400 code 5 (no data), 6 (invalid data format, with
 * `invalid-event-number`), 7 (index not allowed for the token), 10/11 (ack token without
 * a GUID channel), 12/13 (event missing/blank), 14 (ack asked of a token without ack),
 * 15 (indexed fields not flat strings); 413 above `maxContentLength` (default 1,000,000).
 * Events before an invalid one have been taken already, as Splunk does, and are recorded.
 *
 * Acks: per channel, ackIds count from 0; an ackId answers true from its
 * `ackAfterPolls`-th poll on (default 1), once: Splunk forgets an ackId after reporting it
 * true, so later polls of it answer false. `loseAcks(n)` makes the next n requests' acks
 * never come true (events received, never indexed). Faults: `failNext(n, fault)`, e.g.
 * 503 code 9 "Server is busy" with or without Retry-After.
 *
 * Every token configured or received is reported by `secretsSeen()` for the leak check.
 */

export interface HecTokenOptions {
  /** A label for assertions (never the token). */
  name?: string;
  /** Indexer acknowledgement on this token (Splunk Enterprise). */
  ack?: boolean;
  /** Indexes the token may write to (default: any). */
  indexes?: string[];
  defaultIndex?: string;
  disabled?: boolean;
}

export interface HecEventRecord {
  tokenName: string;
  requestSeq: number;
  channel?: string;
  ackId?: number;
  /** True without ack; with ack, once the ack came true. */
  indexed: boolean;
  index: string;
  sourcetype?: string;
  source?: string;
  host?: string;
  time?: number;
  event: unknown;
  fields?: Record<string, unknown>;
}

export interface HecRequest {
  seq: number;
  path: string;
  status: number;
  code?: number;
  events: number;
  bytes: number;
  channel?: string;
}

export interface HecFault {
  status: number;
  code?: number;
  text?: string;
  retryAfterSec?: number;
  /** Sent as `invalid-event-number` (Splunk's pointer to the event at fault). */
  invalidEventNumber?: number;
}

interface Pending {
  polls: number;
  lost: boolean;
  events: HecEventRecord[];
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EVENT_PATHS = new Set(["/services/collector", "/services/collector/event", "/services/collector/event/1.0"]);

export interface FakeSplunkHecOptions {
  certs: TestCerts;
  port?: number;
  host?: string;
  maxContentLength?: number;
  /** Keep each event for `events()` (default true); false only counts them (benchmark, sandbox). */
  keepEvents?: boolean;
  /** Called with each event taken (also when keepEvents is false); with ack, `indexed` turns true later. */
  onEvent?: (event: HecEventRecord) => void;
}

export class FakeSplunkHec extends HttpsFake {
  ackAfterPolls = 1;
  maxContentLength: number;
  readonly requestLog: HecRequest[] = [];
  private readonly tokens = new Map<string, Required<Pick<HecTokenOptions, "name" | "ack" | "defaultIndex" | "disabled">> & { indexes?: string[] }>();
  private readonly received: HecEventRecord[] = [];
  private readonly channels = new Map<string, { next: number; pending: Map<number, Pending> }>();
  private readonly faults: (HecFault | undefined)[] = [];
  private lose = 0;
  private readonly seen = new Set<string>();
  private seq = 0;
  private stored = 0;

  constructor(private readonly options: FakeSplunkHecOptions) {
    super("FakeSplunkHec", options);
    this.maxContentLength = options.maxContentLength ?? 1_000_000;
  }

  addToken(token: string, options: HecTokenOptions = {}): void {
    this.seen.add(token);
    this.tokens.set(token, {
      name: options.name ?? `token${this.tokens.size + 1}`,
      ack: options.ack ?? false,
      defaultIndex: options.defaultIndex ?? "main",
      disabled: options.disabled ?? false,
      ...(options.indexes ? { indexes: options.indexes } : {}),
    });
  }

  /** After `after` more event requests, the next `n` fail with this answer (e.g. `{status: 503, code: 9}`). */
  failNext(n: number, fault: HecFault, after = 0): void {
    for (let i = 0; i < after; i++) this.faults.push(undefined);
    for (let i = 0; i < n; i++) this.faults.push(fault);
  }

  /** The next `n` accepted requests get an ackId that never comes true. */
  loseAcks(n: number): void {
    this.lose += n;
  }

  /** Events received, oldest first. */
  events(): HecEventRecord[] {
    return [...this.received];
  }

  /** Events received since the last reset (counted even with keepEvents false; indexed or not). */
  get receivedCount(): number {
    return this.stored;
  }

  /** Tokens configured and Authorization values received (8+ chars), for the leak check. */
  secretsSeen(): string[] {
    return [...this.seen].filter((s) => s.length >= 8);
  }

  reset(): void {
    this.received.length = 0;
    this.stored = 0;
    this.requestLog.length = 0;
    this.channels.clear();
    this.faults.length = 0;
    this.lose = 0;
  }

  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://hec");
    const path = url.pathname.replace(/\/+$/, "");
    const entry: HecRequest = { seq: ++this.seq, path, status: 0, events: 0, bytes: 0 };
    this.requestLog.push(entry);
    const answer = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) => {
      entry.status = status;
      if (typeof body.code === "number") entry.code = body.code;
      const text = JSON.stringify(body);
      res.writeHead(status, { "Content-Type": "application/json; charset=UTF-8", "Content-Length": Buffer.byteLength(text), ...headers });
      res.end(text);
    };
    const fail = (status: number, code: number, text: string, extra: Record<string, unknown> = {}) => answer(status, { text, code, ...extra });

    let body: Buffer;
    try {
      body = await readAll(req, this.maxContentLength);
    } catch {
      return answer(413, { text: "Content too large" });
    }
    entry.bytes = body.length;

    if (req.method === "GET" && path === "/services/collector/health") return fail(200, 17, "HEC is healthy");
    const isEvent = EVENT_PATHS.has(path);
    const isAck = path === "/services/collector/ack";
    if (req.method !== "POST" || (!isEvent && !isAck)) return answer(404, { text: "The requested URL was not found on this server.", code: 404 });

    const auth = req.headers.authorization;
    if (auth === undefined) return fail(401, 2, "Token is required");
    const token = /^Splunk (.+)$/.exec(auth)?.[1];
    if (token) this.seen.add(token);
    else this.seen.add(auth);
    if (!token) return fail(401, 3, "Invalid authorization");
    const t = this.tokens.get(token);
    if (!t) return fail(403, 4, "Invalid token");
    if (t.disabled) return fail(403, 1, "Token disabled");

    const channelValue = req.headers["x-splunk-request-channel"] ?? url.searchParams.get("channel") ?? undefined;
    const channel = Array.isArray(channelValue) ? channelValue[0] : channelValue;
    if (channel) entry.channel = channel;
    if (isAck) {
      if (!t.ack) return fail(400, 14, "ACK is disabled");
      if (!channel) return fail(400, 10, "Data channel is missing");
      if (!GUID.test(channel)) return fail(400, 11, "Invalid data channel");
      let ids: unknown;
      try {
        ids = (JSON.parse(body.toString("utf8")) as { acks?: unknown }).acks;
      } catch {
        ids = undefined;
      }
      if (!Array.isArray(ids) || ids.some((id) => typeof id !== "number")) return fail(400, 6, "Invalid data format");
      const state = this.channels.get(channel.toLowerCase());
      const acks: Record<string, boolean> = {};
      for (const id of ids as number[]) {
        const p = state?.pending.get(id);
        if (!p) {
          acks[String(id)] = false;
          continue;
        }
        p.polls++;
        const done = !p.lost && p.polls >= this.ackAfterPolls;
        acks[String(id)] = done;
        if (done) {
          for (const e of p.events) e.indexed = true;
          state?.pending.delete(id);
        }
      }
      return answer(200, { acks });
    }

    if (t.ack) {
      if (!channel) return fail(400, 10, "Data channel is missing");
      if (!GUID.test(channel)) return fail(400, 11, "Invalid data channel");
    }
    const fault = this.faults.shift();
    if (fault) {
      const headers: Record<string, string> = fault.retryAfterSec !== undefined ? { "Retry-After": String(fault.retryAfterSec) } : {};
      return answer(
        fault.status,
        {
          text: fault.text ?? (fault.code === 9 ? "Server is busy" : "Injected failure"),
          ...(fault.code !== undefined ? { code: fault.code } : {}),
          ...(fault.invalidEventNumber !== undefined ? { "invalid-event-number": fault.invalidEventNumber } : {}),
        },
        headers,
      );
    }

    const text = body.toString("utf8");
    if (text.trim() === "") return fail(400, 5, "No data");
    const accepted: HecEventRecord[] = [];
    let problem: { code: number; text: string; index: number } | undefined;
    const objects = splitObjects(text);
    for (let i = 0; i < objects.length && !problem; i++) {
      const parsed = objects[i];
      if (parsed === undefined || typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
        problem = { code: 6, text: "Invalid data format", index: i };
        break;
      }
      const e = parsed as Record<string, unknown>;
      if (!("event" in e)) problem = { code: 12, text: "Event field is required", index: i };
      else if (e.event === "" || e.event === null) problem = { code: 13, text: "Event field cannot be blank", index: i };
      else if (e.fields !== undefined && !flatFields(e.fields)) problem = { code: 15, text: "Error in handling indexed fields", index: i };
      else if (e.time !== undefined && !Number.isFinite(Number(e.time))) problem = { code: 6, text: "Invalid data format", index: i };
      else {
        const index = typeof e.index === "string" ? e.index : t.defaultIndex;
        if (t.indexes && !t.indexes.includes(index)) problem = { code: 7, text: "Incorrect index", index: i };
        else {
          accepted.push({
            tokenName: t.name,
            requestSeq: entry.seq,
            indexed: !t.ack,
            index,
            event: e.event,
            ...(channel ? { channel } : {}),
            ...(typeof e.sourcetype === "string" ? { sourcetype: e.sourcetype } : {}),
            ...(typeof e.source === "string" ? { source: e.source } : {}),
            ...(typeof e.host === "string" ? { host: e.host } : {}),
            ...(e.time !== undefined ? { time: Number(e.time) } : {}),
            ...(e.fields !== undefined ? { fields: e.fields as Record<string, unknown> } : {}),
          });
        }
      }
    }
    // Splunk has already taken the events before an invalid one.
    this.stored += accepted.length;
    if (this.options.keepEvents !== false) this.received.push(...accepted);
    if (this.options.onEvent) for (const e of accepted) this.options.onEvent(e);
    entry.events = accepted.length;
    if (problem) return fail(400, problem.code, problem.text, { "invalid-event-number": problem.index });

    if (!t.ack || !channel) return fail(200, 0, "Success");
    const key = channel.toLowerCase();
    const state = this.channels.get(key) ?? { next: 0, pending: new Map<number, Pending>() };
    this.channels.set(key, state);
    const ackId = state.next++;
    const lost = this.lose > 0;
    if (lost) this.lose--;
    for (const e of accepted) e.ackId = ackId;
    state.pending.set(ackId, { polls: 0, lost, events: accepted });
    return answer(200, { text: "Success", code: 0, ackId });
  }
}

/**
 * Splits concatenated JSON objects (whitespace between them allowed). An element that
 * does not parse is `undefined`, and nothing after it is read.
 */
export function splitObjects(text: string): unknown[] {
  const out: unknown[] = [];
  let p = 0;
  while (p < text.length) {
    while (p < text.length && /\s/.test(text[p] ?? "")) p++;
    if (p >= text.length) break;
    if (text[p] !== "{") {
      out.push(undefined);
      break;
    }
    let depth = 0;
    let inString = false;
    let end = -1;
    for (let q = p; q < text.length; q++) {
      const c = text[q];
      if (inString) {
        if (c === "\\") q++;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === "{") depth++;
      else if (c === "}" && --depth === 0) {
        end = q + 1;
        break;
      }
    }
    if (end < 0) {
      out.push(undefined);
      break;
    }
    try {
      out.push(JSON.parse(text.slice(p, end)));
    } catch {
      out.push(undefined);
      break;
    }
    p = end;
  }
  return out;
}

function flatFields(fields: unknown): boolean {
  if (typeof fields !== "object" || fields === null || Array.isArray(fields)) return false;
  return Object.values(fields).every((v) => typeof v === "string" || typeof v === "number" || (Array.isArray(v) && v.every((x) => typeof x === "string")));
}

async function readAll(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  for await (const chunk of req) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    size += buf.length;
    if (size > limit) tooLarge = true; // keep reading so the client gets the answer
    else chunks.push(buf);
  }
  if (tooLarge) throw new Error("too large");
  return Buffer.concat(chunks);
}
