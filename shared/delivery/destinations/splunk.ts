import { randomUUID } from "node:crypto";
import { request } from "undici";
import { timeMs } from "../../collection/time.js";
import type { SplunkConfig } from "../config.js";
import { type DeliveryItem, type Destination, type DestinationDeps, DestinationError, type SendReport } from "../destination.js";
import { retryAfterMs } from "./retry-after.js";

/**
 * Splunk HTTP Event Collector: `POST {url}/services/collector/event` with
 * `Authorization: Splunk <token>` (the token is the Key Vault secret TOKEN_SECRET_NAME),
 * several events per request, one JSON object after another.
 *
 * Each event: `time` = the alert version's lastUpdateTime (epoch seconds, milliseconds),
 * `source` = `mssp-defender-collector:<source>`, `sourcetype` (SOURCETYPE, default
 * `mssp:defender:alert`), `index` (INDEX, else the token's default), `event` = the alert
 * JSON as the source sent it, and the indexed `fields` deliveryKey, customerTenantId and
 * customerName. An alert above MAX_EVENT_BYTES goes without its `evidence` (or, if still
 * too big, as its query columns only), with the fields rawTruncated, evidenceCount and
 * collectorUrl (the collector's `GET /api/tenants/{tenantId}/alerts/{alertId}`).
 *
 * Without USE_ACK a 200 counts as delivered: HEC received the events, which does not yet
 * mean indexed. With USE_ACK (Splunk Enterprise, indexer acknowledgement on the token)
 * requests carry `X-Splunk-Request-Channel` (one UUID per destination instance), each 200
 * carries an `ackId`, and the events count as delivered only once
 * `POST {url}/services/collector/ack` says true; polling waits with `deps.sleep` (1 s,
 * doubling up to 10 s) for at most `ackTimeoutMs` (default 2 minutes), after which the
 * events are failed for a retry (Splunk may still index them: a retry can duplicate, and
 * `fields.deliveryKey` tells duplicates apart).
 *
 * Answers:
 * - 429, 503 (code 9 server busy): the request's events and the rest of the batch are
 *   failed for a retry, with the Retry-After when there is one; nothing more is sent.
 * - 400 with an event-level code (6 invalid data format, 12, 13, 15) and
 *   `invalid-event-number`: that event is refused (permanent); the request's other events
 *   are failed for a retry. Without the number, the request's events are sent one by one
 *   to find the bad ones.
 * - 413: the request is split in halves (a single event that is still too large is refused).
 * - 401, 403 (codes 1-4: token), 400 codes 7 (index), 10, 11, 14 (channel, ack), 404:
 *   a configuration error; the whole send fails with a DestinationError naming status and code.
 * - 5xx and network failures: the rest of the batch is failed for a retry; when nothing
 *   got through at all, the whole send fails with a DestinationError.
 * The token never appears in an error, a code or a log line.
 */

export const DEFAULT_SOURCETYPE = "mssp:defender:alert";
export const SPLUNK_BATCH_SIZE = 100;
export const MAX_REQUEST_BYTES = 1_000_000;
export const MAX_EVENT_BYTES = 900 * 1024;
const FIRST_ACK_WAIT_MS = 1000;
const MAX_ACK_WAIT_MS = 10_000;
const DEFAULT_ACK_TIMEOUT_MS = 120_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;

/** HEC's response codes (Splunk's "Troubleshoot HTTP Event Collector"). */
export const HEC_CODES: Readonly<Record<number, string>> = {
  0: "Success",
  1: "Token disabled",
  2: "Token is required",
  3: "Invalid authorization",
  4: "Invalid token",
  5: "No data",
  6: "Invalid data format",
  7: "Incorrect index",
  8: "Internal server error",
  9: "Server is busy",
  10: "Data channel is missing",
  11: "Invalid data channel",
  12: "Event field is required",
  13: "Event field cannot be blank",
  14: "ACK is disabled",
  15: "Error in handling indexed fields",
  16: "Query string authorization is not enabled",
};
/** Codes that blame one event of the request (the answer names it with `invalid-event-number`). */
const EVENT_CODES = new Set([6, 12, 13, 15]);

export interface SplunkOptions {
  /** Items per send (default 100). */
  batchSize?: number;
  /** Largest request body (default 1,000,000 bytes). */
  maxRequestBytes?: number;
  /** Largest single event before the alert is shortened (default 900 KiB). */
  maxEventBytes?: number;
  /** Longest total wait for indexer acknowledgement per send (default 120 s). */
  ackTimeoutMs?: number;
  requestTimeoutMs?: number;
}

export interface HecEvent {
  deliveryKey: string;
  /** One JSON object, as it goes into the body. */
  line: string;
  truncated: boolean;
}

/** The HEC event for one alert version. */
export function toHecEvent(item: DeliveryItem, config: Pick<SplunkConfig, "index" | "sourcetype">, maxEventBytes = MAX_EVENT_BYTES): HecEvent {
  let alert: unknown;
  try {
    alert = JSON.parse(item.json);
  } catch {
    alert = item.json; // not JSON: sent as text
  }
  const ms = timeMs(item.lastUpdateTimeExact);
  const fields: Record<string, string> = {
    deliveryKey: item.deliveryKey,
    customerTenantId: item.tenantId,
    customerName: item.customerName,
  };
  const envelope = (event: unknown, extra: Record<string, string> = {}) =>
    JSON.stringify({
      ...(ms !== undefined ? { time: Number((ms / 1000).toFixed(3)) } : {}),
      source: `mssp-defender-collector:${item.source}`,
      sourcetype: config.sourcetype ?? DEFAULT_SOURCETYPE,
      ...(config.index ? { index: config.index } : {}),
      event,
      fields: { ...fields, ...extra },
    });
  const whole = envelope(alert);
  if (Buffer.byteLength(whole) <= maxEventBytes) return { deliveryKey: item.deliveryKey, line: whole, truncated: false };
  const evidence = isObject(alert) && Array.isArray(alert.evidence) ? alert.evidence : undefined;
  const extra = {
    rawTruncated: "true",
    ...(evidence ? { evidenceCount: String(evidence.length) } : {}),
    collectorUrl: item.collectorUrl,
  };
  if (isObject(alert)) {
    const { evidence: _dropped, ...rest } = alert;
    const shorter = envelope(rest, extra);
    if (Buffer.byteLength(shorter) <= maxEventBytes) return { deliveryKey: item.deliveryKey, line: shorter, truncated: true };
  }
  const columns: Record<string, string> = { id: item.alertId };
  for (const [k, v] of Object.entries(item.columns)) if (v !== undefined && v.length <= 1024) columns[k] = v;
  return { deliveryKey: item.deliveryKey, line: envelope(columns, extra), truncated: true };
}

interface HecAnswer {
  /** 0 for a network failure or timeout. */
  status: number;
  code?: number;
  ackId?: number;
  invalidEvent?: number;
  acks?: Record<string, unknown>;
  retryAfterMs?: number;
}

export function createSplunkDestination(config: SplunkConfig, deps: DestinationDeps, options: SplunkOptions = {}): Destination {
  const base = config.url.replace(/\/+$/, "");
  const channel = randomUUID();
  const maxRequestBytes = options.maxRequestBytes ?? MAX_REQUEST_BYTES;
  const maxEventBytes = Math.min(options.maxEventBytes ?? MAX_EVENT_BYTES, maxRequestBytes);
  const ackTimeoutMs = options.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS;
  const timeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;

  async function post(path: string, token: string, body: string): Promise<HecAnswer> {
    try {
      const res = await request(`${base}${path}`, {
        method: "POST",
        headers: {
          Authorization: `Splunk ${token}`,
          "Content-Type": "application/json",
          ...(config.useAck ? { "X-Splunk-Request-Channel": channel } : {}),
        },
        body,
        headersTimeout: timeout,
        bodyTimeout: timeout,
      });
      const text = await res.body.text();
      const header = res.headers["retry-after"];
      const wait = retryAfterMs(Array.isArray(header) ? header[0] : header, deps.now());
      const answer: HecAnswer = { status: res.statusCode, ...(wait !== undefined ? { retryAfterMs: wait } : {}) };
      try {
        const json = JSON.parse(text) as Record<string, unknown>;
        if (typeof json.code === "number") answer.code = json.code;
        if (typeof json.ackId === "number") answer.ackId = json.ackId;
        if (typeof json["invalid-event-number"] === "number") answer.invalidEvent = json["invalid-event-number"];
        if (isObject(json.acks)) answer.acks = json.acks;
      } catch {
        // not JSON (a proxy's page): the status decides
      }
      return answer;
    } catch {
      return { status: 0 };
    }
  }

  /** Packs events into request bodies of at most maxRequestBytes, in order. */
  function pack(events: HecEvent[]): HecEvent[][] {
    const requests: HecEvent[][] = [];
    let current: HecEvent[] = [];
    let size = 0;
    for (const e of events) {
      const bytes = Buffer.byteLength(e.line) + 1;
      if (current.length > 0 && size + bytes > maxRequestBytes) {
        requests.push(current);
        current = [];
        size = 0;
      }
      current.push(e);
      size += bytes;
    }
    if (current.length > 0) requests.push(current);
    return requests;
  }

  return {
    name: config.name,
    type: "splunk",
    batchSize: options.batchSize ?? SPLUNK_BATCH_SIZE,
    async send(items: DeliveryItem[]): Promise<SendReport> {
      if (items.length === 0) return { delivered: [], failed: [] };
      const token = await deps.secret(config.tokenSecretName);
      if (!token) {
        throw new DestinationError("hec-token-missing", `The HEC token secret ${config.tokenSecretName} is not in Key Vault`);
      }
      const events = items.map((item) => toHecEvent(item, config, maxEventBytes));
      const truncated = events.filter((e) => e.truncated).length;
      if (truncated > 0) deps.log.info(`delivery.splunk.shortened destination=${config.name} events=${truncated}`);

      const delivered: string[] = [];
      const failed = new Map<string, { permanent: boolean; code: string }>();
      const fail = (batch: HecEvent[], permanent: boolean, code: string) => {
        for (const e of batch) failed.set(e.deliveryKey, { permanent, code });
      };
      const pending: { ackId: number; events: HecEvent[] }[] = [];
      let retryAfter: number | undefined;
      let stopped: { code: string; message: string; wholeCall: boolean } | undefined;

      const queue = pack(events);
      for (let i = 0; i < queue.length; i++) {
        const batch = queue[i] as HecEvent[];
        if (stopped) {
          fail(batch, false, stopped.code);
          continue;
        }
        const a = await post("/services/collector/event", token, batch.map((e) => e.line).join("\n"));
        const code = hecCode(a);
        if (a.status === 200 && (a.code === undefined || a.code === 0)) {
          if (!config.useAck) delivered.push(...batch.map((e) => e.deliveryKey));
          else if (a.ackId !== undefined) pending.push({ ackId: a.ackId, events: batch });
          else {
            throw new DestinationError(
              "hec-ack-disabled",
              "USE_ACK is true but Splunk HEC answered without an ackId: turn on indexer acknowledgement for the token, or set USE_ACK=false",
            );
          }
        } else if (a.status === 429 || a.status === 503) {
          if (a.retryAfterMs !== undefined) retryAfter = Math.max(retryAfter ?? 0, a.retryAfterMs);
          stopped = { code, message: `Splunk HEC is busy (${describe(a)})`, wholeCall: false };
          fail(batch, false, code);
        } else if (a.status === 400 && a.code !== undefined && EVENT_CODES.has(a.code)) {
          const bad = a.invalidEvent !== undefined ? batch[a.invalidEvent] : undefined;
          if (bad) {
            fail(batch, false, `${code}-batch`);
            failed.set(bad.deliveryKey, { permanent: true, code });
          } else if (batch.length > 1) {
            queue.splice(i + 1, 0, ...batch.map((e) => [e]));
          } else fail(batch, true, code);
        } else if (a.status === 413) {
          if (batch.length > 1) {
            const half = Math.ceil(batch.length / 2);
            queue.splice(i + 1, 0, batch.slice(0, half), batch.slice(half));
          } else fail(batch, true, code);
        } else if (a.status === 0 || a.status >= 500) {
          const message = a.status === 0 ? "Splunk HEC could not be reached" : `Splunk HEC answered ${describe(a)}`;
          stopped = { code, message, wholeCall: true };
          fail(batch, false, code);
        } else {
          throw new DestinationError(code, configMessage(a, config.name));
        }
      }

      if (pending.length > 0) {
        await awaitAcks(pending, token, delivered, fail);
      }

      if (delivered.length === 0 && stopped?.wholeCall && [...failed.values()].every((f) => !f.permanent)) {
        throw new DestinationError(stopped.code, stopped.message, retryAfter);
      }
      return {
        delivered,
        failed: [...failed].map(([deliveryKey, f]) => ({ deliveryKey, ...f })),
        ...(retryAfter !== undefined ? { retryAfterMs: retryAfter } : {}),
      };
    },
  };

  /** Polls the ack endpoint until every request is acknowledged or ackTimeoutMs of waiting has passed. */
  async function awaitAcks(
    pending: { ackId: number; events: HecEvent[] }[],
    token: string,
    delivered: string[],
    fail: (batch: HecEvent[], permanent: boolean, code: string) => void,
  ): Promise<void> {
    let waited = 0;
    let wait = FIRST_ACK_WAIT_MS;
    let lastCode = "hec-ack-timeout";
    while (pending.length > 0 && waited < ackTimeoutMs) {
      const step = Math.min(wait, ackTimeoutMs - waited);
      await deps.sleep(step);
      waited += step;
      wait = Math.min(wait * 2, MAX_ACK_WAIT_MS);
      const a = await post(`/services/collector/ack?channel=${channel}`, token, JSON.stringify({ acks: pending.map((p) => p.ackId) }));
      if (a.status === 200 && a.acks) {
        for (let j = pending.length - 1; j >= 0; j--) {
          const p = pending[j] as { ackId: number; events: HecEvent[] };
          // Splunk forgets an ackId once it has answered true: take it now.
          if (a.acks[String(p.ackId)] === true) {
            delivered.push(...p.events.map((e) => e.deliveryKey));
            pending.splice(j, 1);
          }
        }
      } else if (a.status === 400 || a.status === 401 || a.status === 403) {
        lastCode = hecCode(a);
        deps.log.warn(`delivery.splunk.ack-refused destination=${config.name} code=${lastCode}`);
        break;
      }
      // Other answers (busy, network): keep polling until the time is up.
    }
    if (pending.length > 0) {
      deps.log.warn(`delivery.splunk.unacknowledged destination=${config.name} requests=${pending.length} waitedMs=${waited} code=${lastCode}`);
      for (const p of pending) fail(p.events, false, lastCode);
    }
  }
}

/** `hec-<status>[-<code>]`, or `network`. */
function hecCode(a: HecAnswer): string {
  if (a.status === 0) return "network";
  return a.code === undefined ? `hec-${a.status}` : `hec-${a.status}-${a.code}`;
}

/** Status and HEC code with Splunk's own name for it (never the response text). */
function describe(a: HecAnswer): string {
  if (a.code === undefined) return String(a.status);
  return `${a.status}, code ${a.code}${HEC_CODES[a.code] ? ` ${HEC_CODES[a.code]}` : ""}`;
}

function configMessage(a: HecAnswer, name: string): string {
  const prefix = `DESTINATIONS__${name}`;
  if (a.status === 401 || a.status === 403) return `Splunk HEC refused the token (${describe(a)}): check the secret named by ${prefix}__TOKEN_SECRET_NAME`;
  if (a.code === 7) return `Splunk HEC refused the index (${describe(a)}): check ${prefix}__INDEX and the token's allowed indexes`;
  if (a.code === 10 || a.code === 11 || a.code === 14) return `Splunk HEC refused indexer acknowledgement (${describe(a)}): check ${prefix}__USE_ACK against the token's settings`;
  if (a.status === 404 || a.status === 405) return `Splunk HEC answered ${describe(a)}: ${prefix}__URL must be the HEC base URL (without /services/collector)`;
  return `Splunk HEC refused the request (${describe(a)})`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
