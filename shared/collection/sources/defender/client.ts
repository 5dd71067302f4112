import { fetch as undiciFetch } from "undici";
import { ALERT_COLUMNS, type RawAlert } from "../../alert-store.js";
import { splitODataPage } from "./odata-json.js";

/**
 * The Defender for Endpoint alerts list API, with the per-tenant call budget
 * (100 calls a minute and 1,500 an hour per app and tenant), Retry-After on 429, and capped
 * exponential backoff with jitter for 5xx answers, timeouts and resets.
 */

export class BudgetExhaustedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BudgetExhaustedError";
  }
}

export class DefenderApiError extends Error {
  constructor(
    public readonly status: number,
    public readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "DefenderApiError";
  }
}

/** Calls per minute bucket; persisted on the tenant row so the hourly budget spans runs. */
export class CallBudget {
  private readonly buckets: Map<number, number>;
  /** Calls counted by this instance (this run). */
  calls = 0;

  constructor(
    private readonly perMinute: number,
    private readonly perHour: number,
    private readonly now: () => Date,
    saved?: string,
  ) {
    this.buckets = new Map(parseBuckets(saved));
  }

  /** Counts one call, or throws BudgetExhaustedError when either limit would be passed. */
  take(): void {
    const minute = Math.floor(this.now().getTime() / 60_000);
    for (const key of this.buckets.keys()) if (key <= minute - 60) this.buckets.delete(key);
    const lastMinute = this.buckets.get(minute) ?? 0;
    let lastHour = 0;
    for (const count of this.buckets.values()) lastHour += count;
    if (lastMinute >= this.perMinute) throw new BudgetExhaustedError("per-minute Defender API budget used up");
    if (lastHour >= this.perHour) throw new BudgetExhaustedError("hourly Defender API budget used up");
    this.buckets.set(minute, lastMinute + 1);
    this.calls++;
  }

  serialize(): string {
    return JSON.stringify([...this.buckets.entries()].sort((a, b) => a[0] - b[0]));
  }
}

function parseBuckets(saved: string | undefined): [number, number][] {
  if (!saved) return [];
  try {
    const parsed = JSON.parse(saved) as unknown;
    return Array.isArray(parsed)
      ? parsed.filter(
          (e): e is [number, number] => Array.isArray(e) && typeof e[0] === "number" && typeof e[1] === "number",
        )
      : [];
  } catch {
    return [];
  }
}

export interface DefenderClientOptions {
  baseUrl: string;
  /** Returns a bearer token; `refresh` asks for a new one after a 401. */
  token(refresh: boolean): Promise<string>;
  budget: CallBudget;
  sleep(ms: number): Promise<void>;
  /** Longest Retry-After the client waits for inside a run; longer ones end the run cleanly. */
  maxRetryAfterMs?: number;
  maxAttempts?: number;
  requestTimeoutMs?: number;
  random?: () => number;
}

export interface ListQuery {
  /** Inclusive lower bound on lastUpdateTime. */
  from: Date;
  /** Exclusive upper bound on lastUpdateTime. */
  to: Date;
  top: number;
  skip?: number;
}

export interface ListPage {
  alerts: RawAlert[];
  nextLink?: string;
}

export class DefenderClient {
  constructor(private readonly options: DefenderClientOptions) {}

  listUrl(query: ListQuery): string {
    const filter = `lastUpdateTime ge ${query.from.toISOString()} and lastUpdateTime lt ${query.to.toISOString()}`;
    const params = new URLSearchParams({ $filter: filter, $expand: "evidence", $top: String(query.top) });
    if (query.skip) params.set("$skip", String(query.skip));
    return `${this.options.baseUrl}/api/alerts?${params.toString().replace(/\+/g, "%20")}`;
  }

  async list(url: string): Promise<ListPage> {
    const text = await this.get(url);
    const page = splitODataPage(text);
    const alerts = page.items.map(toRawAlert);
    return page.nextLink ? { alerts, nextLink: page.nextLink } : { alerts };
  }

  private async get(url: string): Promise<string> {
    const { sleep, budget } = this.options;
    const maxAttempts = this.options.maxAttempts ?? 6;
    const maxRetryAfterMs = this.options.maxRetryAfterMs ?? 120_000;
    const random = this.options.random ?? Math.random;
    let refreshToken = false;
    for (let attempt = 1; ; attempt++) {
      budget.take();
      // Outside the try: a token failure is not a fault of the Defender API.
      const token = await this.options.token(refreshToken);
      let status = 0; // stays 0 for a timeout, reset or other network failure
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
      } catch {
        // a network failure: status stays 0 and the request is retried
      }
      if (status >= 200 && status < 300) return body;
      if (status === 401 && !refreshToken) {
        refreshToken = true;
        continue;
      }
      if (status !== 0 && status !== 429 && status < 500) {
        throw new DefenderApiError(status, errorCode(body, status), errorMessage(status));
      }
      if (attempt >= maxAttempts) {
        throw new DefenderApiError(status, status === 0 ? "NetworkError" : `HTTP${status}`, "Defender API kept failing");
      }
      let wait: number;
      if (status === 429) {
        wait = retryAfterMs ?? 60_000;
        if (wait > maxRetryAfterMs) throw new BudgetExhaustedError("Defender API asked to wait longer than a run");
      } else {
        const cap = Math.min(30_000, 1000 * 2 ** (attempt - 1));
        wait = Math.max(retryAfterMs ?? 0, Math.floor(random() * cap));
      }
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
  if (typeof id !== "string" || id === "" || typeof lastUpdateTime !== "string") {
    throw new DefenderApiError(200, "InvalidAlert", "An alert without id or lastUpdateTime was returned");
  }
  // Keep only the columns' fields: the parsed evidence would double a page's memory.
  const fields: Record<string, unknown> = {};
  for (const name of KEPT_FIELDS) fields[name] = parsed[name];
  return { json, id, lastUpdateTime, fields };
}
