import { randomUUID } from "node:crypto";
import { odata } from "@azure/data-tables";
import { type AlertTables, encodeAlert, parseTime, type RawAlert, sha256Hex, writeAlerts } from "./alert-store.js";
import { endpointsFor } from "../platform/config.js";
import { BudgetExhaustedError, CallBudget, DefenderApiError, DefenderClient } from "./sources/defender/client.js";
import { recordClientCredential } from "../platform/health.js";
import { errorName } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { cachedAccessToken, forgetAccessToken, redeemRefreshToken, TokenFailure } from "./tokens.js";
import { CLEARED_ERROR, getTenant, patchTenant, type TenantPatch, type TenantRow } from "../onboarding/tenants.js";

/**
 * One pull of one tenant's alerts, as run by the queue worker.
 *
 * Windows: the query covers lastUpdateTime in [watermark - overlap, now - lag). The API
 * returns items unsorted, in an order that shifts as alerts change, so `$skip` paging can
 * lose items. Each window is therefore read in ONE request with `$top` = page size; a full
 * answer splits the window in two by time, recursively. Only a slice too narrow to split
 * (1 ms) falls back to `$skip`, re-read until two passes return the same ids.
 *
 * Watermark: the newest lastUpdateTime actually stored (data-based, not the query time),
 * advanced only after a window's writes are durable. A crash anywhere loses nothing: the
 * next run starts from the last durable watermark minus the overlap.
 */

export const LEASE_MS = 10 * 60_000;
const MIN_SLICE_MS = 1;
const MAX_SKIP_PASSES = 5;
const WRITE_CONCURRENCY = 4;
const RECOUNT_MS = 3600_000;

export type PullOutcome =
  | "succeeded"
  | "skipped-inactive"
  | "skipped-busy"
  | "reconsent-required"
  | "failed"
  | "partial"
  | "client-credential-failed";

export interface PullResult {
  outcome: PullOutcome;
  alertsWritten: number;
  calls: number;
}

let clientCredentialKnownGood = false;

export async function pullTenant(svc: Services, tenantIdRaw: string, log: Logger): Promise<PullResult> {
  const tenantId = tenantIdRaw.toLowerCase();
  const tenants = svc.storage.table(TABLES.tenants);
  const row = await getTenant(tenants, tenantId);
  if (row?.status !== "active") {
    log.info(`pull.skipped tenantId=${tenantId} reason=${row ? row.status : "unknown-tenant"}`);
    return { outcome: "skipped-inactive", alertsWritten: 0, calls: 0 };
  }
  const now = svc.now();
  if (row.pullLeaseUntil && Date.parse(row.pullLeaseUntil) > now.getTime()) {
    log.info(`pull.skipped tenantId=${tenantId} reason=already-running`);
    return { outcome: "skipped-busy", alertsWritten: 0, calls: 0 };
  }
  const leaseId = randomUUID();
  const leased = await patchTenant(tenants, tenantId, row.etag, {
    pullLeaseId: leaseId,
    pullLeaseUntil: new Date(now.getTime() + LEASE_MS).toISOString(),
    lastPullAt: now.toISOString(),
  });
  if (!leased) {
    log.info(`pull.skipped tenantId=${tenantId} reason=lost-lease-race`);
    return { outcome: "skipped-busy", alertsWritten: 0, calls: 0 };
  }
  const run = new PullRun(svc, log, { ...row, etag: leased }, leaseId);
  return run.execute();
}

class PullRun {
  private etag: string;
  private readonly generation: string;
  private readonly budget: CallBudget;
  private readonly client: DefenderClient;
  private readonly tables: AlertTables;
  private watermark: string | undefined;
  private written = 0;
  /** Rows the tenant holds: exact after a recount, else the last count plus new ids seen. */
  private alertsStored: number;
  /** Nothing was ever stored for this tenant, so its partition starts empty. */
  private readonly firstPull: boolean;
  /** The store of the previous window, running while the next window is fetched. */
  private pending: Promise<void> = Promise.resolve();

  constructor(
    private readonly svc: Services,
    private readonly log: Logger,
    private readonly row: TenantRow,
    private readonly leaseId: string,
  ) {
    this.etag = row.etag;
    this.generation = row.generation;
    this.watermark = row.watermark || undefined;
    this.alertsStored = row.alertsStored ?? 0;
    this.firstPull = !row.watermark && !row.alertsStored;
    const pull = svc.config.pull;
    this.budget = new CallBudget(pull.maxCallsPerMinute, pull.maxCallsPerHour, svc.now, row.apiCalls);
    const endpoints = endpointsFor(svc.config, row.cloud);
    this.client = new DefenderClient({
      baseUrl: endpoints.apiBaseUrl,
      budget: this.budget,
      sleep: svc.sleep,
      random: svc.random,
      token: (refresh) => this.accessToken(refresh),
    });
    this.tables = { alerts: svc.storage.table(TABLES.alerts), bodies: svc.storage.table(TABLES.alertBodies) };
  }

  private get tenantId(): string {
    return this.row.rowKey;
  }

  async execute(): Promise<PullResult> {
    const id = this.tenantId;
    try {
      await this.accessToken(false);
      const { overlapMs, lagMs, initialLookbackMs } = this.svc.config.pull;
      const now = this.svc.now().getTime();
      const upper = now - lagMs;
      const base = this.watermark ? Date.parse(this.watermark) : now - initialLookbackMs;
      const lower = Math.min(base - (this.watermark ? overlapMs : 0), upper);
      await this.range(lower, upper);
      await this.pending;
      const done: TenantPatch = { lastSuccessAt: this.svc.now().toISOString(), ...CLEARED_ERROR };
      if (this.written > 0 && this.recountDue()) await this.countAlerts();
      else if (this.written > 0 && !this.row.alertsCountedAt) done.alertsCountedAt = done.lastSuccessAt;
      await this.finish(done);
      this.log.info(`pull.succeeded tenantId=${id} alerts=${this.written} watermark=${this.watermark ?? ""}`);
      return this.result("succeeded");
    } catch (err) {
      return this.fail(err);
    }
  }

  private result(outcome: PullOutcome): PullResult {
    return { outcome, alertsWritten: this.written, calls: this.budget.calls };
  }

  private async fail(err: unknown): Promise<PullResult> {
    const id = this.tenantId;
    // Let a window that is still being written finish (or fail) before the final update.
    await this.pending.catch(() => undefined);
    const at = this.svc.now().toISOString();
    if (err instanceof TokenFailure) {
      const { kind, code, message } = err.detail;
      if (kind === "client") {
        this.log.error(`app.credential.failed code=${code} message=${message}`);
        await recordClientCredential(this.svc, true, code);
        clientCredentialKnownGood = false;
        await this.finish({});
        return this.result("client-credential-failed");
      }
      if (kind === "reconsent") {
        await this.finish({ status: "reconsent-required", lastErrorCode: code, lastErrorMessage: message, lastErrorAt: at });
        this.log.warn(`tenant.status tenantId=${id} status=reconsent-required code=${code}`);
        return this.result("reconsent-required");
      }
      await this.finish({ lastErrorCode: code, lastErrorMessage: message, lastErrorAt: at });
      this.log.warn(`pull.failed tenantId=${id} code=${code}`);
      return this.result("failed");
    }
    if (err instanceof BudgetExhaustedError) {
      await this.finish({ lastErrorCode: "BudgetExhausted", lastErrorMessage: err.message, lastErrorAt: at });
      this.log.warn(`pull.partial tenantId=${id} code=BudgetExhausted alerts=${this.written} watermark=${this.watermark ?? ""}`);
      return this.result("partial");
    }
    if (err instanceof DefenderApiError) {
      await this.finish({ lastErrorCode: err.code, lastErrorMessage: err.message, lastErrorAt: at });
      this.log.warn(`pull.failed tenantId=${id} code=${err.code}`);
      return this.result("failed");
    }
    // Storage or Key Vault trouble: release the lease, record it, and let the host retry.
    const code = errorName(err);
    await this.finish({
      lastErrorCode: "InternalError",
      lastErrorMessage: `The pull failed (${code})`,
      lastErrorAt: at,
    }).catch(() => undefined);
    this.log.error(`pull.failed tenantId=${id} code=InternalError error=${code}`);
    throw err;
  }

  /** The cached access token, or a fresh one redeemed from the stored refresh token. */
  private async accessToken(refresh: boolean): Promise<string> {
    const id = this.tenantId;
    if (refresh) forgetAccessToken(id);
    const cached = cachedAccessToken(id, this.svc.now());
    if (cached) return cached;
    const stored = await this.svc.vault.read(id, this.row.refreshTokenVersion || undefined);
    if (!stored) {
      throw new TokenFailure({ kind: "reconsent", code: "RefreshTokenMissing", message: "No refresh token is stored" });
    }
    const redeemed = await redeemRefreshToken(this.svc, endpointsFor(this.svc.config, this.row.cloud), id, stored.value);
    if (!clientCredentialKnownGood) {
      await recordClientCredential(this.svc, false);
      clientCredentialKnownGood = true;
    }
    if (redeemed.refreshToken) await this.maybeWriteBack(redeemed.refreshToken);
    return redeemed.accessToken;
  }

  /**
   * Entra returns a new refresh token on every redemption and does not revoke the old one,
   * while Key Vault keeps every version forever. So the newest token is written back only
   * when the stored one is older than the interval, and only if no consent or offboarding
   * changed the tenant since this pull began (generation and ETag checks).
   */
  private async maybeWriteBack(refreshToken: string): Promise<void> {
    const id = this.tenantId;
    const writtenAt = Date.parse(this.row.refreshTokenWrittenAt ?? "");
    const due = Number.isNaN(writtenAt) || this.svc.now().getTime() - writtenAt >= this.svc.config.pull.writebackIntervalMs;
    if (!due) return;
    const current = await getTenant(this.svc.storage.table(TABLES.tenants), id);
    if (!current || current.generation !== this.generation || current.status !== "active") return;
    const version = await this.svc.vault.write(id, refreshToken, { tenantId: id, generation: this.generation }, false);
    if (!version) return; // the secret was deleted: an offboarding won
    const at = this.svc.now().toISOString();
    const etag = await patchTenant(this.svc.storage.table(TABLES.tenants), id, current.etag, {
      refreshTokenVersion: version,
      refreshTokenWrittenAt: at,
    });
    if (!etag) {
      await this.svc.vault.disable(id, version);
      return;
    }
    this.etag = etag;
    this.row.refreshTokenVersion = version;
    this.row.refreshTokenWrittenAt = at;
    await this.svc.vault.disableAllExcept(id, version);
    this.log.info(`token.written-back tenantId=${id}`);
  }

  /** Reads [from, to) completely, splitting full answers by time. */
  private async range(from: number, to: number): Promise<void> {
    if (to <= from) return;
    const answer = await this.read(from, to);
    if ("split" in answer) {
      // The full page is not kept while its pieces are read: memory follows the page size.
      for (let i = 0; i + 1 < answer.split.length; i++) await this.range(answer.split[i]!, answer.split[i + 1]!);
      return;
    }
    // Pipelined: this window is written while the next one is fetched. Stores run one at
    // a time and in time order, so the watermark still only covers durable windows, and
    // at most two pages are in memory.
    await this.pending;
    this.pending = this.store(answer.alerts, from, to);
    this.pending.catch(() => undefined); // surfaced by the next await of this.pending
  }

  /**
   * One request for [from, to). A full answer is returned as split points instead: the
   * quartiles of its items' lastUpdateTime (or the midpoint), which cut [from, to) into
   * exact, adjacent slices, so nothing can fall between them.
   */
  private async read(from: number, to: number): Promise<{ alerts: RawAlert[] } | { split: number[] }> {
    const top = this.svc.config.pull.pageSize;
    const page = await this.client.list(this.client.listUrl({ from: new Date(from), to: new Date(to), top }));
    if (page.alerts.length < top) {
      return { alerts: page.nextLink ? await this.follow(page.alerts, page.nextLink) : page.alerts };
    }
    if (to - from <= MIN_SLICE_MS) return { alerts: await this.skipPaged(from, to) };
    const times = page.alerts.map((a) => parseTime(a.lastUpdateTime)?.getTime() ?? from).sort((a, b) => a - b);
    const cuts = [1, 2, 3]
      .map((q) => times[Math.floor((q * times.length) / 4)]!)
      .filter((t, i, all) => t > from && t < to && all.indexOf(t) === i);
    return { split: [from, ...(cuts.length > 0 ? cuts : [from + Math.floor((to - from) / 2)]), to] };
  }

  /** Follows @odata.nextLink when the service sends one. */
  private async follow(first: RawAlert[], nextLink: string): Promise<RawAlert[]> {
    const all = [...first];
    let next: string | undefined = nextLink;
    while (next) {
      const page = await this.client.list(next);
      all.push(...page.alerts);
      next = page.nextLink;
    }
    return all;
  }

  /** A slice too narrow to split: $skip pages, re-read until two passes agree on the ids. */
  private async skipPaged(from: number, to: number): Promise<RawAlert[]> {
    const top = this.svc.config.pull.pageSize;
    let previous: string | undefined;
    const merged = new Map<string, RawAlert>();
    for (let pass = 0; pass < MAX_SKIP_PASSES; pass++) {
      const seen = new Map<string, RawAlert>();
      for (let skip = 0; ; skip += top) {
        const page = await this.client.list(this.client.listUrl({ from: new Date(from), to: new Date(to), top, skip }));
        for (const alert of page.alerts) seen.set(alert.id, alert);
        if (page.alerts.length < top) break;
      }
      for (const [id, alert] of seen) merged.set(id, newer(merged.get(id), alert));
      const ids = [...seen.keys()].sort().join("\n");
      if (ids === previous) return [...merged.values()];
      previous = ids;
    }
    throw new DefenderApiError(200, "UnstableSlice", "A 1 ms slice kept changing between $skip passes");
  }

  /** Writes a window's alerts, then (only then) advances the watermark. */
  private async store(alerts: RawAlert[], from: number, to: number): Promise<void> {
    const unique = new Map<string, RawAlert>();
    for (const alert of alerts) unique.set(alert.id, newer(unique.get(alert.id), alert));
    const stored = await this.storedInWindow(unique.size, from, to);
    const all = [...unique.values()];
    const fresh = stored.size === 0 ? all : all.filter((a) => stored.get(a.id) !== sha256Hex(a.json));
    if (fresh.length > 0) {
      const encoded = fresh.map((alert) => encodeAlert(this.tenantId, alert));
      await writeAlerts(this.tables, encoded, WRITE_CONCURRENCY);
      this.written += fresh.length;
      // New ids, as far as this window can tell; the hourly recount corrects the rest.
      this.alertsStored += fresh.filter((a) => !stored.has(a.id)).length;
    }
    let newest = this.watermark;
    for (const alert of unique.values()) {
      if (!newest || compareTimes(alert.lastUpdateTime, newest) > 0) newest = alert.lastUpdateTime;
    }
    if (newest !== this.watermark || fresh.length > 0) {
      this.watermark = newest;
      await this.checkpoint({ ...(newest ? { watermark: newest } : {}), alertsStored: this.alertsStored });
    }
  }

  /**
   * Bodies already stored for alerts in this window (id -> SHA-256), so the overlap, which
   * re-reads the same alerts every run, does not rewrite them and `since` readers see only
   * real changes. The first pull of a tenant has nothing stored yet and skips the query.
   */
  private async storedInWindow(count: number, from: number, to: number): Promise<Map<string, string>> {
    const stored = new Map<string, string>();
    if (count === 0 || this.firstPull) return stored;
    const filter = odata`PartitionKey eq ${this.tenantId} and lastUpdateTime ge ${new Date(from)} and lastUpdateTime lt ${new Date(to)}`;
    const rows = this.tables.alerts.listEntities<{ alertId: string; bodySha256: string }>({
      queryOptions: { filter, select: ["alertId", "bodySha256"] },
    });
    for await (const row of rows) stored.set(row.alertId, row.bodySha256);
    return stored;
  }

  /**
   * The exact count scans the tenant's partition, so it runs at most hourly; in between,
   * `alertsStored` grows by the new ids each window sees. A tenant's first pull needs no
   * scan: its partition starts empty, so the new ids it wrote are the count.
   */
  private recountDue(): boolean {
    if (!this.row.alertsCountedAt) return !this.firstPull;
    return this.svc.now().getTime() - Date.parse(this.row.alertsCountedAt) >= RECOUNT_MS;
  }

  private async countAlerts(): Promise<void> {
    let count = 0;
    const filter = odata`PartitionKey eq ${this.tenantId}`;
    for await (const _ of this.tables.alerts.listEntities({ queryOptions: { filter, select: ["RowKey"] } })) count++;
    this.alertsStored = count;
    await this.checkpoint({ alertsStored: count, alertsCountedAt: this.svc.now().toISOString() });
  }

  /** Saves progress on the tenant row and renews the lease, unless a consent or offboarding intervened. */
  private async checkpoint(patch: TenantPatch): Promise<void> {
    const full: TenantPatch = {
      ...patch,
      apiCalls: this.budget.serialize(),
      pullLeaseUntil: new Date(this.svc.now().getTime() + LEASE_MS).toISOString(),
    };
    await this.update(full);
  }

  private async finish(patch: TenantPatch): Promise<void> {
    await this.update({ ...patch, apiCalls: this.budget.serialize(), pullLeaseId: "", pullLeaseUntil: "" });
  }

  /**
   * ETag-guarded update. A changed row is re-read: if the tenant was re-consented or
   * offboarded meanwhile, status changes from this pull are dropped; data fields still land.
   */
  private async update(patch: TenantPatch): Promise<void> {
    const tenants = this.svc.storage.table(TABLES.tenants);
    for (let attempt = 0; attempt < 5; attempt++) {
      const etag = await patchTenant(tenants, this.tenantId, this.etag, patch);
      if (etag) {
        this.etag = etag;
        return;
      }
      const current = await getTenant(tenants, this.tenantId);
      if (!current) return;
      if (current.generation !== this.generation) {
        const { status: _status, lastErrorCode: _c, lastErrorMessage: _m, lastErrorAt: _a, ...dataOnly } = patch;
        patch = dataOnly;
      }
      if (current.pullLeaseId && current.pullLeaseId !== this.leaseId) return; // someone else holds it now
      this.etag = current.etag;
    }
    throw new Error("The tenant row kept changing during the pull");
  }
}

function newer(a: RawAlert | undefined, b: RawAlert): RawAlert {
  return !a || compareTimes(b.lastUpdateTime, a.lastUpdateTime) >= 0 ? b : a;
}

/** Compares ISO timestamps with 0 to 7 fractional digits at full precision. */
export function compareTimes(a: string, b: string): number {
  const ta = ticks(a);
  const tb = ticks(b);
  return ta < tb ? -1 : ta > tb ? 1 : 0;
}

function ticks(value: string): bigint {
  const match = /^(.*?)(?:\.(\d{1,7}))?(Z|[+-]\d{2}:?\d{2})?$/.exec(value);
  const whole = Date.parse(`${match?.[1] ?? value}${match?.[3] ?? "Z"}`);
  const fraction = (match?.[2] ?? "").padEnd(7, "0");
  return BigInt(Number.isNaN(whole) ? 0 : whole) * 10_000n + BigInt(fraction || "0");
}
