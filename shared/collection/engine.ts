import { odata, type TableClient, type TransactionAction } from "@azure/data-tables";
import { type CloudEndpoints, endpointsFor } from "../platform/config.js";
import { reportCredentialFailure } from "../platform/health.js";
import { enqueueDelivery } from "../delivery/queue.js";
import { markPending, routedDestinations } from "../delivery/outbox.js";
import { errorName } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES } from "../platform/storage.js";
import { CLEARED_ERROR, getTenant, patchTenant, type TenantPatch, type TenantRow } from "../onboarding/tenants.js";
import {
  ALERT_ROWS_ONLY,
  type AlertTables,
  alertRowKey,
  COUNT_TOTAL_KEY,
  entryFromAlertRow,
  type IndexEntry,
  indexRow,
  type RawAlert,
  readAlertHead,
} from "./alert-store.js";
import { AlertWriter, foldAlertCount, type WriteResult } from "./alert-writer.js";
import { BudgetExhaustedError, CallBudget } from "./budget.js";
import { collectDueGarbage, collectOrphans } from "./garbage.js";
import { Coverage, effectiveOverlapMs, LatenessFigures } from "./lateness.js";
import { leaseTiming } from "./lease-timing.js";
import { SourceApiError, type SourceName } from "./source.js";
import { createSource, type MeasuredSource, probeSource, type SourceProfile, sourceProfile } from "./sources/index.js";
import { duePasses, isReconcile } from "./sweep.js";
import {
  getSweepRow,
  LeaseLost,
  parseSlices,
  type SkippedSlice,
  type SweepEntity,
  type SweepPass,
  acquireSyncLease,
  type SyncLease,
  type SyncPatch,
} from "./sync-state.js";
import { compareTimes, timeMs } from "./time.js";
import { clientCredentialFailed, TokenFailure, type TokenProvider, tokenProviderFor } from "./tokens.js";
import { type LeafSink, type SkippedRange, WindowReader } from "./windows.js";

/**
 * One worker run for one (tenant, source): the incremental pull, then the reconciliation
 * sweep within its share of the call budget, under one lease (see sync-state.ts and
 * docs/collection.md).
 *
 * Incremental: [watermark - overlap, now - lag), or the initial lookback on the first
 * pull. The watermark is the newest lastUpdateTime stored (data, not the query time),
 * committed only after a leaf's writes are durable; a crash anywhere loses nothing.
 *
 * Sweep: passes over the last day (hourly) and week (daily), and operator reconciles,
 * listed without evidence; only alerts that are missing or newer than the stored version
 * are read again in full. Every sweep run first retries the skipped slices.
 */

const WRITE_CONCURRENCY = 4;
/** Alerts written at once: one transaction of 49 alerts (plus the count row) for each write in flight. */
const WRITE_BATCH = WRITE_CONCURRENCY * 49;
/**
 * Batches written at once. Their transactions share the writer's WRITE_CONCURRENCY slots,
 * so the next batch's transactions take the slots the last one's slowest transaction
 * leaves idle.
 */
const WRITES_IN_FLIGHT = 2;
/** Gaps between alerts the sweep must fetch that still share one full re-read window. */
const REFETCH_GAP_MS = 60_000;
/** Skipped slices kept at most; past this the cursor stops rather than drop one silently. */
const MAX_SKIPPED_SLICES = 200;
const RECONCILE_BUDGET_PERCENT = 50;

export type PullOutcome =
  | "succeeded"
  | "skipped-inactive"
  | "skipped-busy"
  | "reconsent-required"
  | "failed"
  | "partial"
  | "lease-lost"
  | "client-credential-failed";

export interface PullResult {
  outcome: PullOutcome;
  alertsWritten: number;
  calls: number;
  sweepCalls: number;
}

const NOTHING = { alertsWritten: 0, calls: 0, sweepCalls: 0 };

export async function pullTenant(svc: Services, tenantIdRaw: string, log: Logger): Promise<PullResult> {
  const tenantId = tenantIdRaw.toLowerCase();
  const tenants = svc.storage.table(TABLES.tenants);
  const before = await getTenant(tenants, tenantId);
  if (before?.status !== "active") {
    log.info(`pull.skipped tenantId=${tenantId} reason=${before ? before.status : "unknown-tenant"}`);
    return { outcome: "skipped-inactive", ...NOTHING };
  }
  const sync = svc.storage.table(TABLES.syncState);
  const source = before.source ?? svc.config.defaultSource;
  const lease = await acquireSyncLease(sync, tenantId, source, leaseTiming(), svc.now);
  if (lease === "busy") {
    log.info(`pull.skipped tenantId=${tenantId} reason=already-running`);
    return { outcome: "skipped-busy", ...NOTHING };
  }
  // Read again under the lease: an offboarding that landed in between is seen here, and
  // one that lands later sets stopRequestedAt, which the lease's next commit sees.
  const tenant = await getTenant(tenants, tenantId);
  if (tenant?.status !== "active" || (tenant.source ?? svc.config.defaultSource) !== source) {
    await lease.release({});
    log.info(`pull.skipped tenantId=${tenantId} reason=${tenant ? tenant.status : "unknown-tenant"}`);
    return { outcome: "skipped-inactive", ...NOTHING };
  }
  return new SyncJob(svc, log, tenant, source, lease).execute();
}

type Cursor = "incremental" | "sweep";

interface WrittenRange {
  from: number;
  to: number;
  /** The index entries written for the window, and those the windows enclosing it wrote within it, by alert id. */
  known: Map<string, IndexEntry>;
}

class SyncJob {
  private readonly budget: CallBudget;
  private readonly source: MeasuredSource;
  private readonly profile: SourceProfile;
  private readonly writer: AlertWriter;
  private readonly tables: AlertTables;
  private readonly coverage: Coverage;
  private readonly lateness: LatenessFigures;
  private skipped: SkippedSlice[];
  private watermark: string | undefined;
  private alertsStored: number;
  private sameTimeChanges: number;
  private written = 0;
  private sweepWritten = 0;
  /** Nothing was ever stored for this tenant, so writes need no lookups. */
  private knownEmpty: boolean;
  /**
   * While the tenant is known to be empty, what this run wrote, by window: a slice of a full
   * answer starts from its enclosing windows' entries instead of looking its alerts up in
   * storage (see openSink).
   */
  private writtenRanges: WrittenRange[] = [];
  /** Batch writes in flight (at most WRITES_IN_FLIGHT), running while the next batch is parsed. */
  private writes: Promise<void>[] = [];
  constructor(
    private readonly svc: Services,
    private readonly log: Logger,
    private readonly tenant: TenantRow,
    sourceName: SourceName,
    private readonly lease: SyncLease,
  ) {
    const row = lease.row;
    const { pull } = svc.config;
    // State kept on the tenant row by versions before the syncstate table is carried over once.
    // (Only Defender had such state.)
    const carried = row.indexVersion === undefined && sourceName === "defender";
    this.watermark = row.watermark || (carried ? tenant.watermark : undefined) || undefined;
    this.alertsStored = row.alertsStored ?? 0;
    this.sameTimeChanges = row.sameTimeChanges ?? 0;
    this.knownEmpty = !this.watermark && !(row.alertsStored || (carried && tenant.alertsStored));
    const endpoints = endpointsFor(svc.config, tenant.cloud);
    this.profile = sourceProfile(sourceName, svc.config, endpoints);
    this.budget = new CallBudget(
      this.profile.limits,
      svc.config.sweep.budgetPercent,
      svc.now,
      row.apiCalls || (carried ? tenant.apiCalls : undefined),
    );
    this.coverage = Coverage.parse(row.coverage);
    this.lateness = LatenessFigures.parse(row.lateness);
    this.skipped = parseSlices(row.skippedSlices);
    const tokens = tokenProviderFor(svc, log, tenant, endpoints);
    this.tokens = tokens;
    this.endpoints = endpoints;
    const scope = this.profile.scope;
    this.source = createSource(sourceName, {
      tenantId: this.tenantId,
      endpoints,
      config: svc.config,
      budget: this.budget,
      sleep: svc.sleep,
      random: svc.random,
      log,
      token: (forceNew) => tokens.get(scope, { forceNew }),
    });
    this.tables = { alerts: svc.storage.table(TABLES.alerts), bodies: svc.storage.table(TABLES.alertBodies) };
    this.writer = new AlertWriter({
      tenantId: this.tenantId,
      source: this.source.name,
      tables: this.tables,
      concurrency: WRITE_CONCURRENCY,
      gcGraceMs: pull.overflowGcGraceMs,
      now: svc.now,
      fence: () => this.lease.beforeWrite(),
      outbox: {
        destinations: routedDestinations(svc.config, tenant.destinations),
        beforeFirstWrite: () => markPending(svc, this.tenantId),
      },
    });
    this.tokenCheck = () => tokens.get(scope);
  }

  private readonly tokenCheck: () => Promise<string>;
  private readonly tokens: TokenProvider & { mode: "delegated" | "application" };
  private readonly endpoints: CloudEndpoints;

  private get tenantId(): string {
    return this.tenant.rowKey;
  }

  async execute(): Promise<PullResult> {
    const id = this.tenantId;
    try {
      await this.tokenCheck();
      await this.buildIndexOnce();
      const firstPull = !this.watermark;
      await this.incremental();
      await this.sweep(firstPull);
      await collectDueGarbage(this.tables, id, this.svc.now());
      this.alertsStored = await foldAlertCount(this.tables.alerts, id);
      const now = this.svc.now();
      await this.lease.release({ ...this.stateToSave(), lastSuccessAt: now.toISOString(), ...CLEARED_ERROR });
      await this.clearTenantError();
      await this.wakeDelivery();
      const late = this.lateness.summary(now.getTime());
      const overlapMs = this.effectiveOverlapMs();
      this.log.info(
        `pull.succeeded tenantId=${id} alerts=${this.written} watermark=${this.watermark ?? ""} ` +
          `calls=${this.budget.calls} sweepCalls=${this.budget.used.sweep} bytes=${this.source.bytes.incremental} ` +
          `sweepBytes=${this.source.bytes.sweep} sweepAlerts=${this.sweepWritten} lateP99Seconds=${late.p99Seconds} lateMaxSeconds=${late.maxSeconds} foundBySweep24h=${late.foundBySweep24h}`,
      );
      if (late.p99Seconds * 1000 > overlapMs / 2) {
        this.log.warn(
          `pull.lateness-high tenantId=${id} p99Seconds=${late.p99Seconds} overlapMinutes=${Math.round(overlapMs / 60_000)}`,
        );
      }
      return this.result("succeeded");
    } catch (err) {
      return this.fail(err);
    }
  }

  /**
   * After writes, a wake-up for the delivery worker. Best effort: the pending marker written
   * before the first write already guarantees delivery (the timer finds it).
   */
  private async wakeDelivery(): Promise<void> {
    if (this.written + this.sweepWritten === 0 || routedDestinations(this.svc.config, this.tenant.destinations).length === 0) return;
    try {
      await enqueueDelivery(this.svc, { tenantId: this.tenantId });
    } catch (err) {
      this.log.warn(`delivery.wake-failed tenantId=${this.tenantId} error=${errorName(err)}`);
    }
  }

  private result(outcome: PullOutcome): PullResult {
    return {
      outcome,
      alertsWritten: this.written + this.sweepWritten,
      calls: this.budget.calls,
      sweepCalls: this.budget.used.sweep,
    };
  }

  /** What every checkpoint saves besides the lease. */
  private stateToSave(): SyncPatch {
    const now = this.svc.now().getTime();
    const patch: SyncPatch = {
      apiCalls: this.budget.serialize(),
      alertsStored: this.alertsStored,
      sameTimeChanges: this.sameTimeChanges,
      coverage: this.coverage.serialize(),
      lateness: this.lateness.serialize(now),
      skippedSlices: JSON.stringify(this.skipped),
      indexVersion: 1,
    };
    if (this.watermark) patch.watermark = this.watermark;
    return patch;
  }

  private async fail(failure: unknown): Promise<PullResult> {
    const id = this.tenantId;
    // Let a leaf that is still being written finish (or fail) before the final update.
    await this.drain().catch(() => undefined);
    const err = await this.classifyRefusal(failure);
    if (err instanceof LeaseLost) {
      this.log.warn(`pull.lease-lost tenantId=${id}`);
      return this.result("lease-lost");
    }
    const at = this.svc.now().toISOString();
    const release = async (patch: SyncPatch) => {
      try {
        await this.lease.release({ ...this.stateToSave(), ...patch });
      } catch (releaseErr) {
        if (!(releaseErr instanceof LeaseLost)) throw releaseErr;
        this.log.warn(`pull.lease-lost tenantId=${id}`);
      }
    };
    if (err instanceof TokenFailure) {
      const { kind, code, message } = err.detail;
      if (kind === "client") {
        await reportCredentialFailure(this.svc, this.log, code);
        clientCredentialFailed();
        await release({});
        return this.result("client-credential-failed");
      }
      if (kind === "reconsent") {
        await release({});
        await this.patchTenantIfSameGeneration({
          status: "reconsent-required",
          lastErrorCode: code,
          lastErrorMessage: message,
          lastErrorAt: at,
        });
        this.log.warn(`tenant.status tenantId=${id} status=reconsent-required code=${code}`);
        return this.result("reconsent-required");
      }
      await release({ lastErrorCode: code, lastErrorMessage: message, lastErrorAt: at });
      this.log.warn(`pull.failed tenantId=${id} code=${code}`);
      return this.result("failed");
    }
    await this.wakeDelivery();
    if (err instanceof BudgetExhaustedError) {
      await release({ lastErrorCode: "BudgetExhausted", lastErrorMessage: err.message, lastErrorAt: at });
      this.log.warn(`pull.partial tenantId=${id} code=BudgetExhausted alerts=${this.written} watermark=${this.watermark ?? ""}`);
      return this.result("partial");
    }
    if (err instanceof SourceApiError) {
      await release({ lastErrorCode: err.code, lastErrorMessage: err.message, lastErrorAt: at });
      this.log.warn(`pull.failed tenantId=${id} code=${err.code}`);
      return this.result("failed");
    }
    // Storage or Key Vault trouble: release the lease, record it, and let the host retry.
    const code = errorName(err);
    await release({ lastErrorCode: "InternalError", lastErrorMessage: `The pull failed (${code})`, lastErrorAt: at }).catch(
      () => undefined,
    );
    this.log.error(`pull.failed tenantId=${id} code=InternalError error=${code}`);
    throw err;
  }

  /**
   * In application mode, a 401/403 of the alerts API is checked once more with a freshly
   * issued token: if that is refused too, the permission was withdrawn (reconsent-required,
   * AppPermissionMissing). Any other failure is returned as it is.
   */
  private async classifyRefusal(err: unknown): Promise<unknown> {
    if (!(err instanceof SourceApiError) || (err.status !== 401 && err.status !== 403) || this.tokens.mode !== "application") return err;
    try {
      const fresh = await this.tokens.get(this.profile.scope, { forceNew: true });
      if ((await probeSource(this.source.name, this.endpoints, fresh)) !== "forbidden") return err;
    } catch (tokenErr) {
      return tokenErr instanceof TokenFailure ? tokenErr : err;
    }
    return new TokenFailure({
      kind: "reconsent",
      code: "AppPermissionMissing",
      message: `The alerts API refuses a freshly issued app-only token: the application permission ${this.source.name === "graph" ? "SecurityAlert.Read.All" : "Alert.Read.All"} was withdrawn`,
    });
  }

  /** A status change from a pull lands only if no consent or offboarding changed the tenant meanwhile. */
  private async patchTenantIfSameGeneration(patch: TenantPatch): Promise<void> {
    const tenants = this.svc.storage.table(TABLES.tenants);
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await getTenant(tenants, this.tenantId);
      if (!current || current.generation !== this.tenant.generation) return;
      if (await patchTenant(tenants, this.tenantId, current.etag, patch)) return;
    }
  }

  /** An error a pull put on the tenant row (from versions before syncstate) goes once the tenant pulls again. */
  private async clearTenantError(): Promise<void> {
    if (this.tenant.lastErrorCode) await this.patchTenantIfSameGeneration({ ...CLEARED_ERROR });
  }

  private effectiveOverlapMs(): number {
    return effectiveOverlapMs(this.svc.config.pull, this.lateness.summary(this.svc.now().getTime()));
  }

  // ---------------------------------------------------------------------------------
  // Incremental cursor.

  private reader(
    purpose: "incremental" | "sweep",
    full: boolean,
    openLeaf: (from: number, to: number) => Promise<LeafSink>,
    onSkip: (slice: SkippedRange) => Promise<void> = (slice) => this.skipSlice(slice),
  ): WindowReader {
    return new WindowReader({
      source: this.source,
      pageSize: this.profile.pageSize,
      purpose,
      full,
      openLeaf,
      onSkip: async (slice) => {
        await this.drain();
        await onSkip(slice);
      },
      beforeRequest: () => this.lease.beforeWrite(),
    });
  }

  private async incremental(): Promise<void> {
    const { lagMs, initialLookbackMs } = this.svc.config.pull;
    const now = this.svc.now().getTime();
    const upper = now - lagMs;
    const lower = this.watermark
      ? Math.min(timeMs(this.watermark)! - this.effectiveOverlapMs(), upper)
      : now - initialLookbackMs;
    const reader = this.reader("incremental", true, (from, to) => this.openSink(from, to, "incremental"));
    await reader.read(lower, upper);
    await this.drain();
    this.coverage.add(lower, upper, upper, now);
    this.knownEmpty = false;
    this.writtenRanges = [];
    await this.lease.commit(this.stateToSave());
  }

  /** Waits for every write in flight; throws the first failure. */
  private async drain(): Promise<void> {
    const results = await Promise.allSettled(this.writes.splice(0));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }

  /**
   * The sink of one window. Items are written in batches of WRITE_BATCH, up to
   * WRITES_IN_FLIGHT batches while the next is parsed, so memory follows the batch, not the
   * page. When the window ends complete, every write of it is durable: the incremental
   * watermark moves to the window's newest item and is committed. A window whose answer
   * was full is stored all the same, but the watermark moves only as its slices complete.
   */
  private async openSink(from: number, to: number, cursor: Cursor): Promise<LeafSink> {
    // A failure of the previous window's last write surfaces here, before anything else.
    await this.drain();
    // Nothing was stored before this run, so storage holds only what this run wrote: the
    // entries that the windows enclosing this one (a full answer's, for its slices) wrote
    // within it are the versions its alerts are compared with, and no alert needs a lookup.
    // An alert stored at an earlier time (it changed between requests) makes its "create"
    // fail, and the writer reads it then. Memory: the entries of the windows being read,
    // each holding at most a page of its own.
    const assumeAbsent = this.knownEmpty;
    let known: Promise<Map<string, IndexEntry>> | undefined;
    if (assumeAbsent) {
      this.writtenRanges = this.writtenRanges.filter((r) => r.to > from);
      const entries = new Map<string, IndexEntry>();
      for (const r of this.writtenRanges) {
        if (r.from >= to) continue;
        for (const [id, entry] of r.known) {
          const t = timeMs(entry.time) ?? from;
          if (t >= from && t < to) entries.set(id, entry);
        }
      }
      this.writtenRanges.push({ from, to, known: entries });
      known = Promise.resolve(entries);
    }
    let newest: string | undefined;
    let written = 0;
    const buffer: RawAlert[] = [];
    const store = async (alerts: RawAlert[]) => {
      known ??= this.writer.storedIn(from, to);
      const result = await this.writer.write(alerts, await known, assumeAbsent);
      this.account(result, cursor);
      written += result.written.length;
    };
    // Exactly WRITE_BATCH alerts a write (the rest waits for the next items): a few more
    // would cost a whole extra transaction.
    const flush = async () => {
      if (this.writes.length >= WRITES_IN_FLIGHT) await this.writes.shift();
      if (buffer.length === 0) return;
      const write = store(buffer.splice(0, WRITE_BATCH));
      write.catch(() => undefined); // surfaced by the next drain
      this.writes.push(write);
    };
    return {
      write: async (alerts) => {
        for (const alert of alerts) if (!newest || isNewer(alert.lastUpdateTime, newest)) newest = alert.lastUpdateTime;
        buffer.push(...alerts);
        while (buffer.length >= WRITE_BATCH) await flush();
      },
      end: async (complete) => {
        await flush();
        await this.drain();
        if (!complete) return;
        const moved = cursor === "incremental" && newest !== undefined && (!this.watermark || isNewer(newest, this.watermark));
        if (moved) this.watermark = newest;
        if (moved || written > 0) await this.lease.commit(this.stateToSave());
      },
    };
  }

  /** Counts and lateness of what a write changed. */
  private account(result: WriteResult, cursor: Cursor): void {
    const id = this.tenantId;
    const now = this.svc.now().getTime();
    for (const w of result.written) {
      const t = timeMs(w.lastUpdateTime) ?? now;
      const u = this.coverage.upperBoundAt(t);
      const lateSeconds = Math.max(0, Math.round(((u ?? t) - t) / 1000));
      if (w.isNew) {
        this.alertsStored++;
        this.lateness.record(now, lateSeconds);
      }
      if (cursor === "sweep") {
        this.lateness.recordSweepFind(now);
        this.log.warn(`pull.late-found tenantId=${id} alertId=${w.id} lateSeconds=${lateSeconds}`);
      }
      if (w.sameTime) {
        this.sameTimeChanges++;
        this.log.info(`pull.same-time-change tenantId=${id} alertId=${w.id}`);
      }
    }
    if (cursor === "incremental") this.written += result.written.length;
    else this.sweepWritten += result.written.length;
  }

  /** A slice that cannot be read at its narrowest: listed, reported, and retried by the sweep. */
  private async skipSlice(slice: SkippedRange): Promise<void> {
    const from = new Date(slice.from).toISOString();
    const to = new Date(slice.to).toISOString();
    const known = this.skipped.find((s) => s.from === from && s.to === to);
    if (known) {
      known.attempts++;
      known.lastCode = slice.code;
    } else {
      if (this.skipped.length >= MAX_SKIPPED_SLICES) {
        throw new SourceApiError(0, "TooManySkippedSlices", "Too many slices of this tenant cannot be read");
      }
      this.skipped.push({ from, to, firstFailedAt: this.svc.now().toISOString(), attempts: 1, lastCode: slice.code });
    }
    this.log.warn(`pull.slice-skipped tenantId=${this.tenantId} from=${from} to=${to} code=${slice.code}`);
    await this.lease.commit(this.stateToSave());
  }

  // ---------------------------------------------------------------------------------
  // Reconciliation sweep.

  private async sweep(firstPull: boolean): Promise<void> {
    const sync = this.svc.storage.table(TABLES.syncState);
    let row = await getSweepRow(sync, this.tenantId, this.source.name);
    const now = this.svc.now().getTime();
    if (firstPull && !row) {
      // The first pull just read the whole lookback: the first passes are due a period later.
      await this.saveSweep({ hourlyStartedAt: now, dailyStartedAt: now });
      return;
    }
    const passes = duePasses(row, { ...this.svc.config.sweep, lagMs: this.svc.config.pull.lagMs }, now);
    if (passes.length === 0 && this.skipped.length === 0) return;
    const started = this.budget.used.sweep;
    try {
      await this.retrySkippedSlices();
      for (const pass of passes) {
        this.budget.setSweepPercent(isReconcile(pass) ? RECONCILE_BUDGET_PERCENT : this.svc.config.sweep.budgetPercent);
        await this.runPass(pass);
        row = await getSweepRow(sync, this.tenantId, this.source.name);
      }
    } catch (err) {
      if (err instanceof BudgetExhaustedError) {
        // The sweep's share is used up: it goes on from here in a later run.
        await this.drain().catch(() => undefined);
        this.log.info(
          `sweep.paused tenantId=${this.tenantId} cursor=${this.source.name}:sweep calls=${this.budget.used.sweep - started}`,
        );
        return;
      }
      if (err instanceof LeaseLost || err instanceof TokenFailure) throw err;
      await this.drain().catch(() => undefined);
      this.log.warn(`sweep.failed tenantId=${this.tenantId} cursor=${this.source.name}:sweep code=${errorCode(err)}`);
      if (!(err instanceof SourceApiError)) throw err;
    } finally {
      this.budget.setSweepPercent(this.svc.config.sweep.budgetPercent);
    }
  }

  private async retrySkippedSlices(): Promise<void> {
    for (const slice of [...this.skipped]) {
      let failed = false;
      const reader = this.reader(
        "sweep",
        true,
        (from, to) => this.openSink(from, to, "sweep"),
        async (again) => {
          failed = true;
          slice.attempts++;
          slice.lastCode = again.code;
        },
      );
      await reader.read(Date.parse(slice.from), Date.parse(slice.to));
      await this.drain();
      if (!failed) {
        this.skipped = this.skipped.filter((s) => s !== slice);
        this.log.info(`pull.slice-recovered tenantId=${this.tenantId} from=${slice.from} to=${slice.to}`);
      }
      await this.lease.commit(this.stateToSave());
    }
  }

  /** Lists the pass's range without evidence, and re-reads in full only what is missing or newer. */
  private async runPass(pass: SweepPass): Promise<void> {
    const id = this.tenantId;
    const cursor = `${this.source.name}:sweep`;
    const before = this.sweepWritten;
    const calls = this.budget.used.sweep;
    const reader = this.reader("sweep", false, async (from, to) => {
      // The light listing's items are small: a window's are kept until it completes.
      const listed: RawAlert[] = [];
      return {
        write: async (alerts) => {
          listed.push(...alerts);
        },
        end: async (complete) => {
          if (!complete) return;
          await this.refetchChanged(from, to, listed);
          pass.pos = to;
          await this.saveSweep({ [pass.kind]: JSON.stringify(pass) });
        },
      };
    });
    await reader.read(pass.pos, pass.to);
    await this.drain();
    const now = this.svc.now();
    this.coverage.add(pass.from, pass.to, pass.to, now.getTime());
    const done: Partial<SweepEntity> = { [pass.kind]: "", lastSweepAt: now.toISOString() };
    if (isReconcile(pass)) done.reconcileDoneFor = pass.requestedAt;
    else if (pass.kind === "hourly") done.hourlyStartedAt = pass.startedAt;
    else done.dailyStartedAt = pass.startedAt;
    await this.saveSweep(done);
    await this.lease.commit(this.stateToSave());
    await collectOrphans(this.tables, id, now, this.svc.config.pull.overflowGcGraceMs);
    this.log.info(
      `sweep.succeeded tenantId=${id} cursor=${cursor} pass=${pass.kind} alerts=${this.sweepWritten - before} calls=${this.budget.used.sweep - calls}`,
    );
  }

  /** The alerts of a light window that are missing or newer than stored, read again with evidence. */
  private async refetchChanged(from: number, to: number, listed: RawAlert[]): Promise<void> {
    if (listed.length === 0) return;
    const stored = await this.writer.storedIn(from, to);
    const needed: number[] = [];
    for (const alert of listed) {
      const entry = stored.get(alert.id) ?? (await this.storedElsewhere(alert));
      if (!entry || isNewer(alert.lastUpdateTime, entry.time)) needed.push(timeMs(alert.lastUpdateTime)!);
    }
    if (needed.length === 0) return;
    needed.sort((a, b) => a - b);
    const windows: [number, number][] = [];
    for (const t of needed) {
      const last = windows[windows.length - 1];
      if (last && t - last[1] < REFETCH_GAP_MS) last[1] = Math.max(last[1], t + 1);
      else windows.push([t, t + 1]);
    }
    const reader = this.reader("sweep", true, (start, end) => this.openSink(start, end, "sweep"));
    for (const [start, end] of windows) await reader.read(start, end);
    await this.drain();
  }

  /** The stored version of an alert whose stored time lies outside the leaf (one point read). */
  private storedElsewhere(alert: RawAlert): Promise<IndexEntry | undefined> {
    return readAlertHead(this.tables.alerts, this.tenantId, alertRowKey(this.source.name, alert.id));
  }

  private async saveSweep(patch: Partial<SweepEntity>): Promise<void> {
    this.lease.assertHeld();
    await this.svc.storage
      .table(TABLES.syncState)
      .upsertEntity({ partitionKey: this.tenantId, rowKey: `${this.source.name}:sweep`, ...patch }, "Merge");
  }

  // ---------------------------------------------------------------------------------
  // Index for rows written before it existed.

  /**
   * Alert rows written by versions without the time index get their index rows, and the
   * exact count its `~c` row, once per tenant: one scan of the partition.
   */
  private async buildIndexOnce(): Promise<void> {
    if (this.lease.row.indexVersion === 1) return;
    // The index and the count belong to the tenant's partition, whatever the source: the
    // count row exists once they were built (by this or another source's first run).
    const built = await countRowExists(this.tables.alerts, this.tenantId);
    let count = 0;
    if (built) {
      this.alertsStored = await foldAlertCount(this.tables.alerts, this.tenantId);
      this.knownEmpty = false;
      await this.lease.commit(this.stateToSave());
      return;
    }
    if (!this.knownEmpty) {
      const alerts = this.tables.alerts;
      const filter = odata`PartitionKey eq ${this.tenantId} and ${ALERT_ROWS_ONLY}`;
      let batch: TransactionAction[] = [];
      const flush = async () => {
        if (batch.length === 0) return;
        await this.lease.beforeWrite();
        await alerts.submitTransaction(batch);
        batch = [];
      };
      for await (const row of alerts.listEntities({
        queryOptions: { filter, select: ["RowKey", "alertId", "lastUpdateTimeExact", "bodySha256", "bodyKey", "bodyOverflow"] },
      })) {
        const entry = entryFromAlertRow(row as Record<string, unknown>);
        if (!entry) continue;
        count++;
        batch.push(["upsert", indexRow(this.tenantId, entry), "Replace"]);
        if (batch.length >= 100) await flush();
      }
      await flush();
    }
    await upsertCount(this.tables.alerts, this.tenantId, count);
    this.alertsStored = count;
    await this.lease.commit(this.stateToSave());
  }
}

async function countRowExists(alerts: TableClient, tenantId: string): Promise<boolean> {
  try {
    await alerts.getEntity(tenantId, COUNT_TOTAL_KEY, { queryOptions: { select: ["RowKey"] } });
    return true;
  } catch (err) {
    if (isStatus(err, 404)) return false;
    throw err;
  }
}

async function upsertCount(alerts: TableClient, tenantId: string, total: number): Promise<void> {
  await alerts.upsertEntity({ partitionKey: tenantId, rowKey: COUNT_TOTAL_KEY, total }, "Replace");
}

/** Newer at full 100 ns precision. */
function isNewer(a: string, b: string): boolean {
  return compareTimes(a, b) > 0;
}

function errorCode(err: unknown): string {
  if (err instanceof SourceApiError) return err.code;
  return errorName(err);
}
