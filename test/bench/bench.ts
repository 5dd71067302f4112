/**
 * `npm run bench`: ingestion throughput, memory and the reconciliation sweep's cost, against
 * real Azurite and the HTTPS fakes.
 *
 * Processes, so that each figure belongs to one program:
 *   - this process (the "cloud"): Azurite (its own child process), the fakes of Entra ID,
 *     Key Vault, the managed-identity endpoint and the Defender API, and the alerts;
 *   - an "app" child: only the app, configured through app settings as the Functions host
 *     does it, running the registered pull-worker handler N pulls at a time (host.json
 *     queues.batchSize = 4). Its startup is not timed;
 *   - a "raw" child, the ceiling: it regenerates the same alerts (fixed seeds), encodes
 *     them with the app's encodeAlert (untimed), groups them into the windows the app
 *     stored (from the fake's request log), and writes the entities the app writes for a
 *     new alert, batched as alert-writer.ts batches them: per alert its row and its
 *     time-index row (`~i|...`, indexRow), both "create"; toBatches(items,
 *     MAX_BATCH_ENTITIES - 1) with 2 entities an item; one `~n|<uuid>` count row per
 *     transaction. It times only TableClient.submitTransaction into fresh tables, in the
 *     app's write shape: N tenants at a time, a tenant's windows one after the other,
 *     overflow rows first, 4 transactions in flight per window (engine.ts
 *     WRITE_CONCURRENCY). It runs after the app, twice by default; the faster run is the
 *     ceiling. A few alert rows and index rows are checked identical to the app's;
 *   - "memory" children: the app pulling one fresh tenant alone (2,000 alerts, and 25,000
 *     at two page sizes), with the live heap sampled after forced GCs;
 *   - "sweep" children: the app alone with a virtual clock (svc.now), one tenant's simulated
 *     day at 1,000 and 10,000 alerts a day: the backfill (not counted), then a pull every 5
 *     virtual minutes for 24 h and 55 minutes more (the daily pass starts at 24 h and may
 *     pause on the sweep's budget share; the next hourly pass would start at 25 h). The alerts
 *     (8 days' worth before the day's end) are in the fake from the start, whose filter on
 *     lastUpdateTime keeps each out of every window until `now - lag` passes it; 1 % of them
 *     (--sweep-late-percent) are published only 30 minutes after their lastUpdateTime (the
 *     child asks this process to publish them before each pull), so the sweep has
 *     something to find. Calls, bytes and rows come from the `pull.succeeded` lines (the
 *     incremental pull's over the first 24 h); CPU seconds and storage requests are the
 *     child's with the sweep at its defaults minus the same day, on a fresh tenant, with
 *     SWEEP_HOURLY_LOOKBACK_HOURS=0 and SWEEP_DAILY_LOOKBACK_DAYS=0.
 *
 * Flags: USAGE below (`npm run bench -- --help`). Prints a table; writes .cache/bench/last.json.
 */
import { type ChildProcess, execFileSync, fork, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { TableClient, type TransactionAction } from "@azure/data-tables";
import pLimit from "p-limit";
import {
  type AlertEntity,
  COUNT_PREFIX,
  type EncodedAlert,
  encodeAlert,
  INLINE_PARTS,
  indexRow,
  MAX_BATCH_ENTITIES,
  PART_BYTES,
  type RawAlert,
  toBatches,
} from "../../shared/collection/alert-store.js";
import { DefenderSource } from "../../shared/collection/sources/defender/client.js";
import { getSyncRow } from "../../shared/collection/sync-state.js";
import { canonicalTime } from "../../shared/collection/time.js";
import { services } from "../../shared/platform/services.js";
import { enqueueActiveTenants } from "../../shared/collection/queue.js";
import { listTenants, TENANT_PARTITION } from "../../shared/onboarding/tenants.js";
import { TABLES } from "../../shared/platform/storage.js";
import { type DefenderAlert, makeAlerts, parseTimestamp } from "../../simulators/alerts.js";
import { loadLoopbackDns, testCerts } from "../../simulators/https.js";
import { callTrigger, loadFunctions } from "../support/functions.js";
import { startHarness } from "../support/harness.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const self = fileURLToPath(import.meta.url);
const outDir = join(root, ".cache", "bench");
/** Pulls one instance runs at once: the queue trigger's batchSize + newBatchThreshold in host.json. */
const HOST_CONCURRENT_PULLS = (() => {
  const { batchSize, newBatchThreshold } = JSON.parse(readFileSync(join(root, "host.json"), "utf8")).extensions.queues;
  return Number(batchSize) + Number(newBatchThreshold);
})();
/** Node.js flags of the app children (`--app-node-args`), as `languageWorkers__node__arguments` sets them on Azure. */
let appNodeArgs: string[] = [];
/** Tenants the timer queues in the queueing run. */
const QUEUED_TENANTS = 10_000;
/** engine.ts WRITE_CONCURRENCY: transactions in flight per AlertWriter. */
const APP_WRITE_CONCURRENCY = 4;
const SMALL_TENANTS = 50;
const SMALL_ALERTS = 2_000;
const BIG_ALERTS = 25_000;

// ---------------------------------------------------------------------------
// Shared between the processes.

interface TenantSpec {
  id: string;
  /** Generation parameters: the raw child regenerates exactly the same alerts. */
  count: number;
  seed: string;
}

interface Window {
  from: string;
  to: string;
}

interface Timings {
  [section: string]: { ms: number; count: number };
}

interface PullChildSpec {
  mode: "pull";
  tenants: string[];
  concurrency: number;
  env: Record<string, string>;
  sections: boolean;
  /** Force a GC every this many ms and record the live heap (memory runs only: it slows the pull). */
  sampleLiveMs?: number;
}

interface PullChildResult {
  seconds: number;
  alerts: number;
  perTenant: Record<string, number>;
  failures: string[];
  rssBeforeMiB: number;
  maxRssMiB: number;
  /** Largest heapUsed + external seen right after a forced GC (with sampleLiveMs). */
  peakLiveMiB?: number;
  liveBeforeMiB?: number;
  cpuSeconds: number;
  /** Main-thread garbage collection pauses, summed. */
  gcSeconds: number;
  timings: Timings;
}

interface RawChildSpec {
  mode: "raw";
  tenants: TenantSpec[];
  windows: Record<string, Window[]>;
  from: string;
  to: string;
  evidence: number[];
  concurrency: number;
  connectionString: string;
  tables: { alerts: string; bodies: string };
  /** A tenant whose rows the app already wrote, to check the entities are identical. */
  checkTenant: string;
  /** Only the alert rows (and overflow parts), 100 to a transaction: the ceiling of the rows alone. */
  alertRowsOnly?: boolean;
}

interface RawChildResult {
  seconds: number;
  alerts: number;
  /** Alert rows, their index rows, one count row per row transaction, and overflow rows. */
  entities: number;
  countEntities: number;
  overflowEntities: number;
  transactions: number;
  meanTransactionMs: number;
  batchSizes: { min: number; max: number; mean: number };
  encodeSeconds: number;
  checked: number;
  maxRssMiB: number;
  cpuSeconds: number;
}

type ChildSpec = PullChildSpec | RawChildSpec | SweepChildSpec;

interface SweepChildSpec {
  mode: "sweep";
  tenantId: string;
  env: Record<string, string>;
  /** Virtual time of the first pull (the backfill, not counted), ms since the epoch. */
  start: number;
  stepMs: number;
  /** Counted pulls, one every stepMs after the backfill. */
  pulls: number;
}

/** The figures of one counted pull, from its `pull.succeeded` line. */
interface PullLine {
  alerts: number;
  calls: number;
  sweepCalls: number;
  bytes: number;
  sweepBytes: number;
  sweepAlerts: number;
  /** The child's CPU during this pull. */
  cpuMs: number;
}

interface SweepChildResult {
  backfill: { alerts: number; seconds: number };
  /** One entry per counted pull, in order. */
  pulls: PullLine[];
  seconds: number;
  /** The app child's CPU over the counted pulls. */
  cpuSeconds: number;
  /** `sweep.succeeded` lines by pass, `sweep.paused` lines, `pull.late-found` lines. */
  passes: Record<string, number>;
  paused: number;
  lateFound: number;
  /** Table Storage requests over the counted pulls, by table and kind. */
  storage: Record<string, number>;
  /** Unexpected warnings and errors (at most 20). */
  problems: string[];
}

/** A message from a sweep child: the virtual time of its next pull. The parent answers once the data is ready. */
interface Tick {
  tick: number;
  index: number;
}

/** Alerts of one tenant: equal thirds with 1, 2 and 3 evidence entries, lastUpdateTime uniform in [from, to). */
function generate(spec: { count: number; seed: string }, from: Date, to: Date, evidence: number[]): DefenderAlert[] {
  const out: DefenderAlert[] = [];
  const ids = new Set<string>();
  evidence.forEach((evidenceCount, i) => {
    const count = Math.floor(spec.count / evidence.length) + (i < spec.count % evidence.length ? 1 : 0);
    for (const alert of makeAlerts({ count, from, to, seed: `${spec.seed}:e${evidenceCount}`, evidenceCount })) {
      if (ids.has(alert.id)) continue;
      ids.add(alert.id);
      out.push(alert);
    }
  });
  return out;
}

/** The RawAlert the app builds from the fake's answer (which is JSON.stringify of the alert). */
function asRaw(alert: DefenderAlert): RawAlert {
  const json = JSON.stringify(alert);
  return { json, id: alert.id, lastUpdateTime: alert.lastUpdateTime, fields: JSON.parse(json) as Record<string, unknown> };
}

function mib(bytes: number): number {
  return Math.round((bytes / 1024 / 1024) * 10) / 10;
}

function maxRssMiB(): number {
  return Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10; // maxRSS is in KiB
}

function cpuSecondsOf(usage: NodeJS.CpuUsage): number {
  return (usage.user + usage.system) / 1e6;
}

// ---------------------------------------------------------------------------
// Children.

async function childMain(): Promise<void> {
  const spec = await new Promise<ChildSpec>((resolve) => process.once("message", resolve as never));
  const result = spec.mode === "pull" ? await childPull(spec) : spec.mode === "raw" ? await childRaw(spec) : await childSweep(spec);
  process.send?.(result, () => process.exit(0));
}

async function childPull(spec: PullChildSpec): Promise<PullChildResult> {
  Object.assign(process.env, spec.env);
  loadLoopbackDns();
  await loadFunctions();
  await services(); // builds the clients and creates the tables: the host does this once, before any message
  const timings: Timings = {};
  if (spec.sections) instrument(timings);
  const logs: string[] = [];
  const live = () => {
    global.gc?.();
    const m = process.memoryUsage();
    return m.heapUsed + m.external;
  };
  const liveBefore = live();
  let peakLive = liveBefore;
  const sampler = spec.sampleLiveMs
    ? setInterval(() => {
        peakLive = Math.max(peakLive, live());
      }, spec.sampleLiveMs)
    : undefined;
  const rssBefore = process.memoryUsage().rss;
  // Pauses for garbage collection on the main thread (forced ones of the sampler included).
  let gcMs = 0;
  const gcObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcMs += entry.duration;
  });
  gcObserver.observe({ entryTypes: ["gc"] });
  const cpu = process.cpuUsage();
  const started = performance.now();
  const limit = pLimit(spec.concurrency);
  await Promise.all(spec.tenants.map((tenantId) => limit(() => callTrigger("pull-worker", { tenantId }, logs))));
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  gcObserver.disconnect();
  const cpuSeconds = cpuSecondsOf(process.cpuUsage(cpu));
  const perTenant: Record<string, number> = {};
  for (const line of logs) {
    const m = /pull\.succeeded tenantId=(\S+) alerts=(\d+)/.exec(line);
    if (m?.[1]) perTenant[m[1]] = Number(m[2]);
  }
  const failures = spec.tenants.filter((t) => perTenant[t.toLowerCase()] === undefined);
  if (failures.length > 0) process.stderr.write(`${logs.filter((l) => !l.includes("pull.succeeded")).join("\n")}\n`);
  const alerts = Object.values(perTenant).reduce((a, b) => a + b, 0);
  return {
    seconds,
    alerts,
    perTenant,
    failures,
    rssBeforeMiB: mib(rssBefore),
    maxRssMiB: maxRssMiB(),
    gcSeconds: gcMs / 1000,
    ...(sampler ? { liveBeforeMiB: mib(liveBefore), peakLiveMiB: mib(peakLive) } : {}),
    cpuSeconds,
    timings,
  };
}

/** Times the app's calls to the Defender API and Table Storage (summed over concurrent calls). */
function instrument(timings: Timings): void {
  const add = (section: string, ms: number) => {
    const t = timings[section] ?? { ms: 0, count: 0 };
    timings[section] = t;
    t.ms += ms;
    t.count++;
  };
  const timed = <A extends unknown[], R>(section: (self: unknown, args: A) => string, fn: (...args: A) => Promise<R>) =>
    async function (this: unknown, ...args: A): Promise<R> {
      const t = performance.now();
      try {
        return await fn.apply(this, args);
      } finally {
        add(section(this, args), performance.now() - t);
      }
    };
  const list = DefenderSource.prototype.readWindow;
  DefenderSource.prototype.readWindow = timed(() => "defender GET + parse", list);
  const proto = TableClient.prototype as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  // Not upsertEntity/deleteEntity: submitTransaction calls them internally to build the batch body.
  for (const method of ["submitTransaction", "getEntity", "updateEntity"]) {
    const original = proto[method]!;
    proto[method] = timed((t) => `${method} ${(t as TableClient).tableName}`, original);
  }
  const listEntities = TableClient.prototype.listEntities;
  (TableClient.prototype as { listEntities: unknown }).listEntities = function (
    this: TableClient,
    options?: { queryOptions?: { select?: string[] } },
  ) {
    const it = listEntities.call(this, options as never);
    const select = options?.queryOptions?.select?.join(",") ?? "*";
    const section = `query ${this.tableName} select=${select}`;
    return {
      next: timed(() => section, () => it.next()),
      byPage: (settings: never) => it.byPage(settings),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  };
}

async function childRaw(spec: RawChildSpec): Promise<RawChildResult> {
  const from = new Date(spec.from);
  const to = new Date(spec.to);
  const encodeStarted = performance.now();
  // Per tenant: per stored window, its encoded alerts (pre-encoded: encoding is not timed).
  const work: { tenantId: string; windows: EncodedAlert[][] }[] = [];
  let alerts = 0;
  for (const tenant of spec.tenants) {
    const windows = (spec.windows[tenant.id] ?? []).map((w) => ({
      from: parseTimestamp(w.from)!,
      to: parseTimestamp(w.to)!,
      encoded: [] as EncodedAlert[],
    }));
    for (const alert of generate(tenant, from, to, spec.evidence)) {
      const ticks = parseTimestamp(alert.lastUpdateTime)!;
      const window = windows.find((w) => ticks >= w.from && ticks < w.to);
      if (!window) throw new Error(`alert ${alert.id} of ${tenant.id} is in no window the app stored`);
      window.encoded.push(encodeAlert(tenant.id, asRaw(alert)));
      alerts++;
    }
    work.push({ tenantId: tenant.id, windows: windows.map((w) => w.encoded).filter((e) => e.length > 0) });
  }
  const encodeSeconds = (performance.now() - encodeStarted) / 1000;

  const options = { allowInsecureConnection: true };
  const alertsTable = TableClient.fromConnectionString(spec.connectionString, spec.tables.alerts, options);
  const bodiesTable = TableClient.fromConnectionString(spec.connectionString, spec.tables.bodies, options);
  await Promise.all([alertsTable.createTable(), bodiesTable.createTable()]);

  // Every transaction, prepared up front, as alert-writer.ts builds them for new alerts:
  // [window][overflow batches, row batches].
  const overflowBytes = Math.ceil((INLINE_PARTS * PART_BYTES * 4) / 3) + 1024; // as the writer estimates it
  const plans = work.map(({ tenantId, windows }) =>
    windows.map((encoded) => ({
      overflow: toBatches(encoded.flatMap((e) => e.overflow.map((row) => ({ row, bytes: overflowBytes })))).map((batch) =>
        batch.map(({ row }): TransactionAction => ["upsert", row, "Replace"]),
      ),
      rows: spec.alertRowsOnly
        ? toBatches(encoded.map((e) => ({ row: e.row, bytes: e.bytes + 1024 }))).map((batch) =>
            batch.map(({ row }): TransactionAction => ["create", row]),
          )
        : toBatches(encoded.map(insertItem), MAX_BATCH_ENTITIES - 1).map((batch) => insertActions(tenantId, batch)),
    })),
  );
  const sizes = plans.flat().flatMap((p) => [...p.overflow, ...p.rows].map((a) => a.length));
  const overflowEntities = plans.flat().reduce((n, p) => n + p.overflow.reduce((m, a) => m + a.length, 0), 0);
  const rowTransactions = plans.flat().reduce((n, p) => n + p.rows.length, 0);

  let transactionMs = 0;
  const submit = async (table: TableClient, batch: TransactionAction[]) => {
    const t = performance.now();
    await table.submitTransaction(batch);
    transactionMs += performance.now() - t;
  };
  global.gc?.();
  const cpu = process.cpuUsage();
  const started = performance.now();
  const tenants = pLimit(spec.concurrency);
  await Promise.all(
    plans.map((windows) =>
      tenants(async () => {
        for (const window of windows) {
          const limit = pLimit(APP_WRITE_CONCURRENCY);
          await Promise.all(window.overflow.map((batch) => limit(() => submit(bodiesTable, batch))));
          await Promise.all(window.rows.map((batch) => limit(() => submit(alertsTable, batch))));
        }
      }),
    ),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpuSeconds = cpuSecondsOf(process.cpuUsage(cpu));

  // The entities are the app's: compare a few alert rows and their index rows with the app's.
  const appAlerts = TableClient.fromConnectionString(spec.connectionString, TABLES.alerts, options);
  let checked = 0;
  const sample = spec.alertRowsOnly ? [] : (work.find((w) => w.tenantId === spec.checkTenant)?.windows.flat().slice(0, 5) ?? []);
  const keys = (e: Record<string, unknown>) =>
    Object.keys(e)
      .filter((k) => !["etag", "timestamp", "odata.metadata"].includes(k))
      .sort()
      .join(",");
  for (const encoded of sample) {
    const { row } = encoded;
    const index = insertItem(encoded).index;
    const stored = await appAlerts.getEntity<Record<string, unknown>>(row.partitionKey, row.rowKey);
    const storedIndex = await appAlerts.getEntity<Record<string, unknown>>(index.partitionKey, index.rowKey);
    if (keys(stored) !== keys(row) || stored.bodySha256 !== row.bodySha256 || stored.bodyBytes !== row.bodyBytes) {
      throw new Error(`raw entity ${row.rowKey} differs from the app's: ${keys(stored)} vs ${keys(row)}`);
    }
    if (keys(storedIndex) !== keys(index) || storedIndex.bodySha256 !== index.bodySha256) {
      throw new Error(`raw index row ${index.rowKey} differs from the app's: ${keys(storedIndex)} vs ${keys(index)}`);
    }
    checked++;
  }
  return {
    seconds,
    alerts,
    entities: spec.alertRowsOnly ? alerts + overflowEntities : 2 * alerts + rowTransactions + overflowEntities,
    countEntities: spec.alertRowsOnly ? 0 : rowTransactions,
    overflowEntities,
    transactions: sizes.length,
    meanTransactionMs: transactionMs / Math.max(1, sizes.length),
    batchSizes: {
      min: Math.min(...sizes),
      max: Math.max(...sizes),
      mean: sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length),
    },
    encodeSeconds,
    checked,
    maxRssMiB: maxRssMiB(),
    cpuSeconds,
  };
}

/**
 * One simulated day of one tenant: the app's clock is virtual; the backfill at `start`,
 * then one pull every `stepMs`. Before each pull the parent publishes the alerts due by
 * then (the late ones); the others are all in the fake from the start, and its filter on
 * lastUpdateTime keeps those after `now - lag` out of every window until their time comes.
 */
async function childSweep(spec: SweepChildSpec): Promise<SweepChildResult> {
  Object.assign(process.env, spec.env);
  loadLoopbackDns();
  await loadFunctions();
  const svc = await services();
  let virtual = spec.start;
  svc.now = () => new Date(virtual);
  let counting = false;
  const storage: Record<string, number> = {};
  countStorageRequests(svc, storage, () => counting);
  const logs: string[] = [];
  const pullAt = async (index: number) => {
    virtual = spec.start + index * spec.stepMs;
    await askParent({ tick: virtual, index });
    const from = logs.length;
    await callTrigger("pull-worker", { tenantId: spec.tenantId }, logs);
    const lines = logs.slice(from);
    const line = lines.find((l) => l.includes("pull.succeeded "));
    if (!line) throw new Error(`pull ${index} did not succeed:\n${lines.join("\n")}`);
    return { lines, figures: fields(line) };
  };
  const backfillStarted = performance.now();
  const backfill = await pullAt(0);
  const backfillSeconds = (performance.now() - backfillStarted) / 1000;

  const pulls: PullLine[] = [];
  const passes: Record<string, number> = {};
  const problems: string[] = [];
  let paused = 0;
  let lateFound = 0;
  global.gc?.();
  counting = true;
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (let i = 1; i <= spec.pulls; i++) {
    const pullCpu = process.cpuUsage();
    const { lines, figures } = await pullAt(i);
    const cpuMs = cpuSecondsOf(process.cpuUsage(pullCpu)) * 1000;
    pulls.push({
      cpuMs,
      alerts: Number(figures.alerts),
      calls: Number(figures.calls),
      sweepCalls: Number(figures.sweepCalls),
      bytes: Number(figures.bytes),
      sweepBytes: Number(figures.sweepBytes),
      sweepAlerts: Number(figures.sweepAlerts),
    });
    for (const line of lines) {
      if (line.includes("sweep.succeeded ")) {
        const pass = fields(line).pass ?? "?";
        passes[pass] = (passes[pass] ?? 0) + 1;
      } else if (line.includes("sweep.paused ")) paused++;
      else if (line.includes("pull.late-found ")) lateFound++;
      else if (/^\[(warn|error)/.test(line) && !line.includes("pull.lateness-high ") && problems.length < 20) problems.push(line);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const cpuSeconds = cpuSecondsOf(process.cpuUsage(cpu));
  counting = false;
  return {
    backfill: { alerts: Number(backfill.figures.alerts), seconds: backfillSeconds },
    pulls,
    seconds,
    cpuSeconds,
    passes,
    paused,
    lateFound,
    storage,
    problems,
  };
}

/** `key=value` pairs of a log line. */
function fields(line: string): Record<string, string> {
  return Object.fromEntries([...line.matchAll(/(\w+)=(\S*)/g)].map((m) => [m[1]!, m[2]!]));
}

/** Sends a tick to the parent and waits for its answer. */
function askParent(tick: Tick): Promise<void> {
  return new Promise((resolve) => {
    process.once("message", () => resolve());
    process.send?.(tick);
  });
}

/** Counts the app's Table Storage requests (a pipeline policy on each of its table clients). */
function countStorageRequests(svc: Awaited<ReturnType<typeof services>>, counts: Record<string, number>, on: () => boolean): void {
  for (const name of Object.values(TABLES)) {
    svc.storage.table(name).pipeline.addPolicy({
      name: "benchRequestCount",
      sendRequest(request, next) {
        if (on()) {
          const path = new URL(request.url).pathname;
          let kind: string;
          if (request.method === "POST" && path.endsWith("$batch")) kind = "transaction";
          else if (request.method === "GET") kind = /\(PartitionKey=/.test(decodeURIComponent(path)) ? "point read" : "query page";
          else kind = request.method === "DELETE" ? "delete" : "single write";
          const key = `${name} ${kind}`;
          counts[key] = (counts[key] ?? 0) + 1;
        }
        return next(request);
      },
    });
  }
}

interface InsertItem {
  encoded: EncodedAlert;
  index: AlertEntity;
  bytes: number;
  entities: number;
}

/** A new alert as alert-writer.ts plans it: the alert row and its time-index row, sized as the writer sizes them. */
function insertItem(encoded: EncodedAlert): InsertItem {
  const { row } = encoded;
  const time = canonicalTime(String(row.lastUpdateTimeExact));
  if (!time) throw new Error(`alert ${row.rowKey} has an unreadable lastUpdateTime`);
  const index = indexRow(row.partitionKey, {
    alertId: String(row.alertId),
    rowKey: row.rowKey,
    time,
    sha: encoded.sha,
    ...(row.bodyKey ? { bodyKey: String(row.bodyKey), bodyOverflow: Number(row.bodyOverflow) } : {}),
  });
  return { encoded, index, bytes: encoded.bytes + 1024 * 2, entities: 2 };
}

/** One insert transaction: "create" the index row and the alert row of each alert, plus one count row. */
function insertActions(tenantId: string, batch: InsertItem[]): TransactionAction[] {
  const actions: TransactionAction[] = batch.flatMap(({ encoded, index }): TransactionAction[] => [
    ["create", index],
    ["create", encoded.row],
  ]);
  actions.push(["create", { partitionKey: tenantId, rowKey: `${COUNT_PREFIX}${randomUUID()}`, n: batch.length }]);
  return actions;
}

// ---------------------------------------------------------------------------
// The cloud: Azurite, the fakes, orchestration, report.

interface Options {
  scale: number;
  pageSize: number;
  concurrency: number;
  days: number;
  rawRuns: number;
  memory: boolean;
  memoryOnly: boolean;
  sections: boolean;
  cpuProf: boolean;
  sweep: boolean;
  sweepOnly: boolean;
  queueOnly: boolean;
  appNodeArgs: string[];
  sweepPerDay: number[];
  sweepLatePercent: number;
}

const USAGE = `npm run bench -- [flags]
  --scale <f>               1 = 50 tenants x 2,000 + 1 x 25,000 alerts; also scales the sweep's alerts a day
  --page-size <n>           PULL_PAGE_SIZE, 10000 (also for the sweep)
  --concurrency <n>         pulls at once in the end-to-end run, host.json's batchSize + newBatchThreshold
  --days <n>                span of the alerts' lastUpdateTime in the throughput runs, 3
  --raw-runs <n>            runs of the raw ceiling, 2 (the faster counts)
  --skip-memory, --memory-only
  --skip-sweep, --sweep-only
  --queue-only              only the timer queueing 10,000 tenants
  --app-node-args "<flags>" Node.js flags of the app's processes, e.g. "--max-old-space-size=256"
  --sweep-per-day <n,n>     alerts a day of the sweep's tenants, 1000,10000
  --sweep-late-percent <p>  share of the sweep's alerts published 30 minutes late, 1
  --sections                time the app's Defender calls, queries and transactions
  --cpu-prof                CPU profile of the end-to-end app child into .cache/bench/
Prints a table and writes .cache/bench/last.json.`;

function parseOptions(argv: string[]): Options {
  const o: Options = {
    scale: 1,
    pageSize: 10_000,
    concurrency: HOST_CONCURRENT_PULLS,
    days: 3,
    rawRuns: 2,
    memory: true,
    memoryOnly: false,
    sections: false,
    cpuProf: false,
    sweep: true,
    sweepOnly: false,
    queueOnly: false,
    appNodeArgs: [],
    sweepPerDay: [1_000, 10_000],
    sweepLatePercent: 1,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    const number = (min: number, max: number) => {
      const v = Number(value());
      if (!Number.isFinite(v) || v < min || v > max) throw new Error(`${arg} must be between ${min} and ${max}`);
      return v;
    };
    if (arg === "--help") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (arg === "--scale") o.scale = number(0.001, 100);
    else if (arg === "--page-size") o.pageSize = Math.round(number(1, 10_000));
    else if (arg === "--concurrency") o.concurrency = Math.round(number(1, 64));
    else if (arg === "--days") o.days = number(0.01, 6.5);
    else if (arg === "--raw-runs") o.rawRuns = Math.round(number(1, 5));
    else if (arg === "--skip-memory") o.memory = false;
    else if (arg === "--memory-only") o.memoryOnly = true;
    else if (arg === "--sections") o.sections = true;
    else if (arg === "--cpu-prof") o.cpuProf = true;
    else if (arg === "--skip-sweep") o.sweep = false;
    else if (arg === "--sweep-only") o.sweepOnly = true;
    else if (arg === "--queue-only") o.queueOnly = true;
    else if (arg === "--app-node-args") o.appNodeArgs = value().split(/\s+/).filter(Boolean);
    else if (arg === "--sweep-per-day") {
      o.sweepPerDay = value()
        .split(",")
        .map((v) => Number(v));
      if (o.sweepPerDay.some((v) => !Number.isInteger(v) || v < 1 || v > 100_000)) {
        throw new Error(`${arg} must be a list of whole numbers between 1 and 100000`);
      }
    } else if (arg === "--sweep-late-percent") o.sweepLatePercent = number(0, 100);
    else throw new Error(`unknown argument ${arg}`);
  }
  return o;
}

interface ProcStat {
  cpuSeconds: number;
  rssMiB: number;
  hwmMiB: number;
}

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Azurite runs as our child; harness.ts does not expose its pid, so find it in /proc. */
function findAzuritePid(): number | undefined {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("azurite")) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

function procStat(pid: number | undefined): ProcStat | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
    return {
      cpuSeconds: (Number(fields[11]) + Number(fields[12])) / clockTicks,
      rssMiB: Math.round((kib("VmRSS") / 1024) * 10) / 10,
      hwmMiB: Math.round((kib("VmHWM") / 1024) * 10) / 10,
    };
  } catch {
    return undefined;
  }
}

function runChild<S extends ChildSpec, R>(
  spec: S,
  execArgv: string[] = [],
  onTick?: (tick: Tick) => void | Promise<void>,
): Promise<R> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = fork(self, ["--child"], {
      execArgv: ["--expose-gc", ...(spec.mode === "pull" ? appNodeArgs : []), ...execArgv],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    let result: R | undefined;
    child.on("message", (message) => {
      if (typeof message === "object" && message !== null && "tick" in message) {
        Promise.resolve(onTick?.(message as Tick)).then(
          () => child.send({ ticked: true }),
          (err: unknown) => {
            child.kill();
            reject(err);
          },
        );
        return;
      }
      result = message as R;
    });
    child.once("error", reject);
    child.once("exit", (code) => (result !== undefined ? resolve(result) : reject(new Error(`child exited with ${code}`))));
    child.send(spec);
  });
}

/** The windows whose alerts the app stored: 200 answers with fewer items than $top. */
function storedWindows(requests: ReturnType<import("../../simulators/defender.js").FakeDefender["requests"]>, pageSize: number) {
  const windows: Window[] = [];
  let largest = 0;
  let calls = 0;
  for (const r of requests) {
    // Only the pull's window reads (onboarding's `$top=1` probe is not one).
    if (r.path !== "/api/alerts" || r.status !== 200 || r.query.$top !== String(pageSize)) continue;
    calls++;
    largest = Math.max(largest, r.itemCount);
    if (r.itemCount >= pageSize || r.query.$skip) continue;
    const ge = r.comparisons.find((c) => c.property === "lastUpdateTime" && c.op === "ge");
    const lt = r.comparisons.find((c) => c.property === "lastUpdateTime" && c.op === "lt");
    if (ge && lt && r.itemCount > 0) windows.push({ from: ge.value, to: lt.value });
  }
  return { windows, largest, calls };
}

async function parent(o: Options): Promise<void> {
  const log = (message: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
  const evidence = [1, 2, 3];
  const small = Math.max(1, Math.round(SMALL_ALERTS * o.scale));
  const big = Math.max(1, Math.round(BIG_ALERTS * o.scale));
  // What runs: throughput (end to end and raw), memory, sweep.
  appNodeArgs = o.appNodeArgs;
  const only = o.memoryOnly || o.sweepOnly || o.queueOnly;
  const runThroughput = !only;
  const runMemory = (o.memory && !only) || o.memoryOnly;
  const runSweep = (o.sweep && !only) || o.sweepOnly;
  const runQueueing = !only || o.queueOnly;
  // The sweep first, with an Azurite of its own: its figures do not depend on what the
  // throughput runs stored, and theirs not on what it stored.
  const sweep = runSweep ? await sweepSection(o, log, evidence) : undefined;
  const h = await startHarness({
    PULL_PAGE_SIZE: String(o.pageSize),
    PULL_LAG_SECONDS: "0",
    PULL_MAX_CALLS_PER_MINUTE: "100",
    PULL_MAX_CALLS_PER_HOUR: "1500",
  });
  try {
    const azuritePid = findAzuritePid();
    const to = new Date(Date.now() - 60_000);
    const from = new Date(to.getTime() - o.days * 24 * 3600_000);

    // Tenants: the big one first (longest job first, as a host would ideally pick it up).
    const specs: TenantSpec[] = [];
    if (runThroughput || runMemory) {
      specs.push({ id: "", count: big, seed: "bench:big" });
      for (let i = 0; i < SMALL_TENANTS; i++) specs.push({ id: "", count: small, seed: `bench:${i}` });
      log(`generating ${big + SMALL_TENANTS * small} alerts`);
    }
    let generateSeconds = performance.now();
    const data = specs.map((s) => generate(s, from, to, evidence));
    generateSeconds = (performance.now() - generateSeconds) / 1000;
    const jsonBytes = data.flat().reduce((n, a) => n + Buffer.byteLength(JSON.stringify(a)), 0);
    const totalAlerts = data.reduce((n, d) => n + d.length, 0);

    if (specs.length > 0) log(`onboarding ${specs.length} tenants`);
    const onboard = (alerts: DefenderAlert[]) => onboardWith(h, alerts);
    for (const [i, spec] of specs.entries()) spec.id = await onboard(data[i]!);
    // Memory runs: fresh tenants with the same data (a 25k and a 2k tenant).
    const memoryTenants = runMemory ? { big10k: await onboard(data[0]!), big2k5: await onboard(data[0]!), small: await onboard(data[1]!) } : undefined;

    const childEnv = processEnv();
    const azurite0 = procStat(azuritePid);

    const runE2e = async () => {
      log(`end to end: ${specs.length} tenants, ${o.concurrency} at a time`);
      const cpu = process.cpuUsage();
      const az = procStat(azuritePid);
      const profArgs = o.cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${outDir}`] : [];
      const result = await runChild<PullChildSpec, PullChildResult>(
        { mode: "pull", tenants: specs.map((s) => s.id), concurrency: o.concurrency, env: childEnv, sections: o.sections },
        profArgs,
      );
      const az2 = procStat(azuritePid);
      return { result, fakesCpuSeconds: cpuSecondsOf(process.cpuUsage(cpu)), azuriteCpuSeconds: cpuDelta(az, az2) };
    };
    const runRaw = async (windows: Record<string, Window[]>, n: number, alertRowsOnly = false) => {
      log(`raw ceiling, run ${n}${alertRowsOnly ? " (alert rows only)" : ""}: straight into tables benchraw${n}/benchrawbodies${n}`);
      const az = procStat(azuritePid);
      const result = await runChild<RawChildSpec, RawChildResult>({
        mode: "raw",
        tenants: specs,
        windows,
        from: from.toISOString(),
        to: to.toISOString(),
        evidence,
        concurrency: o.concurrency,
        connectionString: h.azurite.connectionString,
        tables: { alerts: `benchraw${n}`, bodies: `benchrawbodies${n}` },
        checkTenant: specs[1]!.id,
        alertRowsOnly,
      });
      return { result, azuriteCpuSeconds: cpuDelta(az, procStat(azuritePid)) };
    };

    let throughput: Awaited<ReturnType<typeof measureThroughput>> | undefined;
    const measureThroughput = async () => {
      const e2e = await runE2e();
      const windowInfo = (() => {
        const map: Record<string, Window[]> = {};
        let largest = 0;
        let calls = 0;
        for (const spec of specs) {
          const w = storedWindows(h.defender.requests(spec.id), o.pageSize);
          map[spec.id] = w.windows;
          largest = Math.max(largest, w.largest);
          calls += w.calls;
        }
        return { map, largest, calls };
      })();
      // Run twice, into two pairs of fresh tables: shows whether Azurite slows down as it fills.
      const raws = [];
      for (let i = 1; i <= o.rawRuns; i++) raws.push(await runRaw(windowInfo.map, i));
      const raw = raws.reduce((best, r) => (r.result.seconds < best.result.seconds ? r : best));
      const rowsOnly = await runRaw(windowInfo.map, o.rawRuns + 1, true);
      const azurite1 = procStat(azuritePid);
      // Defender calls against the minimum, ceil(alerts / page size) per tenant.
      const perTenantCalls = specs.map((spec) => ({
        calls: storedWindows(h.defender.requests(spec.id), o.pageSize).calls,
        minimum: Math.ceil(spec.count / o.pageSize),
      }));

      // Cross-check with the exact counts the app recorded on the sync-state rows.
      const syncTable = (await services()).storage.table(TABLES.syncState);
      let recorded = 0;
      for (const spec of specs) recorded += (await getSyncRow(syncTable, spec.id, "defender"))?.alertsStored ?? 0;
      if (e2e.result.failures.length > 0 || recorded !== totalAlerts || e2e.result.alerts !== totalAlerts) {
        throw new Error(
          `pulls incomplete: failures=${e2e.result.failures.length} written=${e2e.result.alerts} stored=${recorded} expected=${totalAlerts}`,
        );
      }
      return { e2e, raw, raws, rowsOnly, windowInfo, azurite1, perTenantCalls };
    };
    if (runThroughput) throughput = await measureThroughput();

    // Steady state: 1 % of each small tenant's alerts change, then every small tenant pulls.
    let steady: Record<string, unknown> | undefined;
    if (throughput) {
      const smalls = specs.slice(1);
      let changed = 0;
      const at = new Date(Date.now() - 5_000).toISOString().replace("Z", "0000Z");
      for (const spec of smalls) {
        const alerts = h.defender.getAlerts(spec.id);
        for (const alert of alerts.slice(0, Math.ceil(alerts.length / 100))) {
          h.defender.upsertAlert(spec.id, { ...alert, status: alert.status === "Resolved" ? "InProgress" : "Resolved", lastUpdateTime: at });
          changed++;
        }
      }
      const before = smalls.reduce((n, spec) => n + h.defender.requests(spec.id).length, 0);
      log(`steady-state tick: ${smalls.length} tenants, ${changed} alerts changed`);
      const result = await runChild<PullChildSpec, PullChildResult>({
        mode: "pull",
        tenants: smalls.map((s) => s.id),
        concurrency: o.concurrency,
        env: childEnv,
        sections: false,
      });
      const calls = smalls.reduce((n, spec) => n + h.defender.requests(spec.id).length, 0) - before;
      if (result.failures.length > 0 || result.alerts !== changed) {
        throw new Error(`steady-state tick: failures=${result.failures.length} written=${result.alerts} changed=${changed}`);
      }
      steady = {
        tenants: smalls.length,
        alertsChanged: changed,
        alertsWritten: result.alerts,
        defenderCalls: calls,
        seconds: round(result.seconds, 2),
        appCpuSeconds: round(result.cpuSeconds, 2),
        appPeakRssMiB: result.maxRssMiB,
      };
    }

    const memory: { name: string; alerts: number; pageSize: number; largestAnswer: number; result: PullChildResult }[] = [];
    if (memoryTenants) {
      const runs = [
        { name: `${data[1]!.length} alerts, page ${o.pageSize}`, id: memoryTenants.small, alerts: data[1]!.length, pageSize: o.pageSize },
        { name: `${data[0]!.length} alerts, page ${o.pageSize}`, id: memoryTenants.big10k, alerts: data[0]!.length, pageSize: o.pageSize },
        {
          name: `${data[0]!.length} alerts, page ${Math.max(1, Math.round(o.pageSize / 4))}`,
          id: memoryTenants.big2k5,
          alerts: data[0]!.length,
          pageSize: Math.max(1, Math.round(o.pageSize / 4)),
        },
      ];
      for (const run of runs) {
        log(`memory: one tenant, ${run.name}`);
        const result = await runChild<PullChildSpec, PullChildResult>({
          mode: "pull",
          tenants: [run.id],
          concurrency: 1,
          env: { ...childEnv, PULL_PAGE_SIZE: String(run.pageSize) },
          sections: false,
          sampleLiveMs: 100,
        });
        if (result.alerts !== run.alerts) throw new Error(`memory run ${run.name}: wrote ${result.alerts}`);
        const { largest } = storedWindows(h.defender.requests(run.id), run.pageSize);
        memory.push({ name: run.name, alerts: run.alerts, pageSize: run.pageSize, largestAnswer: largest, result });
      }
    }
    // Queueing last: the extra tenant rows would slow every later tenant lookup in Azurite.
    let queueing: Record<string, unknown> | undefined;
    if (runQueueing) {
      log(`queueing: ${QUEUED_TENANTS} more active tenants`);
      queueing = await measureQueueing(azuritePid);
    }
    const azuriteEnd = procStat(azuritePid);

    const measured = throughput && describeThroughput(throughput);
    const report = {
      at: new Date().toISOString(),
      config: {
        node: process.version,
        cores: cpus().length,
        cpu: cpus()[0]?.model ?? "",
        scale: o.scale,
        pageSize: o.pageSize,
        concurrentPulls: o.concurrency,
        appNodeArgs: o.appNodeArgs.join(" "),
        transactionsInFlightPerPull: APP_WRITE_CONCURRENCY,
        rawRuns: o.rawRuns,
        tenants: specs.length,
        alerts: totalAlerts,
        alertsPerTenant: { small, big },
        evidencePerAlert: evidence,
        meanAlertJsonBytes: totalAlerts > 0 ? Math.round(jsonBytes / totalAlerts) : undefined,
        spanDays: o.days,
        generateSeconds: round(generateSeconds, 1),
        loadAverage: loadavg().map((l) => round(l, 1)),
        ...measured?.config,
      },
      ...(measured
        ? {
            endToEnd: measured.endToEnd,
            raw: measured.raw,
            ratio: measured.ratio,
            rawAlertRowsOnly: measured.rawAlertRowsOnly,
            ratioToAlertRowsOnly: measured.ratioToAlertRowsOnly,
            cpu: measured.cpu,
          }
        : {}),
      ...(steady ? { steady } : {}),
      ...(queueing ? { queueing } : {}),
      ...(sweep ? { sweep } : {}),
      memory: {
        benchProcessPeakRssMiB: maxRssMiB(),
        azuritePeakRssMiB: azuriteEnd?.hwmMiB,
        azuriteRssMiB: { start: azurite0?.rssMiB, afterE2eAndRaw: throughput?.azurite1?.rssMiB, end: azuriteEnd?.rssMiB },
        appAlone: memory.map((m) => ({
          run: m.name,
          pageSize: m.pageSize,
          largestAnswer: m.largestAnswer,
          rssBeforeMiB: m.result.rssBeforeMiB,
          peakRssMiB: m.result.maxRssMiB,
          rssGrowthMiB: round(m.result.maxRssMiB - m.result.rssBeforeMiB, 1),
          liveHeapBeforeMiB: m.result.liveBeforeMiB,
          peakLiveHeapMiB: m.result.peakLiveMiB,
          liveGrowthMiB: round((m.result.peakLiveMiB ?? 0) - (m.result.liveBeforeMiB ?? 0), 1),
        })),
      },
    };
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, "last.json"), `${JSON.stringify(report, null, 2)}\n`);
    print(report);
  } finally {
    await h.stop();
  }
}

// ---------------------------------------------------------------------------
// Sweep cost per tenant per day.

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** One pull every 5 minutes, the schedule of the samples, infra and sandbox (`0 *\/5 * * * *`). */
const SWEEP_STEP_MS = 5 * MINUTE;
/** The late alerts are published this long after their lastUpdateTime: past the overlap, inside the hourly lookback. */
const SWEEP_LATE_MS = 30 * MINUTE;
/** The tenant's alerts span this many days before the end of the simulated day (the daily pass reads 7). */
const SWEEP_SPAN_DAYS = 8;
/**
 * Pulls counted after the day's 288: a pass that pauses on the sweep's budget share goes on
 * in later runs, so the daily pass that starts at 24 h may finish after it. 11 more pulls
 * end before the next hourly pass starts (at 25 h), so the counted runs hold exactly one
 * day of passes: 24 hourly and 1 daily.
 */
const SWEEP_EXTRA_PULLS = 11;
/** The app's defaults, set explicitly: the throughput runs use other limits. */
const SWEEP_APP_SETTINGS = { PULL_LAG_SECONDS: "60", PULL_MAX_CALLS_PER_MINUTE: "90", PULL_MAX_CALLS_PER_HOUR: "1400" };
const SWEEP_OFF = { SWEEP_HOURLY_LOOKBACK_HOURS: "0", SWEEP_DAILY_LOOKBACK_DAYS: "0" };

async function sweepSection(o: Options, log: (message: string) => void, evidence: number[]): Promise<SweepVolume[]> {
  const h = await startHarness({ PULL_PAGE_SIZE: String(o.pageSize), ...SWEEP_APP_SETTINGS });
  try {
    const azuritePid = findAzuritePid();
    const childEnv = processEnv();
    const onboard = (alerts: DefenderAlert[]) => onboardWith(h, alerts);
    const volumes: SweepVolume[] = [];
    for (const perDay of o.sweepPerDay) {
      const scaled = Math.max(10, Math.round(perDay * o.scale));
      volumes.push(await measureSweep({ h, o, log, childEnv, azuritePid, evidence, onboard }, scaled));
    }
    return volumes;
  } finally {
    await h.stop();
  }
}

interface SweepContext {
  h: Awaited<ReturnType<typeof startHarness>>;
  o: Options;
  log: (message: string) => void;
  childEnv: Record<string, string>;
  azuritePid: number | undefined;
  evidence: number[];
  onboard: (alerts: DefenderAlert[]) => Promise<string>;
}

interface SweepRun {
  result: SweepChildResult;
  azuriteCpuSeconds: number;
  fakesCpuSeconds: number;
  /** The fake's request log over the counted pulls: listings without evidence, and with. */
  light: { requests: number; items: number; bytes: number };
  full: { requests: number; items: number; bytes: number };
  /** Full answers (as many items as `$top`), which the reader does not keep. */
  discarded: { requests: number; items: number; bytes: number };
  stored: number;
  expected: { min: number; max: number };
}

type SweepVolume = ReturnType<typeof describeSweep>;

/**
 * One tenant's simulated day at `perDay` alerts a day, twice on fresh tenants with the
 * same alerts: with the sweep at its defaults, and with it off. Alerts are spread over the
 * 8 days before the end of the day; `--sweep-late-percent` of them are published 30
 * minutes after their lastUpdateTime (the others at it), so only a sweep finds those.
 */
async function measureSweep(ctx: SweepContext, perDay: number) {
  const { h, o, log } = ctx;
  const stepsPerDay = DAY / SWEEP_STEP_MS;
  // In the past, so that the app's clock never runs ahead of the fakes' token lifetimes.
  const start = Math.floor(Date.now() / SWEEP_STEP_MS) * SWEEP_STEP_MS - DAY - 2 * HOUR;
  const end = start + DAY;
  log(`sweep, ${perDay} alerts a day: generating ${perDay * SWEEP_SPAN_DAYS} alerts`);
  const alerts = generate({ count: perDay * SWEEP_SPAN_DAYS, seed: `sweep:${perDay}` }, new Date(end - SWEEP_SPAN_DAYS * DAY), new Date(end), ctx.evidence);
  const every = ctx.o.sweepLatePercent > 0 ? Math.max(1, Math.round(100 / o.sweepLatePercent)) : 0;
  const timed = alerts.map((alert, i) => {
    const at = Number(parseTimestamp(alert.lastUpdateTime)! / 10_000n);
    const late = every > 0 && i % every === 0;
    return { alert, at, late, publishAt: late ? at + SWEEP_LATE_MS : at };
  });
  const initially = timed.filter((a) => !a.late || a.publishAt <= start);
  const later = timed.filter((a) => a.late && a.publishAt > start).sort((a, b) => a.publishAt - b.publishAt);

  const pulls = stepsPerDay + SWEEP_EXTRA_PULLS;
  const run = async (sweepOn: boolean): Promise<SweepRun> => {
    const tenantId = await ctx.onboard(initially.map((a) => a.alert));
    log(`sweep, ${perDay} alerts a day, sweep ${sweepOn ? "on (defaults)" : "off"}: backfill, then a pull every 5 virtual minutes`);
    let published = 0;
    let fakeFrom = 0;
    let azurite0: ProcStat | undefined;
    let cpu0 = process.cpuUsage();
    let lastPull = start;
    const result = await runChild<SweepChildSpec, SweepChildResult>(
      {
        mode: "sweep",
        tenantId,
        env: { ...ctx.childEnv, ...SWEEP_APP_SETTINGS, PULL_PAGE_SIZE: String(o.pageSize), ...(sweepOn ? {} : SWEEP_OFF) },
        start,
        stepMs: SWEEP_STEP_MS,
        pulls,
      },
      [],
      ({ tick, index }) => {
        // Publish the late alerts that are due by this pull.
        while (published < later.length && later[published]!.publishAt <= tick) h.defender.upsertAlert(tenantId, later[published++]!.alert);
        lastPull = tick;
        if (index > 0 && index % (6 * 12) === 0) log(`  ${index / 12} virtual hours`);
        if (index === 1) {
          fakeFrom = h.defender.requests(tenantId).length;
          azurite0 = procStat(ctx.azuritePid);
          cpu0 = process.cpuUsage();
        }
      },
    );
    const fakesCpuSeconds = cpuSecondsOf(process.cpuUsage(cpu0));
    const azuriteCpuSeconds = cpuDelta(azurite0, procStat(ctx.azuritePid));
    if (result.problems.length > 0) log(`sweep run: unexpected log lines:\n${result.problems.join("\n")}`);
    const light = { requests: 0, items: 0, bytes: 0 };
    const full = { requests: 0, items: 0, bytes: 0 };
    const discarded = { requests: 0, items: 0, bytes: 0 };
    for (const r of h.defender.requests(tenantId).slice(fakeFrom)) {
      if (r.path !== "/api/alerts" || r.status !== 200) continue;
      const kinds = [r.query.$expand ? full : light];
      // A full answer is not kept: its window is split and read again (windows.ts).
      if (r.itemCount >= Number(r.query.$top) && !r.query.$skip) kinds.push(discarded);
      for (const kind of kinds) {
        kind.requests++;
        kind.items += r.itemCount;
        kind.bytes += r.bytes;
      }
    }
    // What must be stored: every alert the incremental pull could see, plus (with the
    // sweep) every late alert published before the last hourly pass.
    const syncTable = (await services()).storage.table(TABLES.syncState);
    const stored = (await getSyncRow(syncTable, tenantId, "defender"))?.alertsStored ?? 0;
    const upper = lastPull - 60_000; // PULL_LAG_SECONDS
    const seen = timed.filter((a) => (!a.late || a.publishAt <= start) && a.at < upper).length;
    const lateInDay = later.filter((a) => a.publishAt <= lastPull).length;
    const lateByEnd = later.filter((a) => a.publishAt <= end).length;
    const expected = sweepOn ? { min: seen + lateByEnd, max: seen + lateInDay } : { min: seen, max: seen + lateInDay };
    if (stored < expected.min || stored > expected.max) {
      throw new Error(`sweep run (${sweepOn ? "on" : "off"}): ${stored} alerts stored, expected ${expected.min} to ${expected.max}`);
    }
    if (sweepOn && (result.passes.daily ?? 0) < 1) throw new Error(`no daily sweep pass finished within ${pulls} pulls`);
    return { result, azuriteCpuSeconds, fakesCpuSeconds, light, full, discarded, stored, expected };
  };

  // Sweep off first: Azurite slows down a little as it fills, which then counts against the sweep.
  const off = await run(false);
  const on = await run(true);
  return describeSweep({ perDay, alerts: alerts.length, lateAlertsInDay: later.filter((a) => a.publishAt <= end).length, stepsPerDay, on, off });
}

function describeSweep(m: { perDay: number; alerts: number; lateAlertsInDay: number; stepsPerDay: number; on: SweepRun; off: SweepRun }) {
  const { on, off } = m;
  const sum = (pulls: PullLine[], key: keyof PullLine) => pulls.reduce((n, p) => n + p[key], 0);
  const day = on.result.pulls.slice(0, m.stepsPerDay);
  const incrementalBytes = sum(day, "bytes");
  const incrementalCalls = sum(day, "calls") - sum(day, "sweepCalls");
  const sweepBytes = sum(on.result.pulls, "sweepBytes");
  const sweepCalls = sum(on.result.pulls, "sweepCalls");
  const lightPerItem = on.light.items > 0 ? on.light.bytes / on.light.items : 0;
  const fullPerItem = on.full.items > 0 ? on.full.bytes / on.full.items : 0;
  const storage = (r: SweepRun) => Object.values(r.result.storage).reduce((a, b) => a + b, 0);
  // Within the run with the sweep: the CPU of the pulls that made sweep calls, above the
  // median pull that made none (a cross-check of the difference between the two runs).
  const quiet = on.result.pulls
    .filter((p) => p.sweepCalls === 0)
    .map((p) => p.cpuMs)
    .sort((a, b) => a - b);
  const median = quiet[Math.floor(quiet.length / 2)] ?? 0;
  const sweepPulls = on.result.pulls.filter((p) => p.sweepCalls > 0);
  const cpuWithinRun = sweepPulls.reduce((n, p) => n + p.cpuMs - median, 0) / 1000;
  const storageKinds = [...new Set([...Object.keys(on.result.storage), ...Object.keys(off.result.storage)])].sort();
  return {
    alertsPerDay: m.perDay,
    alertsInSource: m.alerts,
    lateAlertsPublishedInDay: m.lateAlertsInDay,
    pulls: on.result.pulls.length,
    passes: on.result.passes,
    sweepPaused: on.result.paused,
    sweep: {
      calls: sweepCalls,
      bytes: sweepBytes,
      alertsListedWithoutEvidence: on.light.items,
      rowsWritten: sum(on.result.pulls, "sweepAlerts"),
      lateFound: on.result.lateFound,
      cpuSeconds: round(on.result.cpuSeconds - off.result.cpuSeconds, 2),
      cpuSecondsOfSweepPulls: round(cpuWithinRun, 2),
      pullsWithSweepCalls: sweepPulls.length,
      storageRequests: storage(on) - storage(off),
      discardedFullAnswers: { calls: on.discarded.requests, alerts: on.discarded.items, bytes: on.discarded.bytes },
    },
    incremental: {
      pulls: day.length,
      calls: incrementalCalls,
      bytes: incrementalBytes,
      alertsWritten: sum(day, "alerts"),
    },
    bytesRatioSweepToIncremental: round(sweepBytes / Math.max(1, incrementalBytes), 2),
    /** Were the sweep's listings made with evidence: their items at the evidence-expanded size. */
    bytesRatioIfListedWithEvidence: round((sweepBytes + on.light.items * (fullPerItem - lightPerItem)) / Math.max(1, incrementalBytes), 1),
    meanBytesPerAlert: { withoutEvidence: Math.round(lightPerItem), withEvidence: Math.round(fullPerItem) },
    appCpuSeconds: { withSweep: round(on.result.cpuSeconds, 1), sweepOff: round(off.result.cpuSeconds, 1) },
    azuriteCpuSeconds: { withSweep: round(on.azuriteCpuSeconds, 1), sweepOff: round(off.azuriteCpuSeconds, 1) },
    fakesCpuSeconds: { withSweep: round(on.fakesCpuSeconds, 1), sweepOff: round(off.fakesCpuSeconds, 1) },
    wallSeconds: { withSweep: round(on.result.seconds, 1), sweepOff: round(off.result.seconds, 1) },
    backfill: { alerts: on.result.backfill.alerts, seconds: round(on.result.backfill.seconds, 1) },
    storageRequests: Object.fromEntries(
      storageKinds.map((k) => [k, { withSweep: on.result.storage[k] ?? 0, sweepOff: off.result.storage[k] ?? 0 }]),
    ),
    alertsStored: { withSweep: on.stored, sweepOff: off.stored, expectedWithSweep: on.expected, expectedSweepOff: off.expected },
  };
}

/** A new tenant of the harness holding these alerts, onboarded through the consent flow. */
async function onboardWith(h: Awaited<ReturnType<typeof startHarness>>, alerts: DefenderAlert[]): Promise<string> {
  const id = h.newTenant();
  h.defender.setAlerts(id, alerts);
  const page = await h.onboard(id);
  if (page.status !== 200) throw new Error(`onboarding failed: ${page.status} ${page.text}`);
  return id;
}

/** This process's environment, for the children. */
function processEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  return env;
}

/** The timer's queueing of QUEUED_TENANTS extra active tenants: wall time and peak sends in flight. */
async function measureQueueing(azuritePid: number | undefined): Promise<Record<string, unknown>> {
  const svc = await services();
  const tenants = svc.storage.table(TABLES.tenants);
  const rows = Array.from({ length: QUEUED_TENANTS }, () => ({ partitionKey: TENANT_PARTITION, rowKey: randomUUID(), status: "active" }));
  const limit = pLimit(8);
  await Promise.all(
    Array.from({ length: Math.ceil(rows.length / 100) }, (_, i) =>
      limit(() => tenants.submitTransaction(rows.slice(i * 100, i * 100 + 100).map((row): TransactionAction => ["upsert", row]))),
    ),
  );
  const queue = svc.storage.pullQueue;
  const send = queue.sendMessage.bind(queue);
  let inFlight = 0;
  let peak = 0;
  queue.sendMessage = (async (...args: Parameters<typeof send>) => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    try {
      return await send(...args);
    } finally {
      inFlight--;
    }
  }) as typeof queue.sendMessage;
  let listed = performance.now();
  await listTenants(tenants);
  listed = (performance.now() - listed) / 1000;
  const cpu = process.cpuUsage();
  const azurite = procStat(azuritePid);
  const started = performance.now();
  const queued = await enqueueActiveTenants(svc, { info() {}, warn() {}, error() {} });
  const seconds = (performance.now() - started) / 1000;
  queue.sendMessage = send;
  return {
    activeTenants: queued,
    seconds: round(seconds, 2),
    ofWhichListingTenantsSeconds: round(listed, 2),
    peakSendsInFlight: peak,
    timerCpuSeconds: round(cpuSecondsOf(process.cpuUsage(cpu)), 1),
    azuriteCpuSeconds: round(cpuDelta(azurite, procStat(azuritePid)), 1),
    loadAverage: loadavg().map((l) => round(l, 1)),
    target: "10,000 tenants in under 10 s",
  };
}

interface Throughput {
  e2e: { result: PullChildResult; fakesCpuSeconds: number; azuriteCpuSeconds: number };
  raw: { result: RawChildResult; azuriteCpuSeconds: number };
  raws: { result: RawChildResult; azuriteCpuSeconds: number }[];
  rowsOnly: { result: RawChildResult; azuriteCpuSeconds: number };
  windowInfo: { map: Record<string, Window[]>; largest: number; calls: number };
  perTenantCalls: { calls: number; minimum: number }[];
}

function describeThroughput({ e2e, raw, raws, rowsOnly, windowInfo, perTenantCalls }: Throughput) {
  const e2eRate = e2e.result.alerts / e2e.result.seconds;
  const rawRate = raw.result.alerts / raw.result.seconds;
  const rowsOnlyRate = rowsOnly.result.alerts / rowsOnly.result.seconds;
  const minimum = perTenantCalls.reduce((n, t) => n + t.minimum, 0);
  const cpuPer1000 = (e2e.result.cpuSeconds / e2e.result.alerts) * 1000;
  return {
    config: {
      defenderCalls: windowInfo.calls,
      defenderCallsMinimum: minimum,
      defenderCallsOverMinimum: `${round(((windowInfo.calls - minimum) / minimum) * 100, 1)} % (target <= 10 %)`,
      tenantsOverMinimumPlusOne: perTenantCalls.filter((t) => t.calls > t.minimum + 1).length,
      storedWindows: Object.values(windowInfo.map).reduce((n, w) => n + w.length, 0),
      largestAnswer: windowInfo.largest,
    },
    endToEnd: {
      seconds: round(e2e.result.seconds, 2),
      alerts: e2e.result.alerts,
      alertsPerSecond: Math.round(e2eRate),
      appCpuSeconds: round(e2e.result.cpuSeconds, 1),
      appCpuSecondsPer1000Alerts: round(cpuPer1000, 2),
      appGcPauseSeconds: round(e2e.result.gcSeconds, 1),
      // The 25,000-alert tenant's CPU on a Flex 512 MB instance (about 0.25 core): its wall time at least.
      projected25kPullSecondsAtQuarterCore: Math.round((cpuPer1000 * 25) / 0.25),
      fakesCpuSeconds: round(e2e.fakesCpuSeconds, 1),
      azuriteCpuSeconds: round(e2e.azuriteCpuSeconds, 1),
      appRssBeforeMiB: e2e.result.rssBeforeMiB,
      appPeakRssMiB: e2e.result.maxRssMiB,
      sections: Object.fromEntries(
        Object.entries(e2e.result.timings).map(([k, v]) => [
          k,
          { seconds: round(v.ms / 1000, 2), count: v.count, meanMs: round(v.ms / v.count, 1) },
        ]),
      ),
    },
    raw: {
      seconds: round(raw.result.seconds, 2),
      alerts: raw.result.alerts,
      entities: raw.result.entities,
      countEntities: raw.result.countEntities,
      overflowEntities: raw.result.overflowEntities,
      transactions: raw.result.transactions,
      batchSizes: { ...raw.result.batchSizes, mean: round(raw.result.batchSizes.mean, 1) },
      entitiesPerSecond: Math.round(raw.result.entities / raw.result.seconds),
      alertsPerSecond: Math.round(rawRate),
      alertsPerSecondEachRun: raws.map((r) => Math.round(r.result.alerts / r.result.seconds)),
      meanTransactionMs: round(raw.result.meanTransactionMs, 1),
      clientCpuSeconds: round(raw.result.cpuSeconds, 1),
      azuriteCpuSeconds: round(raw.azuriteCpuSeconds, 1),
      encodeSecondsUntimed: round(raw.result.encodeSeconds, 1),
      entitiesCheckedAgainstApp: raw.result.checked,
    },
    rawAlertRowsOnly: {
      seconds: round(rowsOnly.result.seconds, 2),
      entities: rowsOnly.result.entities,
      transactions: rowsOnly.result.transactions,
      alertsPerSecond: Math.round(rowsOnlyRate),
    },
    ratio: round(e2eRate / rawRate, 3),
    ratioToAlertRowsOnly: round(e2eRate / rowsOnlyRate, 3),
    cpu: cpuAccount(e2e, raw),
  };
}

/**
 * The CPU of every process of each run (end to end: app, fakes, Azurite; raw: client,
 * Azurite). When both runs keep the same cores busy, wall time follows total CPU, so
 * raw CPU / end-to-end CPU is the ratio the end-to-end run can reach on this machine.
 */
function cpuAccount(e2e: Throughput["e2e"], raw: Throughput["raw"]) {
  const e2eCpu = e2e.result.cpuSeconds + e2e.fakesCpuSeconds + e2e.azuriteCpuSeconds;
  const rawCpu = raw.result.cpuSeconds + raw.azuriteCpuSeconds;
  return {
    endToEndCpuSeconds: round(e2eCpu, 1),
    endToEndCoresBusy: round(e2eCpu / e2e.result.seconds, 2),
    rawCpuSeconds: round(rawCpu, 1),
    rawCoresBusy: round(rawCpu / raw.result.seconds, 2),
    rawCpuOverEndToEndCpu: round(rawCpu / e2eCpu, 3),
  };
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function cpuDelta(a: ProcStat | undefined, b: ProcStat | undefined): number {
  return a && b ? b.cpuSeconds - a.cpuSeconds : Number.NaN;
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

function print(r: {
  config: Record<string, unknown>;
  endToEnd?: Record<string, unknown>;
  raw?: Record<string, unknown>;
  ratio?: number;
  rawAlertRowsOnly?: Record<string, unknown>;
  ratioToAlertRowsOnly?: number;
  cpu?: ReturnType<typeof cpuAccount>;
  steady?: Record<string, unknown>;
  queueing?: Record<string, unknown>;
  sweep?: SweepVolume[];
  memory: Record<string, unknown>;
}): void {
  const lines: string[] = [];
  const row = (label: string, value: unknown) =>
    lines.push(`  ${label.padEnd(44)} ${typeof value === "object" ? JSON.stringify(value) : String(value)}`);
  lines.push("", "Configuration");
  for (const [k, v] of Object.entries(r.config)) row(k, v);
  if (r.endToEnd && r.raw && r.ratio !== undefined) {
    lines.push("", "End to end (app child: pull-worker handler -> fake Defender -> Azurite)");
    for (const [k, v] of Object.entries(r.endToEnd)) if (k !== "sections") row(k, v);
    const sections = r.endToEnd.sections as Record<string, unknown>;
    if (Object.keys(sections).length > 0) lines.push("  time in calls, summed over concurrent calls (--sections):");
    for (const [k, v] of Object.entries(sections)) row(`  ${k}`, v);
    lines.push("", "Raw ceiling (raw child: the same entities and batches, submitTransaction only)");
    for (const [k, v] of Object.entries(r.raw)) row(k, v);
    lines.push("", "Ratio");
    row("end-to-end alerts/s / raw alerts/s", `${(r.ratio * 100).toFixed(1)} %  (target >= 90 %)`);
    if (r.cpu) {
      const c = r.cpu;
      row("CPU s of all processes, end to end", `${c.endToEndCpuSeconds} (${c.endToEndCoresBusy} cores busy)`);
      row("CPU s of all processes, raw", `${c.rawCpuSeconds} (${c.rawCoresBusy} cores busy)`);
      row("raw CPU / end-to-end CPU", `${(c.rawCpuOverEndToEndCpu * 100).toFixed(1)} %  (the ratio's reach while both fill the same cores)`);
    }
    if (r.rawAlertRowsOnly) {
      lines.push("", "Raw ceiling of the alert rows alone (no index or count rows, 100 to a transaction)");
      for (const [k, v] of Object.entries(r.rawAlertRowsOnly)) row(k, v);
      row("end-to-end alerts/s / alert-rows-only alerts/s", `${((r.ratioToAlertRowsOnly ?? 0) * 100).toFixed(1)} %`);
    }
  }
  if (r.sweep && r.sweep.length > 0) {
    lines.push(
      "",
      "Sweep cost per tenant per day (sweep child: the app alone, virtual clock, a pull every 5 minutes;",
      "CPU and storage requests = run with the sweep at its defaults minus the same day with the sweep off)",
    );
    for (const v of r.sweep) {
      lines.push(`  ${v.alertsPerDay} alerts a day`);
      row("  sweep: calls, bytes, rows written", `${v.sweep.calls} calls, ${mb(v.sweep.bytes)}, ${v.sweep.rowsWritten} rows`);
      row(
        "  sweep: CPU seconds (app)",
        `${v.sweep.cpuSeconds} s (the ${v.sweep.pullsWithSweepCalls} pulls with sweep calls, above the median pull: ${v.sweep.cpuSecondsOfSweepPulls} s)`,
      );
      row("  sweep: storage requests", v.sweep.storageRequests);
      row("  sweep: alerts listed without evidence", v.sweep.alertsListedWithoutEvidence);
      row(
        "  sweep: full answers thrown away",
        `${v.sweep.discardedFullAnswers.calls} calls, ${v.sweep.discardedFullAnswers.alerts} alerts, ${mb(v.sweep.discardedFullAnswers.bytes)}`,
      );
      row("  incremental: calls, bytes", `${v.incremental.calls} calls, ${mb(v.incremental.bytes)} (${v.incremental.pulls} pulls)`);
      row("  bytes sweep / incremental", `${v.bytesRatioSweepToIncremental} (with evidence in the listings: ${v.bytesRatioIfListedWithEvidence})`);
      for (const [k, value] of Object.entries(v)) {
        if (!["alertsPerDay", "sweep", "incremental", "bytesRatioSweepToIncremental", "bytesRatioIfListedWithEvidence", "storageRequests"].includes(k)) {
          row(`  ${k}`, value);
        }
      }
    }
  }
  if (r.steady) {
    lines.push("", "Steady-state tick (the small tenants pull again after 1 % of their alerts changed)");
    for (const [k, v] of Object.entries(r.steady)) row(k, v);
  }
  if (r.queueing) {
    lines.push("", "Queueing (the timer's handler queues a pull per active tenant, against Azurite)");
    for (const [k, v] of Object.entries(r.queueing)) row(k, v);
  }
  lines.push("", "Memory");
  for (const [k, v] of Object.entries(r.memory)) {
    if (k !== "appAlone") row(k, v);
  }
  const alone = r.memory.appAlone as Record<string, unknown>[];
  if (alone.length > 0) lines.push("  the app alone, one tenant (live heap = heapUsed + external after a forced GC every 100 ms):");
  for (const m of alone) {
    const { run, ...rest } = m;
    row(`  ${String(run)}`, rest);
  }
  lines.push("");
  process.stdout.write(`${lines.join("\n")}\n`);
}

// ---------------------------------------------------------------------------

if (process.argv.includes("--child")) {
  await childMain();
} else {
  const certs = testCerts(); // the fakes serve certificates from the same folder
  if (process.env.NODE_EXTRA_CA_CERTS !== certs.caPath) {
    // NODE_EXTRA_CA_CERTS is read at process start only: run again with it set.
    const child = spawn(process.execPath, [...process.execArgv, self, ...process.argv.slice(2)], {
      cwd: root,
      stdio: "inherit",
      env: { ...process.env, NODE_EXTRA_CA_CERTS: certs.caPath },
    });
    child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
  } else {
    await parent(parseOptions(process.argv.slice(2)));
    process.exit(0);
  }
}
