import { fetch as undiciFetch } from "undici";
import type { Logger } from "../../platform/services.js";
import type { RawAlert } from "../alert-store.js";
import { BudgetExhaustedError, type CallBudget } from "../budget.js";
import { type ItemSink, type ReadOptions, SourceApiError } from "../source.js";
import { timeMs } from "../time.js";
import { ODataItemStream } from "./odata-json.js";

/**
 * GET of OData list pages for the alert sources (Defender, Graph): the per-tenant call
 * budget, Retry-After on 429 (a wait longer than a run can afford ends the run cleanly),
 * capped exponential backoff with full jitter for 5xx answers, timeouts, resets and
 * cut-off bodies, one new token after a 401, and a log line for every retry.
 */

export interface ODataClientOptions {
  /** The log lines' prefix and the API's name in messages: `defender`, `graph`. */
  name: string;
  tenantId: string;
  /** A bearer token; `forceNew` asks for a new one after a 401. */
  token(forceNew: boolean): Promise<string>;
  budget: CallBudget;
  sleep(ms: number): Promise<void>;
  log: Logger;
  /** Extra request headers (e.g. Graph's `Prefer`). */
  headers?: Record<string, string>;
  /** The message of a 4xx answer that is not a throttle (never includes the body). */
  refusal(status: number): string;
  /** Longest Retry-After waited for inside a run; longer ones end the run cleanly. */
  maxRetryAfterMs?: number;
  maxAttempts?: number;
  requestTimeoutMs?: number;
  random?: () => number;
}

export const DEFAULT_MAX_RETRY_AFTER_MS = 120_000;

export interface ODataAlertPage {
  /** The page's items, unless a sink took them. */
  alerts: RawAlert[];
  /** How many items the page held. */
  items: number;
  /** The update times (ms) of every item of the page. */
  times: number[];
  nextLink?: string;
  /** `@odata.count` of the whole result, when asked for. */
  count?: number;
}

/** Items handed to a sink at once while a page downloads (memory follows this, not the page). */
export const STREAM_BATCH = 100;
const DEFAULT_ATTEMPTS = 6;

export class ODataClient {
  /** Response bytes received, by purpose (for the run's log line and the benchmark). */
  readonly bytes = { incremental: 0, sweep: 0 };

  constructor(private readonly options: ODataClientOptions) {}

  /**
   * One page: its items as RawAlerts (each the exact text the API sent) and its nextLink.
   * With a sink, the body is parsed as it downloads and items go to the sink in batches
   * (awaited, so a slow sink slows the download instead of filling memory). A page that
   * fails mid-body is asked again from its start; items it already handed out are handed
   * out again, which newest-wins writing makes harmless.
   */
  async page(url: string, options: ReadOptions, toAlert: (json: string) => RawAlert, sink?: ItemSink): Promise<ODataAlertPage> {
    const attempts = options.attempts ?? this.options.maxAttempts ?? DEFAULT_ATTEMPTS;
    for (let attempt = 1; ; attempt++) {
      const page: ODataAlertPage = { alerts: [], items: 0, times: [] };
      let batch: RawAlert[] = [];
      const flush = async () => {
        if (batch.length === 0) return;
        const out = batch;
        batch = [];
        if (sink) await sink(out);
        else page.alerts.push(...out);
      };
      const stream = new ODataItemStream();
      const onText = async (text: string) => {
        for (const item of stream.feed(text)) {
          const alert = toAlert(item);
          page.items++;
          page.times.push(timeMs(alert.lastUpdateTime) ?? 0);
          batch.push(alert);
          if (batch.length >= STREAM_BATCH) await flush();
        }
      };
      try {
        await this.get(url, options, attempts - attempt + 1, onText);
        await flush();
        const envelope = stream.end();
        if (envelope.nextLink) page.nextLink = envelope.nextLink;
        if (envelope.count !== undefined) page.count = envelope.count;
        return page;
      } catch (err) {
        if (!(err instanceof SyntaxError || err instanceof BodyCutOff)) throw err;
        // A cut-off body, or a 200 whose body does not parse: ask again from the start.
        if (attempt >= attempts) {
          throw err instanceof BodyCutOff
            ? new SourceApiError(0, "NetworkError", `The ${this.options.name} API kept failing`, true)
            : new SourceApiError(200, "InvalidResponse", "The API's answer could not be parsed", true);
        }
        const code = err instanceof BodyCutOff ? "status=0" : "status=200 code=InvalidResponse";
        this.options.log.warn(`${this.options.name}.retry tenantId=${this.options.tenantId} ${code} attempt=${attempt} waitMs=0`);
      }
    }
  }

  /** Sends the request (retrying what failed before the body began) and streams the 2xx body as text into `onText`. */
  private async get(url: string, options: ReadOptions, maxAttempts: number, onText: (text: string) => Promise<void>): Promise<void> {
    const { sleep, budget, log, tenantId, name } = this.options;
    const maxRetryAfterMs = this.options.maxRetryAfterMs ?? DEFAULT_MAX_RETRY_AFTER_MS;
    const random = this.options.random ?? Math.random;
    let forceNewToken = false;
    for (let attempt = 1; ; attempt++) {
      budget.take(options.purpose);
      // Outside the try: a token failure is not a fault of the API.
      const token = await this.options.token(forceNewToken);
      let status = 0; // stays 0 for a timeout, reset, cut-off body or other network failure
      let retryAfterMs: number | undefined;
      let body = "";
      let response: Awaited<ReturnType<typeof undiciFetch>> | undefined;
      try {
        response = await undiciFetch(url, {
          headers: { ...this.options.headers, Authorization: `Bearer ${token}`, Accept: "application/json" },
          signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 120_000),
        });
        retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
        status = response.status;
        if (status < 200 || status >= 300) {
          body = await response.text();
          this.bytes[options.purpose] += Buffer.byteLength(body);
        }
      } catch {
        // a network failure before or while the status arrived: status stays 0, retried
        status = 0;
      }
      if (status >= 200 && status < 300 && response?.body) {
        // The body streams into the parser: a failure to read it is a cut-off body; what
        // the parser or the sink throws is theirs and goes up as it is.
        const decoder = new TextDecoder("utf-8");
        const chunks = (response.body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
        let done = false;
        try {
          for (;;) {
            let next: IteratorResult<Uint8Array>;
            try {
              next = await chunks.next();
            } catch {
              done = true;
              throw new BodyCutOff();
            }
            if (next.done) {
              done = true;
              break;
            }
            this.bytes[options.purpose] += next.value.byteLength;
            await onText(decoder.decode(next.value, { stream: true }));
          }
        } finally {
          // The parser or the sink gave up: let the rest of the body go.
          if (!done) await chunks.return?.().catch(() => undefined);
        }
        await onText(decoder.decode());
        return;
      }
      if (status === 401 && !forceNewToken) {
        forceNewToken = true;
        continue;
      }
      if (status !== 0 && status !== 429 && status < 500) {
        throw new SourceApiError(status, errorCode(body, status), this.options.refusal(status));
      }
      if (attempt >= maxAttempts) {
        const code = status === 0 ? "NetworkError" : `HTTP${status}`;
        throw new SourceApiError(status, code, `The ${name} API kept failing`, true);
      }
      let wait: number;
      if (status === 429) {
        wait = retryAfterMs ?? 60_000;
        if (wait > maxRetryAfterMs) {
          log.warn(`${name}.throttled tenantId=${tenantId} status=429 waitMs=${wait} action=stop`);
          throw new BudgetExhaustedError(`the ${name} API asked to wait longer than a run can`);
        }
      } else {
        const cap = Math.min(30_000, 1000 * 2 ** (attempt - 1));
        wait = Math.max(retryAfterMs ?? 0, Math.floor(random() * cap));
      }
      log.warn(`${name}.retry tenantId=${tenantId} status=${status} attempt=${attempt} waitMs=${wait}`);
      await sleep(wait);
    }
  }
}

export function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** The connection broke while a 2xx body was arriving. */
class BodyCutOff extends Error {
  constructor() {
    super("The response body was cut off");
    this.name = "BodyCutOff";
  }
}

function errorCode(body: string, status: number): string {
  try {
    const code = (JSON.parse(body) as { error?: { code?: unknown } }).error?.code;
    if (typeof code === "string" && /^[\w.-]{1,64}$/.test(code)) return code;
  } catch {
    // not JSON
  }
  return `HTTP${status}`;
}

/** A nextLink is followed on the API's own origin only: the bearer token goes with it. */
export function checkedNextLink(nextLink: string, origin: string): string {
  if (!URL.canParse(nextLink) || new URL(nextLink).origin !== origin) {
    throw new SourceApiError(200, "UntrustedNextLink", "The API sent a next link to another origin; it was not followed");
  }
  return nextLink;
}
