/**
 * `npm run mutate`: mutation testing of the guards the README promises (docs/testing.md),
 * with StrykerJS and its tap runner over the compiled node:test files. Not part of
 * `npm test` and not in CI: four of the seven groups took 45 minutes on two shared cores.
 *
 * Stryker mutates the TypeScript sources in a sandbox copy under .cache/stryker-tmp,
 * compiles the sandbox with tsc (`buildCommand`), so dist/ holds every mutant behind a
 * switch, and runs the compiled test files with `node <file>`: node:test prints TAP when
 * stdout is not a terminal. The test CA goes in through NODE_EXTRA_CA_CERTS, as in
 * `npm test`; the CA files are copied into the sandbox, so the simulators there serve a
 * certificate that CA signed.
 *
 * Each module group below is one Stryker run with its own `mutate` list and its own test
 * files, narrowed with `--test-name-pattern` to the tests that guard those lines. The
 * `mutate` list names functions and methods, not line numbers: at run time each name is
 * found with the TypeScript compiler API and becomes `file:start-end` (the declaration's
 * lines), so a range follows its guard when the code around it is rewritten. A name that
 * is no longer declared stops the run before Stryker starts, as does a test name that its
 * test file no longer contains. Stryker's per-test coverage
 * is per file with the tap runner, so within a group a mutant runs only the files whose
 * run executed it; the name patterns keep each file's run to the guarding tests.
 *
 *   npm run mutate                    every group
 *   npm run mutate -- tokens lease    some groups
 *   npm run mutate -- --list          the groups, their resolved ranges and tests
 *
 * Reports: .cache/mutation/<group>/report.html and report.json; the summary table
 * (docs/testing.md "Mutation score") in .cache/mutation/summary.md.
 */
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { testCerts } from "../simulators/https.js";

/** Repository root (this file runs as dist/dev/mutate.js). */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const OUT = join(".cache", "mutation");

export interface TestSelection {
  /** A compiled test file, relative to the repository root. */
  file: string;
  /** Full names of the tests (or suites) to run; matched as literal text. */
  names: string[];
}

/**
 * Code to mutate: a TypeScript source and the declarations in it, by name. `fn` is a
 * top-level function (or a `const fn = ...`), `Class.member` a method, getter or
 * constructor (`Class.constructor`), `Class` a whole class.
 */
export interface MutateTarget {
  file: string;
  symbols: string[];
}

export interface MutationGroup {
  name: string;
  /** The documented guards these declarations implement. */
  guards: string;
  mutate: MutateTarget[];
  /**
   * Stryker mutators not applied here, with the reason (docs/testing.md). Only for
   * mutators whose every mutant here would be equivalent or outside the guard, e.g.
   * error message text that no caller reads.
   */
  excluded?: { mutators: string[]; why: string };
  tests: TestSelection[];
}

const PULL = "dist/test/pull.test.js";
const SYNC = "dist/test/sync.test.js";
const UNITS = "dist/test/units.test.js";
const REGISTRATIONS = "dist/test/registrations.test.js";
const ONBOARDING = "dist/test/onboarding.test.js";
const ALERTS_READ = "dist/test/alerts-read.test.js";
const LOSSLESS = "dist/test/lossless.test.js";

/**
 * The module -> test map. Keep it in step with docs/testing.md. The first groups cover
 * modules that change rarely; `defender` and `engine` name code that is being rewritten,
 * so their names may need updating before they run (the run says which).
 */
export const GROUPS: MutationGroup[] = [
  {
    name: "budget",
    guards: "the call budget: per-minute and hourly limits, the sweep's share, kept across runs",
    mutate: [{ file: "shared/collection/budget.ts", symbols: ["CallBudget.setSweepPercent", "CallBudget.sweepLimits", "CallBudget.take", "CallBudget.serialize", "parseBuckets"] }],
    excluded: { mutators: ["StringLiteral"], why: "the messages of BudgetExhaustedError; callers read its class and shareOnly" },
    tests: [
      { file: UNITS, names: ["CallBudget"] },
      { file: PULL, names: ["stops cleanly when the per-minute budget runs out, and the next run in that minute makes no call"] },
    ],
  },
  {
    name: "tokens",
    guards: "the access-token cache; the refresh-token write-back (interval, generation, no recovery of a deleted secret, its log line)",
    mutate: [
      {
        file: "shared/collection/tokens.ts",
        symbols: ["cachedAccessToken", "remember", "DelegatedTokenProvider.get", "DelegatedTokenProvider.maybeWriteBack"],
      },
    ],
    tests: [
      {
        file: PULL,
        names: [
          "serves access tokens from the cache: a second pull redeems nothing",
          "keeps a cached access token until five minutes before it expires, then redeems a new one",
          "replaces a cached access token that the API refuses (401) with a new one, and goes on",
          "writes a rotated refresh token back when the stored one is old, and disables the old version",
          "writes back only once the write-back interval has passed since the stored token was written",
          "does not write a token back when a re-consent changed the tenant during the pull",
          "never recovers a secret that was deleted while the pull ran",
          "disables its written-back version when a re-consent lands during the write-back",
          "never writes a refresh token, or any token, into its logs",
          "redeems the refresh-token version the tenant row names, not a newer one left in Key Vault",
          "marks a tenant whose refresh token is gone from Key Vault reconsent-required (RefreshTokenMissing)",
        ],
      },
    ],
  },
  {
    name: "lease",
    guards: "the pull lease: a live lease is never taken, renewal at checkpoints, fenced commits, a lease that outlives functionTimeout",
    mutate: [
      {
        file: "shared/collection/lease.ts",
        symbols: ["Lease.leaseUntil", "Lease.acquire", "Lease.assertHeld", "Lease.beforeWrite", "Lease.commit", "Lease.release", "Lease.checkStillOurs"],
      },
      { file: "shared/collection/lease-timing.ts", symbols: ["parseTimeSpan", "leaseTiming"] },
    ],
    excluded: { mutators: ["StringLiteral"], why: "the reasons in LeaseLost and LeaseTimingError messages; no caller reads them (the engine logs pull.lease-lost without one)" },
    tests: [
      { file: REGISTRATIONS, names: ["sets functionTimeout in host.json, and the pull lease outlives it"] },
      { file: UNITS, names: ["functionTimeout and the pull lease"] },
      {
        file: PULL,
        names: [
          "renews its lease at checkpoints, so a pull longer than the lease completes",
          "runs no second pull while a live lease is held (not only when the acquisitions race)",
          "stops at its next write or checkpoint once its lease is within 30 s of its end",
          "lets only one of two runs that find the lease free at once take it",
          "fails the message when storage fails while taking the lease, so the host retries it (not skipped as busy)",
        ],
      },
      { file: SYNC, names: ["fenced pulls"] },
    ],
  },
  {
    name: "consent-state",
    guards: "consent states: expired ones purged by the pull timer, at most CONSENT_STATES_PER_LINK per link, oldest dropped",
    mutate: [{ file: "shared/onboarding/consent.ts", symbols: ["purgeExpiredStates", "keepNewestStates"] }],
    tests: [
      {
        file: ONBOARDING,
        names: [
          "the pull timer removes expired consent states and keeps live ones",
          "keeps at most CONSENT_STATES_PER_LINK (5) states per link, dropping the oldest, and reads only that link's states",
        ],
      },
    ],
  },
  {
    name: "alerts-read",
    guards: "the filters of GET /api/alerts: tenantId, since, status, severity, top",
    mutate: [{ file: "shared/operator/alerts-read.ts", symbols: ["listAlerts"] }],
    excluded: { mutators: ["StringLiteral"], why: "the texts of the 400 answers; the codes beside them are what clients read, and the OData filters are built with the odata tag, whose template strings Stryker does not mutate" },
    tests: [
      { file: ALERTS_READ, names: ["GET /api/alerts filters"] },
      { file: PULL, names: ["lists across tenants with filters and a continuation token, and rejects bad filters"] },
    ],
  },
  {
    name: "defender",
    guards: "Retry-After (honoured, and over two minutes ends the run), capped backoff, @odata.nextLink (followed, own origin only)",
    mutate: [{ file: "shared/collection/sources/odata-client.ts", symbols: ["ODataClient.get", "parseRetryAfter", "checkedNextLink"] }],
    tests: [
      { file: UNITS, names: ["parses Retry-After seconds", "parses a Retry-After HTTP date, and never to a negative or unreadable wait"] },
      { file: LOSSLESS, names: ["rides out 429 and 5xx storms and resets, honouring Retry-After"] },
      {
        file: PULL,
        names: [
          "ends the run cleanly when Retry-After asks for more than two minutes",
          "backs off exponentially with full jitter after 5xx answers: random x 1, 2, 4, 8, 16 s",
          "logs every retry with the status and the wait",
          "follows @odata.nextLink under $top, but only on the API's own origin",
        ],
      },
    ],
  },
  {
    name: "engine",
    guards: "a busy lease ends the run, the budget restored from the sync state, the generation filter of status changes, pull.succeeded / pull.failed",
    mutate: [{ file: "shared/collection/engine.ts", symbols: ["pullTenant", "SyncJob.execute", "SyncJob.fail", "SyncJob.patchTenantIfSameGeneration"] }],
    tests: [
      {
        file: PULL,
        names: [
          "stops cleanly when the per-minute budget runs out, and the next run in that minute makes no call",
          "runs no second pull while a live lease is held (not only when the acquisitions race)",
          "does not mark a re-consented tenant reconsent-required when the old grant fails mid-pull",
          "writes pull.succeeded and pull.failed lines in the form the alert rules match",
        ],
      },
    ],
  },
];

/** The source and the 1-based first and last lines of each named declaration. */
export function declarationRanges(source: string, fileName: string, symbols: string[]): Map<string, { start: number; end: number }> {
  const sf = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, true);
  const found = new Map<string, { start: number; end: number }[]>();
  const add = (name: string, node: ts.Node) => {
    const start = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
    const end = sf.getLineAndCharacterOfPosition(node.getEnd()).line + 1;
    found.set(name, [...(found.get(name) ?? []), { start, end }]);
  };
  for (const statement of sf.statements) {
    if (ts.isFunctionDeclaration(statement) && statement.name) add(statement.name.text, statement);
    else if (ts.isVariableStatement(statement)) {
      for (const d of statement.declarationList.declarations) if (ts.isIdentifier(d.name)) add(d.name.text, statement);
    } else if (ts.isClassDeclaration(statement) && statement.name) {
      const cls = statement.name.text;
      add(cls, statement);
      for (const member of statement.members) {
        if (ts.isConstructorDeclaration(member)) add(`${cls}.constructor`, member);
        else if (member.name && (ts.isIdentifier(member.name) || ts.isPrivateIdentifier(member.name))) {
          add(`${cls}.${member.name.text}`, member);
        }
      }
    }
  }
  // Overloads, or a getter and its setter, make one range that spans them all.
  const ranges = new Map<string, { start: number; end: number }>();
  for (const symbol of symbols) {
    const hits = found.get(symbol);
    if (!hits) throw new Error(`${fileName}: no declaration named ${symbol}; update the group's mutate list`);
    ranges.set(symbol, { start: Math.min(...hits.map((h) => h.start)), end: Math.max(...hits.map((h) => h.end)) });
  }
  return ranges;
}

/** A group's `mutate` list as Stryker wants it: `file:start-end`, resolved from the current sources. */
export function resolveMutate(group: MutationGroup, root: string = ROOT): string[] {
  const entries: string[] = [];
  for (const target of group.mutate) {
    const ranges = declarationRanges(readFileSync(join(root, target.file), "utf8"), target.file, target.symbols);
    for (const { start, end } of ranges.values()) entries.push(`${target.file}:${start}-${end}`);
  }
  return entries;
}

/** Throws when a test name is no longer in its test file's source (the pattern would match nothing). */
export function checkTestNames(group: MutationGroup, root: string = ROOT): void {
  for (const t of group.tests) {
    const source = t.file.replace(/^dist\//, "").replace(/\.js$/, ".ts");
    const text = readFileSync(join(root, source), "utf8");
    const missing = t.names.filter((n) => !text.includes(n));
    if (missing.length > 0) throw new Error(`${source} has no test named ${missing.map((m) => JSON.stringify(m)).join(", ")}; update group ${group.name}`);
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** The Stryker configuration of one group. */
export function strykerConfig(group: MutationGroup, mutate: string[], concurrency: number): Record<string, unknown> {
  const dir = join(OUT, group.name);
  const names = [...new Set(group.tests.flatMap((t) => t.names))];
  return {
    testRunner: "tap",
    plugins: ["@stryker-mutator/tap-runner"],
    tap: {
      testFiles: group.tests.map((t) => t.file),
      nodeArgs: ["--test-reporter=tap", ...names.map((n) => `--test-name-pattern=${escapeRegExp(n)}`)],
      forceBail: true,
    },
    // Run before Stryker links node_modules into the sandbox: tsc (on PATH from the project's
    // node_modules/.bin) finds the packages in the repository above the sandbox.
    buildCommand: "tsc -p tsconfig.json",
    mutate,
    mutator: { excludedMutations: group.excluded?.mutators ?? [] },
    coverageAnalysis: "perTest",
    concurrency,
    // The machine may be shared: be generous before calling a slow run a timeout.
    timeoutMS: 30_000,
    timeoutFactor: 2,
    dryRunTimeoutMinutes: 15,
    tempDirName: join(".cache", "stryker-tmp"),
    cleanTempDir: true,
    // The sandbox needs the sources, not old builds or caches; the test CA goes along.
    ignorePatterns: ["/dist", "/.deploy", "/.cache/*", "!/.cache/tls", "/__*"],
    disableTypeChecks: "{shared,functions}/**/*.ts",
    reporters: ["clear-text", "progress", "html", "json"],
    clearTextReporter: { allowColor: false, reportTests: false, reportScoreTable: true, reportMutants: true },
    htmlReporter: { fileName: join(dir, "report.html") },
    jsonReporter: { fileName: join(dir, "report.json") },
    thresholds: { high: 90, low: 80, break: null },
  };
}

export interface GroupScore {
  group: string;
  mutants: number;
  killed: number;
  survived: number;
  timedOut: number;
  noCoverage: number;
  errors: number;
  /** Detected (killed + timed out) over valid mutants, in percent. */
  score: number;
  minutes: number;
  survivors: string[];
}

interface ReportMutant {
  mutatorName: string;
  replacement?: string;
  status: string;
  location: { start: { line: number; column: number } };
}

/** Counts a Stryker JSON report (mutation-testing-report-schema). */
export function scoreReport(group: string, report: { files: Record<string, { mutants: ReportMutant[] }> }, minutes: number): GroupScore {
  const s: GroupScore = { group, mutants: 0, killed: 0, survived: 0, timedOut: 0, noCoverage: 0, errors: 0, score: 0, minutes, survivors: [] };
  for (const [file, { mutants }] of Object.entries(report.files)) {
    for (const m of mutants) {
      if (m.status === "Ignored") continue;
      s.mutants++;
      if (m.status === "Killed") s.killed++;
      else if (m.status === "Timeout") s.timedOut++;
      else if (m.status === "Survived") s.survived++;
      else if (m.status === "NoCoverage") s.noCoverage++;
      else s.errors++;
      if (m.status === "Survived" || m.status === "NoCoverage") {
        s.survivors.push(`${file}:${m.location.start.line}:${m.location.start.column} ${m.mutatorName} -> ${oneLine(m.replacement ?? "")} (${m.status})`);
      }
    }
  }
  const valid = s.killed + s.timedOut + s.survived + s.noCoverage;
  s.score = valid === 0 ? 0 : Math.round(((s.killed + s.timedOut) / valid) * 1000) / 10;
  return s;
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > 90 ? `${flat.slice(0, 87)}...` : flat;
}

export function summaryTable(scores: GroupScore[]): string {
  const row = (name: string, s: Omit<GroupScore, "group" | "survivors">) =>
    `| ${name} | ${s.mutants} | ${s.killed} | ${s.survived} | ${s.timedOut} | ${s.noCoverage} | ${s.errors} | ${s.score.toFixed(1)} % | ${s.minutes.toFixed(1)} |`;
  const total = scores.reduce(
    (t, s) => ({
      mutants: t.mutants + s.mutants,
      killed: t.killed + s.killed,
      survived: t.survived + s.survived,
      timedOut: t.timedOut + s.timedOut,
      noCoverage: t.noCoverage + s.noCoverage,
      errors: t.errors + s.errors,
      score: 0,
      minutes: t.minutes + s.minutes,
    }),
    { mutants: 0, killed: 0, survived: 0, timedOut: 0, noCoverage: 0, errors: 0, score: 0, minutes: 0 },
  );
  const valid = total.killed + total.timedOut + total.survived + total.noCoverage;
  total.score = valid === 0 ? 0 : Math.round(((total.killed + total.timedOut) / valid) * 1000) / 10;
  return [
    "| group | mutants | killed | survived | timed out | no coverage | errors | score | minutes |",
    "|---|---|---|---|---|---|---|---|---|",
    ...scores.map((s) => row(s.group, s)),
    row("all", total),
  ].join("\n");
}

function runStryker(configPath: string, env: NodeJS.ProcessEnv): Promise<number> {
  const bin = join(ROOT, "node_modules", "@stryker-mutator", "core", "bin", "stryker.js");
  const child = spawn(process.execPath, [bin, "run", configPath], { cwd: ROOT, stdio: "inherit", env });
  return new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}

function parseArgs(argv: string[]): { groups: MutationGroup[]; list: boolean; concurrency: number } {
  let concurrency = 2;
  let list = false;
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--list") list = true;
    else if (arg === "--concurrency") concurrency = Number(argv[++i]);
    else if (arg.startsWith("--concurrency=")) concurrency = Number(arg.slice("--concurrency=".length));
    else names.push(arg);
  }
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error("--concurrency needs a whole number of at least 1");
  const unknown = names.filter((n) => !GROUPS.some((g) => g.name === n));
  if (unknown.length > 0) throw new Error(`Unknown group ${unknown.join(", ")}; the groups are ${GROUPS.map((g) => g.name).join(", ")}`);
  return { groups: names.length > 0 ? GROUPS.filter((g) => names.includes(g.name)) : GROUPS, list, concurrency };
}

async function main(): Promise<number> {
  const { groups, list, concurrency } = parseArgs(process.argv.slice(2));
  // Resolve every group first: a stale name fails now, not after an hour of other groups.
  const resolved = new Map<MutationGroup, string[]>();
  for (const g of groups) {
    checkTestNames(g);
    resolved.set(g, resolveMutate(g));
  }
  if (list) {
    for (const g of groups) {
      console.log(`${g.name}: ${g.guards}`);
      for (const m of resolved.get(g)!) console.log(`  mutate ${m}`);
      if (g.excluded) console.log(`  not    ${g.excluded.mutators.join(", ")}: ${g.excluded.why}`);
      for (const t of g.tests) console.log(`  test   ${t.file}: ${t.names.join(" | ")}`);
    }
    return 0;
  }
  // The CA must exist before the first test process starts: NODE_EXTRA_CA_CERTS is read once, at startup.
  const certs = testCerts();
  const env = {
    ...process.env,
    NODE_EXTRA_CA_CERTS: certs.caPath,
    // The tap runner starts `node` from PATH: make it this Node.js.
    PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ""}`,
  };
  const scores: GroupScore[] = [];
  let failed = 0;
  for (const group of groups) {
    const dir = join(ROOT, OUT, group.name);
    mkdirSync(dir, { recursive: true });
    const configPath = join(dir, "stryker.config.json");
    writeFileSync(configPath, `${JSON.stringify(strykerConfig(group, resolved.get(group)!, concurrency), null, 2)}\n`);
    console.log(`\n=== mutate: ${group.name} (${group.guards})`);
    const started = Date.now();
    const code = await runStryker(configPath, env);
    const minutes = (Date.now() - started) / 60_000;
    if (code !== 0) {
      console.error(`mutate: Stryker failed for group ${group.name} (exit ${code})`);
      failed++;
      continue;
    }
    const report = JSON.parse(readFileSync(join(dir, "report.json"), "utf8"));
    scores.push(scoreReport(group.name, report, minutes));
  }
  const date = new Date().toISOString().slice(0, 10);
  const survivors = scores.flatMap((s) => s.survivors.map((line) => `- ${s.group}: ${line}`));
  const summary = [`Mutation score, ${date}:`, "", summaryTable(scores), "", "Surviving mutants:", "", ...(survivors.length ? survivors : ["- none"]), ""].join("\n");
  writeFileSync(join(ROOT, OUT, "summary.md"), summary);
  console.log(`\n${summary}`);
  return failed > 0 ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(`mutate: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    },
  );
}
