import { fetch as undiciFetch } from "undici";
import type { Logger } from "../../platform/services.js";
import type { RawAlert } from "../alert-store.js";
import { BudgetExhaustedError, type CallBudget } from "../budget.js";
import { type ReadOptions, SourceApiError } from "../source.js";
import { splitODataPage } from "./odata-json.js";

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
  alerts: RawAlert[];
  nextLink?: string;
  /** `@odata.count` of the whole result, when asked for. */
  count?: number;
}
const DEFAULT_ATTEMPTS = 6;

export class ODataClient {
  /** Response bytes received, by purpose (for the run's log line and the benchmark). */
  readonly bytes = { incremental: 0, sweep: 0 };

  constructor(private readonly options: ODataClientOptions) {}

  /** One page: its items as RawAlerts (each the exact text the API sent) and its nextLink. */
  async page(url: string, options: ReadOptions, toAlert: (json: string) => RawAlert): Promise<ODataAlertPage> {
    const attempts = options.attempts ?? this.options.maxAttempts ?? DEFAULT_ATTEMPTS;
    for (let attempt = 1; ; attempt++) {
      const text = await this.get(url, options, attempts - attempt + 1);
      try {
        const page = splitODataPage(text);
        const alerts = page.items.map(toAlert);
        return {
          alerts,
          ...(page.nextLink ? { nextLink: page.nextLink } : {}),
          ...(page.count !== undefined ? { count: page.count } : {}),
        };
      } catch (err) {
        if (err instanceof SourceApiError) throw err;
        // A 200 whose body does not parse: treat like a cut-off body.
        if (attempt >= attempts) throw new SourceApiError(200, "InvalidResponse", "The API's answer could not be parsed", true);
        this.options.log.warn(`${this.options.name}.retry tenantId=${this.options.tenantId} status=200 code=InvalidResponse attempt=${attempt} waitMs=0`);
      }
    }
  }

  private async get(url: string, options: ReadOptions, maxAttempts: number): Promise<string> {
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
      try {
        const response = await undiciFetch(url, {
          headers: { ...this.options.headers, Authorization: `Bearer ${token}`, Accept: "application/json" },
          signal: AbortSignal.timeout(this.options.requestTimeoutMs ?? 120_000),
        });
        retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
        body = await response.text();
        status = response.status;
        this.bytes[options.purpose] += Buffer.byteLength(body);
      } catch {
        // a network failure: status stays 0 and the request is retried
      }
      if (status >= 200 && status < 300) return body;
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
