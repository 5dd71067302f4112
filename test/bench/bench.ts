/**
 * `npm run bench`: ingestion throughput and memory against real Azurite and the HTTPS fakes.
 *
 * Processes, so that each figure belongs to one program:
 *   - this process (the "cloud"): Azurite (its own child process), the fakes of Entra ID,
 *     Key Vault, the managed-identity endpoint and the Defender API, and the alerts;
 *   - an "app" child: only the app, configured through app settings as the Functions host
 *     does it, running the registered pull-worker handler N pulls at a time (host.json
 *     queues.batchSize = 4). Its startup is not timed;
 *   - a "raw" child, the ceiling: it regenerates the same alerts (fixed seeds), encodes
 *     them with the app's encodeAlert (untimed), groups them into the windows the app
 *     stored (from the fake's request log), batches them with the app's toBatches, and
 *     times only TableClient.submitTransaction (upsert, Replace) into fresh tables, in the
 *     app's write shape: N tenants at a time, a tenant's windows one after the other,
 *     overflow rows first, 4 transactions in flight per window (pull.ts WRITE_CONCURRENCY).
 *     It runs after the app, twice by default; the faster run is the ceiling;
 *   - "memory" children: the app pulling one fresh tenant alone (2,000 alerts, and 25,000
 *     at two page sizes), with the live heap sampled after forced GCs.
 *
 * Flags: --scale <f> (1 = 50 x 2,000 + 1 x 25,000 alerts), --page-size <n> (10000),
 * --concurrency <n> (4), --days <n> (3), --raw-runs <n> (2), --skip-memory, --memory-only,
 * --sections (time the app's Defender calls, queries and transactions), --cpu-prof (CPU
 * profile of the app child into .cache/bench/). Prints a table; writes .cache/bench/last.json.
 */
import { type ChildProcess, execFileSync, fork, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { TableClient, type TransactionAction } from "@azure/data-tables";
import pLimit from "p-limit";
import { type AlertEntity, type EncodedAlert, encodeAlert, INLINE_PARTS, PART_BYTES, type RawAlert, toBatches } from "../../shared/collection/alert-store.js";
import { DefenderSource } from "../../shared/collection/sources/defender/client.js";
import { services } from "../../shared/platform/services.js";
import { TABLES } from "../../shared/platform/storage.js";
import { getTenant } from "../../shared/onboarding/tenants.js";
import { type DefenderAlert, makeAlerts, parseTimestamp } from "../../simulators/alerts.js";
import { loadLoopbackDns, testCerts } from "../../simulators/https.js";
import { callTrigger, loadFunctions } from "../support/functions.js";
import { startHarness } from "../support/harness.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const self = fileURLToPath(import.meta.url);
const outDir = join(root, ".cache", "bench");
/** pull.ts WRITE_CONCURRENCY: transactions in flight per writeAlerts call. */
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
}

interface RawChildResult {
  seconds: number;
  alerts: number;
  entities: number;
  overflowEntities: number;
  transactions: number;
  meanTransactionMs: number;
  batchSizes: { min: number; max: number; mean: number };
  encodeSeconds: number;
  checked: number;
  maxRssMiB: number;
  cpuSeconds: number;
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
  const spec = await new Promise<PullChildSpec | RawChildSpec>((resolve) => process.once("message", resolve as never));
  const result = spec.mode === "pull" ? await childPull(spec) : await childRaw(spec);
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
  const cpu = process.cpuUsage();
  const started = performance.now();
  const limit = pLimit(spec.concurrency);
  await Promise.all(spec.tenants.map((tenantId) => limit(() => callTrigger("pull-worker", { tenantId }, logs))));
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
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

  // Every transaction, prepared up front: [window][overflow batches, row batches].
  const overflowBytes = Math.ceil((INLINE_PARTS * PART_BYTES * 4) / 3) + 1024; // as writeAlerts estimates it
  const plans = work.map(({ windows }) =>
    windows.map((encoded) => ({
      overflow: toBatches(encoded.flatMap((e) => e.overflow.map((row) => ({ row, bytes: overflowBytes })))).map(actions),
      rows: toBatches(encoded).map(actions),
    })),
  );
  const sizes = plans.flat().flatMap((p) => [...p.overflow, ...p.rows].map((a) => a.length));
  const overflowEntities = plans.flat().reduce((n, p) => n + p.overflow.reduce((m, a) => m + a.length, 0), 0);

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

  // The entities are the app's: compare a few with the rows the app wrote.
  const appAlerts = TableClient.fromConnectionString(spec.connectionString, TABLES.alerts, options);
  let checked = 0;
  const sample = work.find((w) => w.tenantId === spec.checkTenant)?.windows.flat().slice(0, 5) ?? [];
  for (const { row } of sample) {
    const stored = await appAlerts.getEntity<Record<string, unknown>>(row.partitionKey, row.rowKey);
    const keys = (e: Record<string, unknown>) =>
      Object.keys(e)
        .filter((k) => !["etag", "timestamp", "odata.metadata"].includes(k))
        .sort()
        .join(",");
    if (keys(stored) !== keys(row) || stored.bodySha256 !== row.bodySha256 || stored.bodyBytes !== row.bodyBytes) {
      throw new Error(`raw entity ${row.rowKey} differs from the app's: ${keys(stored)} vs ${keys(row)}`);
    }
    checked++;
  }
  return {
    seconds,
    alerts,
    entities: alerts + overflowEntities,
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

function actions(batch: { row: AlertEntity }[]): TransactionAction[] {
  return batch.map(({ row }) => ["upsert", row, "Replace"]);
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
}

function parseOptions(argv: string[]): Options {
  const o: Options = {
    scale: 1,
    pageSize: 10_000,
    concurrency: 4,
    days: 3,
    rawRuns: 2,
    memory: true,
    memoryOnly: false,
    sections: false,
    cpuProf: false,
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
    if (arg === "--scale") o.scale = number(0.001, 100);
    else if (arg === "--page-size") o.pageSize = Math.round(number(1, 10_000));
    else if (arg === "--concurrency") o.concurrency = Math.round(number(1, 64));
    else if (arg === "--days") o.days = number(0.01, 6.5);
    else if (arg === "--raw-runs") o.rawRuns = Math.round(number(1, 5));
    else if (arg === "--skip-memory") o.memory = false;
    else if (arg === "--memory-only") o.memoryOnly = true;
    else if (arg === "--sections") o.sections = true;
    else if (arg === "--cpu-prof") o.cpuProf = true;
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

function runChild<S extends PullChildSpec | RawChildSpec, R>(spec: S, execArgv: string[] = []): Promise<R> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = fork(self, ["--child"], {
      execArgv: ["--expose-gc", ...execArgv],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    let result: R | undefined;
    child.once("message", (message) => {
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
    const specs: TenantSpec[] = [{ id: "", count: big, seed: "bench:big" }];
    for (let i = 0; i < SMALL_TENANTS; i++) specs.push({ id: "", count: small, seed: `bench:${i}` });
    log(`generating ${big + SMALL_TENANTS * small} alerts`);
    let generateSeconds = performance.now();
    const data = specs.map((s) => generate(s, from, to, evidence));
    generateSeconds = (performance.now() - generateSeconds) / 1000;
    const jsonBytes = data.flat().reduce((n, a) => n + Buffer.byteLength(JSON.stringify(a)), 0);
    const totalAlerts = data.reduce((n, d) => n + d.length, 0);

    log(`onboarding ${specs.length} tenants`);
    const onboard = async (alerts: DefenderAlert[]) => {
      const id = h.newTenant();
      h.defender.setAlerts(id, alerts);
      const page = await h.onboard(id);
      if (page.status !== 200) throw new Error(`onboarding failed: ${page.status} ${page.text}`);
      return id;
    };
    for (const [i, spec] of specs.entries()) spec.id = await onboard(data[i]!);
    // Memory runs: fresh tenants with the same data (a 25k and a 2k tenant).
    const memoryTenants = o.memory ? { big10k: await onboard(data[0]!), big2k5: await onboard(data[0]!), small: await onboard(data[1]!) } : undefined;

    const childEnv: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) childEnv[k] = v;
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
    const runRaw = async (windows: Record<string, Window[]>, n: number) => {
      log(`raw ceiling, run ${n}: the same entities straight into tables benchraw${n}/benchrawbodies${n}`);
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
      const azurite1 = procStat(azuritePid);

      // Cross-check with what the app recorded on the tenant rows.
      const tenantsTable = (await services()).storage.table(TABLES.tenants);
      let recorded = 0;
      for (const spec of specs) recorded += (await getTenant(tenantsTable, spec.id))?.alertsStored ?? 0;
      if (e2e.result.failures.length > 0 || recorded !== totalAlerts || e2e.result.alerts !== totalAlerts) {
        throw new Error(
          `pulls incomplete: failures=${e2e.result.failures.length} written=${e2e.result.alerts} stored=${recorded} expected=${totalAlerts}`,
        );
      }
      return { e2e, raw, raws, windowInfo, azurite1 };
    };
    if (!o.memoryOnly) throughput = await measureThroughput();

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
        transactionsInFlightPerPull: APP_WRITE_CONCURRENCY,
        rawRuns: o.rawRuns,
        tenants: specs.length,
        alerts: totalAlerts,
        alertsPerTenant: { small, big },
        evidencePerAlert: evidence,
        meanAlertJsonBytes: Math.round(jsonBytes / totalAlerts),
        spanDays: o.days,
        generateSeconds: round(generateSeconds, 1),
        ...measured?.config,
      },
      ...(measured ? { endToEnd: measured.endToEnd, raw: measured.raw, ratio: measured.ratio } : {}),
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

interface Throughput {
  e2e: { result: PullChildResult; fakesCpuSeconds: number; azuriteCpuSeconds: number };
  raw: { result: RawChildResult; azuriteCpuSeconds: number };
  raws: { result: RawChildResult; azuriteCpuSeconds: number }[];
  windowInfo: { map: Record<string, Window[]>; largest: number; calls: number };
}

function describeThroughput({ e2e, raw, raws, windowInfo }: Throughput) {
  const e2eRate = e2e.result.alerts / e2e.result.seconds;
  const rawRate = raw.result.alerts / raw.result.seconds;
  return {
    config: {
      defenderCalls: windowInfo.calls,
      storedWindows: Object.values(windowInfo.map).reduce((n, w) => n + w.length, 0),
      largestAnswer: windowInfo.largest,
    },
    endToEnd: {
      seconds: round(e2e.result.seconds, 2),
      alerts: e2e.result.alerts,
      alertsPerSecond: Math.round(e2eRate),
      appCpuSeconds: round(e2e.result.cpuSeconds, 1),
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
    ratio: round(e2eRate / rawRate, 3),
  };
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
    row("end-to-end alerts/s / raw alerts/s", `${(r.ratio * 100).toFixed(1)} %  (target >= 70 %)`);
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
