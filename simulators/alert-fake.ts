/**
 * What FakeDefender and FakeGraph share: per-tenant alert sets (with a pseudo-random order
 * that changes whenever the data does), 403s, fault queues and the request log with its
 * rate-limit window. Each fake keeps its own HTTP surface, paging and error shapes.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { createRng, formatTimestamp, hashString, toTicks } from "./alerts.js";

export type Fault =
  /** 429 with a Retry-After header (default 1 second). */
  | { status: 429; retryAfterSeconds?: number }
  /** A server error; Retry-After is sent only when given. */
  | { status: 500 | 502 | 503 | 504; retryAfterSeconds?: number }
  /** Destroy the socket without any response. */
  | { reset: true }
  /** Wait, then answer normally (consumes no other fault). */
  | { delayMs: number }
  /** Answer normally but destroy the socket after this many bytes of body. */
  | { truncateAfterBytes: number };

/** The request log fields the shared controls read. */
export interface LoggedRequest {
  tenantId: string | null;
  /** `now()` when the request arrived. */
  time: number;
  /** Final HTTP status; 0 for a reset connection. */
  status: number;
}

export interface Rec<A> {
  alert: A;
  updated: bigint;
  created: bigint;
}

export interface TenantState<A, E> {
  byId: Map<string, Rec<A>>;
  /** Bumped on every change; seeds the response order. */
  version: number;
  ordered: Rec<A>[] | null;
  orderedVersion: number;
  forbidden: string | null;
  faults: Fault[];
  log: E[];
}

/** Where a fake listens. */
export interface AlertFakeListen {
  certs: { key: string; cert: string };
  /** Default 0 (any free port). */
  port?: number;
  /** Address to bind, default 127.0.0.1. */
  host?: string;
  /** Host name in `url`, default 127.0.0.1. */
  hostname?: string;
}

export interface AlertFakeSettings {
  /** The fake's name in errors (`FakeDefender`). */
  name: string;
  listen: AlertFakeListen;
  /** forbid()'s message when none is given. */
  forbiddenMessage: string;
  /** Seed of the sub-millisecond digits touch() adds to a Date. */
  touchSeed: string;
  /** Prefix of the per-version salt of the response order. */
  orderSalt: string;
}

export abstract class AlertFake<A extends { id: string }, E extends LoggedRequest> {
  protected readonly tenants = new Map<string, TenantState<A, E>>();
  protected readonly anyFaults: Fault[] = [];
  protected readonly log: E[] = [];
  /** Aborted by stop(): ends the waits of delay faults. */
  protected readonly stopping = new AbortController();
  private readonly touchRng: () => number;
  private server: Server | null = null;
  private baseUrl: string | null = null;

  constructor(private readonly settings: AlertFakeSettings) {
    this.touchRng = createRng(settings.touchSeed);
  }

  /** Answers one request. */
  protected abstract handle(req: IncomingMessage, res: ServerResponse): Promise<void>;

  /** Answers 500 in the API's own error shape, for a request the handler failed on. */
  protected abstract internalError(req: IncomingMessage, res: ServerResponse, err: unknown): void;

  /** Base URL, e.g. https://127.0.0.1:53211 (no trailing slash). */
  get url(): string {
    if (!this.baseUrl) throw new Error(`${this.settings.name} is not started`);
    return this.baseUrl;
  }

  async start(): Promise<void> {
    const { certs, port, host, hostname } = this.settings.listen;
    const server = createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent && !res.destroyed) this.internalError(req, res, err);
        else res.destroy();
      });
    });
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port ?? 0, host ?? "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    const address = server.address() as AddressInfo;
    this.baseUrl = `https://${hostname ?? "127.0.0.1"}:${address.port}`;
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    const server = this.server;
    if (!server) return;
    this.server = null;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  /** The stored record of an alert, with its times as ticks for $filter. */
  protected abstract toRec(alert: A): Rec<A>;

  /** A copy of the alert with the changes and the new last-update time applied. */
  protected abstract retouch(alert: A, changes: Partial<A>, lastUpdate: string): A;

  // -------------------------------------------------------------------------
  // Data.

  /** Replaces the tenant's alerts. The fake keeps the objects: change them through upsertAlert/touch. */
  setAlerts(tenantId: string, alerts: readonly A[]): void {
    const t = this.tenant(tenantId);
    t.byId.clear();
    for (const alert of alerts) t.byId.set(alert.id, this.toRec(alert));
    t.version++;
  }

  upsertAlert(tenantId: string, alert: A): void {
    const t = this.tenant(tenantId);
    t.byId.set(alert.id, this.toRec(alert));
    t.version++;
  }

  removeAlert(tenantId: string, id: string): boolean {
    const t = this.tenant(tenantId);
    const removed = t.byId.delete(id);
    if (removed) t.version++;
    return removed;
  }

  getAlerts(tenantId: string): A[] {
    return [...(this.tenants.get(tenantId)?.byId.values() ?? [])].map((rec) => rec.alert);
  }

  getAlert(tenantId: string, id: string): A | undefined {
    return this.tenants.get(tenantId)?.byId.get(id)?.alert;
  }

  /**
   * Updates alerts the way the service does: a new last-update time plus optional field
   * changes (e.g. a new status). A Date becomes that millisecond plus random
   * sub-millisecond digits (7 fractional digits); a string is used verbatim. The stored
   * objects are replaced, not mutated, so earlier references keep the old state.
   */
  touch(tenantId: string, ids: readonly string[], newTime: Date | string, changes: Partial<A> = {}): A[] {
    const t = this.tenant(tenantId);
    const updated: A[] = [];
    for (const id of ids) {
      const rec = t.byId.get(id);
      if (!rec) throw new Error(`tenant ${tenantId} has no alert ${id}`);
      const lastUpdate =
        typeof newTime === "string"
          ? newTime
          : formatTimestamp(toTicks(newTime) + BigInt(Math.floor(this.touchRng() * 10_000)), 7);
      const alert = this.retouch(rec.alert, changes, lastUpdate);
      t.byId.set(id, this.toRec(alert));
      updated.push(alert);
    }
    if (ids.length > 0) t.version++;
    return updated;
  }

  /** Makes the tenant's requests fail with 403 (the app or user lacks access). */
  forbid(tenantId: string, message = this.settings.forbiddenMessage): void {
    this.tenant(tenantId).forbidden = message;
  }

  allow(tenantId: string): void {
    this.tenant(tenantId).forbidden = null;
  }

  /** Queues a fault for the tenant's next request(s); "*" queues it for any request. Tenant queues go first. */
  inject(tenantId: string | "*", fault: Fault, times = 1): void {
    const queue = tenantId === "*" ? this.anyFaults : this.tenant(tenantId).faults;
    for (let i = 0; i < times; i++) queue.push(fault);
  }

  clearFaults(): void {
    this.anyFaults.length = 0;
    for (const t of this.tenants.values()) t.faults.length = 0;
  }

  // -------------------------------------------------------------------------
  // Request log.

  /** All requests, or one tenant's (use null for unauthenticated ones), oldest first. */
  requests(tenantId?: string | null): E[] {
    if (tenantId === undefined) return [...this.log];
    if (tenantId === null) return this.log.filter((e) => e.tenantId === null);
    return [...(this.tenants.get(tenantId)?.log ?? [])];
  }

  clearRequests(): void {
    this.log.length = 0;
    for (const t of this.tenants.values()) t.log.length = 0;
  }

  /** Most requests the tenant made within any `windowMs`-long window, by `now()` times. */
  maxRequestsInWindow(tenantId: string, windowMs: number): number {
    const times = (this.tenants.get(tenantId)?.log ?? []).map((e) => e.time).sort((a, b) => a - b);
    let best = 0;
    let start = 0;
    for (let end = 0; end < times.length; end++) {
      while ((times[end] as number) - (times[start] as number) >= windowMs) start++;
      best = Math.max(best, end - start + 1);
    }
    return best;
  }

  // -------------------------------------------------------------------------
  // For the HTTP side.

  protected tenant(tenantId: string): TenantState<A, E> {
    let t = this.tenants.get(tenantId);
    if (!t) {
      t = { byId: new Map(), version: 0, ordered: null, orderedVersion: -1, forbidden: null, faults: [], log: [] };
      this.tenants.set(tenantId, t);
    }
    return t;
  }

  /** Takes the next queued fault: the tenant's first, then one queued for any request. */
  protected takeFault(tenant: TenantState<A, E> | null): Fault | null {
    return tenant?.faults.shift() ?? this.anyFaults.shift() ?? null;
  }

  /**
   * Seconds until the tenant may ask again when this request breaks a per-minute or
   * per-hour limit, else null.
   */
  protected rateLimitWait(
    limits: { perMinute?: number; perHour?: number } | undefined,
    tenant: TenantState<A, E>,
    entry: E,
  ): number | null {
    if (!limits) return null;
    for (const [limit, windowMs] of [
      [limits.perMinute, 60_000],
      [limits.perHour, 3_600_000],
    ] as const) {
      if (limit === undefined) continue;
      // Requests the limit itself turned away do not count, so Retry-After holds.
      const inWindow = tenant.log.filter(
        (e) => e.time > entry.time - windowMs && e.time <= entry.time && (e === entry || e.status !== 429),
      );
      if (inWindow.length > limit) {
        const oldest = inWindow[inWindow.length - 1 - limit] as E;
        return Math.max(1, Math.ceil((oldest.time + windowMs - entry.time) / 1000));
      }
    }
    return null;
  }

  /** The tenant's alerts in this version's pseudo-random order (recomputed only after a change). */
  protected orderedRecs(tenant: TenantState<A, E>): Rec<A>[] {
    if (tenant.ordered && tenant.orderedVersion === tenant.version) return tenant.ordered;
    const salt = `${this.settings.orderSalt}:${tenant.version}`;
    const decorated = [...tenant.byId.values()].map((rec) => ({ key: mix32(hashString(salt, hashString(rec.alert.id))), rec }));
    decorated.sort((a, b) => a.key - b.key);
    tenant.ordered = decorated.map((d) => d.rec);
    tenant.orderedVersion = tenant.version;
    return tenant.ordered;
  }
}

/** Scrambles all 32 bits (the MurmurHash3 finalizer), so hash order looks random. */
export function mix32(h: number): number {
  let x = h >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Resolves after `ms`, or at once when the fake stops. */
export function delay(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}
