import { fetch as undiciFetch } from "undici";
import type { Logger } from "../../../platform/services.js";
import { ALERT_COLUMNS, type RawAlert } from "../../alert-store.js";
import { BudgetExhaustedError, type CallBudget } from "../../budget.js";
import { type AlertSource, type ReadOptions, type SourcePage, SourceApiError, type WindowQuery } from "../../source.js";
import { canonicalTime } from "../../time.js";
import { splitODataPage } from "./odata-json.js";

/**
 * The Defender for Endpoint alerts list API as an AlertSource: the per-tenant call budget,
 * Retry-After on 429 (a wait longer than a run can afford ends the run cleanly),
 * capped exponential backoff with full jitter for 5xx answers, timeouts, resets and
 * cut-off bodies, and a log line for every retry. `@odata.nextLink` is followed only on
 * the configured API origin, because the bearer token goes with it.
 */

export interface DefenderSourceOptions {
  tenantId: string;
  baseUrl: string;
  /** A bearer token; `forceNew` asks for a new one after a 401. */
  token(forceNew: boolean): Promise<string>;
  budget: CallBudget;
  sleep(ms: number): Promise<void>;
  log: Logger;
  /** Longest Retry-After waited for inside a run; longer ones end the run cleanly. */
  maxRetryAfterMs?: number;
  maxAttempts?: number;
  requestTimeoutMs?: number;
  random?: () => number;
}

export const DEFAULT_MAX_RETRY_AFTER_MS = 120_000;
const DEFAULT_ATTEMPTS = 6;

export class DefenderSource implements AlertSource {
  readonly name = "defender";
  /** Response bytes received, by purpose (for the run's log line and the benchmark). */
  readonly bytes = { incremental: 0, sweep: 0 };
  private readonly origin: string;

  constructor(private readonly options: DefenderSourceOptions) {
    this.origin = new URL(options.baseUrl).origin;
  }

  listUrl(query: WindowQuery): string {
    const filter = `lastUpdateTime ge ${new Date(query.from).toISOString()} and lastUpdateTime lt ${new Date(query.to).toISOString()}`;
    const params = new URLSearchParams({ $filter: filter });
    if (query.full) params.set("$expand", "evidence");
    params.set("$top", String(query.top));
    if (query.skip) params.set("$skip", String(query.skip));
    return `${this.options.baseUrl}/api/alerts?${params.toString().replace(/\+/g, "%20")}`;
  }

  list(query: WindowQuery, options: ReadOptions): Promise<SourcePage> {
    return this.page(this.listUrl(query), options);
  }

  next(nextLink: string, options: ReadOptions): Promise<SourcePage> {
    if (!URL.canParse(nextLink) || new URL(nextLink).origin !== this.origin) {
      throw new SourceApiError(200, "UntrustedNextLink", "The API sent a next link to another origin; it was not followed");
    }
    return this.page(nextLink, options);
  }

  private async page(url: string, options: ReadOptions): Promise<SourcePage> {
    const attempts = options.attempts ?? this.options.maxAttempts ?? DEFAULT_ATTEMPTS;
    for (let attempt = 1; ; attempt++) {
      const text = await this.get(url, options, attempts - attempt + 1);
      try {
        const page = splitODataPage(text);
        const alerts = page.items.map(toRawAlert);
        return page.nextLink ? { alerts, nextLink: page.nextLink } : { alerts };
      } catch (err) {
        if (err instanceof SourceApiError) throw err;
        // A 200 whose body does not parse: treat like a cut-off body.
        if (attempt >= attempts) throw new SourceApiError(200, "InvalidResponse", "The API's answer could not be parsed", true);
        this.options.log.warn(`defender.retry tenantId=${this.options.tenantId} status=200 code=InvalidResponse attempt=${attempt} waitMs=0`);
      }
    }
  }

  private async get(url: string, options: ReadOptions, maxAttempts: number): Promise<string> {
    const { sleep, budget, log, tenantId } = this.options;
    const maxRetryAfterMs = this.options.maxRetryAfterMs ?? DEFAULT_MAX_RETRY_AFTER_MS;
    const random = this.options.random ?? Math.random;
    let forceNewToken = false;
    for (let attempt = 1; ; attempt++) {
      budget.take(options.purpose);
      // Outside the try: a token failure is not a fault of the Defender API.
      const token = await this.options.token(forceNewToken);
      let status = 0; // stays 0 for a timeout, reset, cut-off body or other network failure
      let retryAfterMs: number | undefined;
      let body = "";
      try {
        const response = await undiciFetch(url, {
          headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
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
        throw new SourceApiError(status, errorCode(body, status), errorMessage(status));
      }
      if (attempt >= maxAttempts) {
        const code = status === 0 ? "NetworkError" : `HTTP${status}`;
        throw new SourceApiError(status, code, "The Defender API kept failing", true);
      }
      let wait: number;
      if (status === 429) {
        wait = retryAfterMs ?? 60_000;
        if (wait > maxRetryAfterMs) {
          log.warn(`defender.throttled tenantId=${tenantId} status=429 waitMs=${wait} action=stop`);
          throw new BudgetExhaustedError("the Defender API asked to wait longer than a run can");
        }
      } else {
        const cap = Math.min(30_000, 1000 * 2 ** (attempt - 1));
        wait = Math.max(retryAfterMs ?? 0, Math.floor(random() * cap));
      }
      log.warn(`defender.retry tenantId=${tenantId} status=${status} attempt=${attempt} waitMs=${wait}`);
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

function errorMessage(status: number): string {
  if (status === 401 || status === 403) {
    return 'Defender refused to list alerts: the consenting account needs the "View Data" role on all device groups';
  }
  return `Defender API answered ${status}`;
}

const KEPT_FIELDS = [...ALERT_COLUMNS, "incidentId", "alertCreationTime"];

function toRawAlert(json: string): RawAlert {
  const parsed = JSON.parse(json) as Record<string, unknown>;
  const id = parsed.id;
  const lastUpdateTime = parsed.lastUpdateTime;
  if (typeof id !== "string" || id === "" || typeof lastUpdateTime !== "string" || !canonicalTime(lastUpdateTime)) {
    throw new SourceApiError(200, "InvalidAlert", "An alert without id or a readable lastUpdateTime was returned", true);
  }
  // Keep only the columns' fields: the parsed evidence would double a page's memory.
  const fields: Record<string, unknown> = {};
  for (const name of KEPT_FIELDS) fields[name] = parsed[name];
  return { json, id, lastUpdateTime, fields };
}
