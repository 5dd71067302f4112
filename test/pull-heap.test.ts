/**
 * A pull's memory follows the write batch, not the answer (issue 16): a child process run
 * with `--expose-gc` reads one window through the pull's read path (test/support/heap-child.ts)
 * into a counting sink, forcing a GC at every batch. One answer of 10,000 alerts (about
 * 27 MB of JSON) must leave the live heap within a fixed bound of one answer of 1,000: a
 * reader that held the answer, its text or its items would grow by tens of MB.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { promisify } from "node:util";
import { makeAlerts } from "../simulators/alerts.js";
import { FakeDefender } from "../simulators/defender.js";
import { testCerts } from "../simulators/https.js";

const CHILD = join(import.meta.dirname, "support", "heap-child.js");
const BEARER = "heap-test-token";
const MiB = 1024 * 1024;
/** The page size: both windows are read in one answer, as `$top` allows up to it. */
const PAGE = 20_000;
/** The live heap of the 10,000-alert answer may exceed the 1,000-alert one's by this much at most. */
const BOUND = 4 * MiB;

const to = Date.now() - 60_000;
const from = to - 24 * 3600_000;
let fake: FakeDefender;

before(async () => {
  fake = new FakeDefender({
    certs: testCerts(),
    maxTop: PAGE,
    authenticate: async (bearer) => (bearer === BEARER ? { tenantId: tenantOfRun } : null),
  });
  await fake.start();
  for (const [tenant, count] of [["small", 1_000], ["big", 10_000]] as const) {
    fake.setAlerts(tenant, makeAlerts({ count, from: new Date(from), to: new Date(to), seed: `heap:${tenant}`, evidenceCount: 2 }));
  }
});

after(async () => {
  await fake?.stop();
});

/** The tenant the fake serves to the child now running (one child at a time). */
let tenantOfRun = "small";

interface HeapReport {
  items: number;
  calls: number;
  bytes: number;
  peakGrowth: number;
}

async function pull(tenant: string): Promise<HeapReport> {
  tenantOfRun = tenant;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--expose-gc", CHILD, fake.url, BEARER, String(from), String(to), String(PAGE)],
    { env: process.env, timeout: 120_000 },
  );
  return JSON.parse(stdout.trim().split("\n").pop()!) as HeapReport;
}

it("a pull's live heap does not grow with the size of one answer (1,000 against 10,000 alerts)", async (t) => {
  const small = await pull("small");
  const big = await pull("big");
  t.diagnostic(
    `1,000 alerts: ${(small.bytes / MiB).toFixed(1)} MiB answer, live heap +${(small.peakGrowth / MiB).toFixed(1)} MiB; ` +
      `10,000 alerts: ${(big.bytes / MiB).toFixed(1)} MiB answer, live heap +${(big.peakGrowth / MiB).toFixed(1)} MiB`,
  );
  assert.deepEqual([small.items, small.calls, big.items, big.calls], [1_000, 1, 10_000, 1], "each window in one answer");
  // The bound means something only if holding the answer would break it many times over.
  assert.ok(big.bytes > 5 * BOUND, `the big answer is ${big.bytes} bytes`);
  assert.ok(
    big.peakGrowth - small.peakGrowth < BOUND,
    `live heap grew by ${(big.peakGrowth / MiB).toFixed(1)} MiB for 10,000 alerts against ${(small.peakGrowth / MiB).toFixed(1)} MiB for 1,000`,
  );
});
