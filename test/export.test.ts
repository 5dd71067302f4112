/**
 * Per-tenant export: `GET /api/tenants/{id}/export` streams the tenant's alerts as gzip'd
 * NDJSON, EXPORT_PAGE_ALERTS (here 12,500) per call, with `{"next":"<token>"}` as the last
 * line while more remain. 25,000 alerts (one with overflow parts) come back byte for byte,
 * while the process's live heap stays far below the size of what was exported: the app
 * reads a page of rows at a time as the client reads, and never holds the export.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { request } from "node:http";
import { after, before, describe, it } from "node:test";
import v8 from "node:v8";
import vm from "node:vm";
import { createGunzip } from "node:zlib";
import { makeAlerts, makeLargeAlert } from "../simulators/alerts.js";
import { type Harness, startHarness } from "./support/harness.js";
import { storeAlertRows } from "./support/stored-alerts.js";

const COUNT = 25_000;
const PAGE = 12_500;

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

let h: Harness;
let tenantId: string;
/** id -> SHA-256 of the exact JSON stored (the test keeps hashes, not 25,000 bodies). */
const stored = new Map<string, string>();
let bigId: string;
let setupMs = 0;
/** Per id, how often the export sent it: every key exists before streaming, so counting allocates nothing. */
const sent = new Map<string, number>();
const mismatched: string[] = [];

const sha = (text: string | Buffer) => createHash("sha256").update(text).digest("hex");

before(async () => {
  const t0 = Date.now();
  h = await startHarness({ EXPORT_PAGE_ALERTS: String(PAGE) });
  tenantId = h.newTenant();
  const created = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId }) });
  assert.equal(created.status, 201);
  const big = makeLargeAlert(2 * 1024 * 1024, { lastUpdateTime: new Date(Date.now() - 3600_000), seed: `big:${tenantId}` });
  bigId = big.id;
  for (let i = 0; i < COUNT - 1; i += 5_000) {
    const chunk = makeAlerts({
      count: Math.min(5_000, COUNT - 1 - i),
      from: new Date(Date.now() - 6 * 24 * 3600_000),
      to: new Date(Date.now() - 120_000),
      seed: `export:${i}:${tenantId}`,
      // Small alerts keep the 25,000 quick to store; the big one brings overflow parts.
      evidenceCount: 1,
    });
    await storeAlertRows(tenantId, chunk);
    for (const alert of chunk) stored.set(alert.id, sha(JSON.stringify(alert)));
  }
  await storeAlertRows(tenantId, [big]);
  stored.set(big.id, sha(JSON.stringify(big)));
  assert.equal(stored.size, COUNT);
  setupMs = Date.now() - t0;
});

after(async () => {
  await h?.stop();
});

interface Streamed {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  lines: string[];
  /** id -> hash of each alert line; the `next` token, if any. */
  alerts: number;
  next?: string;
  rawBytes: number;
  jsonBytes: number;
  /** Live heap (after a full GC) at its highest while the export streamed, minus before. */
  peakLiveGrowth: number;
}

/**
 * Reads the export as a client would, line by line, sampling the live heap as it goes.
 * `paused` runs once after the first line while the client reads nothing more.
 */
async function streamExport(query: string, token: string, paused?: () => Promise<void>): Promise<Streamed> {
  gc();
  const baseline = v8.getHeapStatistics().used_heap_size;
  let peak = 0;
  return new Promise((resolve, reject) => {
    const req = request(`${h.host.url}/api/tenants/${tenantId}/export${query}`, { headers: { authorization: `Bearer ${token}` } }, (res) => {
      const out: Streamed = { status: res.statusCode ?? 0, headers: res.headers, lines: [], alerts: 0, rawBytes: 0, jsonBytes: 0, peakLiveGrowth: 0 };
      if (out.status !== 200) {
        res.resume();
        res.on("end", () => resolve(out));
        return;
      }
      res.on("data", (chunk: Buffer) => {
        out.rawBytes += chunk.length;
      });
      let rest = "";
      let count = 0;
      const gunzip = res.pipe(createGunzip());
      // Decoded as a stream: a chunk may end inside a multi-byte character.
      gunzip.setEncoding("utf8");
      let pausedOnce = false;
      gunzip.on("data", (chunk: string) => {
        if (paused && !pausedOnce) {
          pausedOnce = true;
          res.pause();
          gunzip.pause();
          void paused().then(
            () => {
              res.resume();
              gunzip.resume();
            },
            (err: unknown) => {
              req.destroy();
              reject(err);
            },
          );
        }
        out.jsonBytes += Buffer.byteLength(chunk);
        const text = rest + chunk;
        const parts = text.split("\n");
        rest = parts.pop() ?? "";
        for (const line of parts) {
          count++;
          const parsed = JSON.parse(line) as { id?: string; next?: string };
          if (parsed.next !== undefined) out.next = parsed.next;
          else {
            const id = String(parsed.id);
            out.alerts++;
            sent.set(id, (sent.get(id) ?? 0) + 1);
            if (stored.get(id) !== sha(line)) mismatched.push(id);
          }
          if (count <= 3) out.lines.push(line.slice(0, 100));
          if (count % 5_000 === 0) {
            gc();
            peak = Math.max(peak, v8.getHeapStatistics().used_heap_size - baseline);
          }
        }
      });
      gunzip.on("end", () => {
        assert.equal(rest, "", "the stream ends with a complete line");
        out.peakLiveGrowth = peak;
        resolve(out);
      });
      gunzip.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("export", () => {
  it("streams 25,000 alerts in pages of EXPORT_PAGE_ALERTS, byte for byte, with bounded memory", async (t) => {
    const token = await h.appToken("Operator");
    for (const id of stored.keys()) sent.set(id, 0);
    const pages: Streamed[] = [];
    let query = "";
    let checkedWhilePaused = false;
    for (;;) {
      // While the client reads nothing, the app cannot finish the call: it reads as the client reads.
      const whilePaused = async () => {
        for (let i = 0; i < 10; i++) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          const entries = (await h.http("audit-list", { path: `audit?action=alerts.export&tenantId=${tenantId}&top=1` })).json as {
            entries: { result: string }[];
          };
          assert.equal(entries.entries[0]?.result, "started", "the export has not ended while its client waits");
        }
        checkedWhilePaused = true;
      };
      const page = await streamExport(query, token, query === "" ? whilePaused : undefined);
      assert.equal(page.status, 200);
      assert.equal(page.headers["content-type"], "application/x-ndjson");
      assert.equal(page.headers["content-encoding"], "gzip");
      pages.push(page);
      if (!page.next) break;
      query = `?continuationToken=${encodeURIComponent(page.next)}`;
    }
    assert.deepEqual(
      pages.map((p) => [p.alerts, Boolean(p.next)]),
      [
        [PAGE, true],
        [COUNT - PAGE, false],
      ],
      "exactly the page size in the first call, the rest in the second, which has no next line",
    );
    assert.ok(checkedWhilePaused);
    assert.equal(sent.size, COUNT, "no alert that was not stored");
    assert.deepEqual([...sent.values()].filter((n) => n !== 1), [], "every alert exactly once");
    assert.deepEqual(mismatched, [], "every alert byte for byte");

    const exportedJson = pages.reduce((sum, p) => sum + p.jsonBytes, 0);
    const peak = Math.max(...pages.map((p) => p.peakLiveGrowth));
    const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
    t.diagnostic(
      `export: ${COUNT} alerts, ${mb(exportedJson)} of JSON, ${mb(pages.reduce((s, p) => s + p.rawBytes, 0))} gzip'd; ` +
        `live heap growth at most ${mb(peak)} per call (${mb(Math.max(...pages.map((p) => p.jsonBytes)))} JSON in the largest call); setup ${setupMs} ms`,
    );
    // A call's JSON is 25 MiB: the app holds a page of rows (and a 2 MiB alert) at a time, never the call.
    assert.ok(peak < 8 * 1024 * 1024, `live heap grew by ${mb(peak)}`);
  });

  it("exports the big alert exactly as GET /alerts/{id} answers it", async () => {
    const single = await h.http("alerts-get", { path: `tenants/${tenantId}/alerts/${bigId}`, params: { tenantId, alertId: bigId } });
    assert.equal(sha(single.bytes), stored.get(bigId));
  });

  it("refuses a bad continuation token or an unknown parameter with 400, an unknown tenant with 404, and audits each call", async () => {
    for (const query of ["?continuationToken=bogus", "?continuationToken=eyJrIjoifmMifQ", "?since=2020-01-01T00:00:00Z"]) {
      const result = await h.http("tenants-export", { path: `tenants/${tenantId}/export${query}`, params: { tenantId } });
      assert.equal(result.status, 400, query);
    }
    const other = "0badc0de-0000-4000-8000-00000000eeee";
    assert.equal((await h.http("tenants-export", { path: `tenants/${other}/export`, params: { tenantId: other } })).status, 404);
    const audit = await h.http("audit-list", { path: `audit?action=alerts.export&tenantId=${tenantId}` });
    const entries = (audit.json as { entries: { result: string; detail?: { alerts: number; more: boolean } }[] }).entries;
    assert.deepEqual(
      entries
        .filter((e) => e.detail)
        .map((e) => e.detail)
        .reverse(),
      [
        { alerts: PAGE, more: true },
        { alerts: COUNT - PAGE, more: false },
      ],
    );
  });
});
