import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { odata } from "@azure/data-tables";
import { type Services, services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { type DefenderAlert, makeAlert } from "../simulators/alerts.js";
import type { FakeDefender } from "../simulators/defender.js";
import type { FakeGraph } from "../simulators/graph.js";
import { type GraphAlert, makeGraphAlert } from "../simulators/graph-alerts.js";
import { type Harness, startHarness } from "./support/harness.js";

/**
 * The lossless guarantees of the collection engine, as ONE suite run against both sources
 * (Defender's `/api/alerts` and Graph's `alerts_v2`): the engine is shared, only the
 * source's paging differs. Changes between pages, splits, ties beyond a page, a crash and
 * its resume, throttling storms, and late publication caught by the sweep.
 */

const PAGE = 40;
const MINUTE = 60_000;
let h: Harness;
let svc: Services;
const slept: number[] = [];

before(async () => {
  h = await startHarness({
    PULL_PAGE_SIZE: String(PAGE),
    GRAPH_PAGE_SIZE: String(PAGE),
    GRAPH_MAX_PAGES_PER_WINDOW: "2",
    PULL_LAG_SECONDS: "0",
  });
  svc = await services();
  svc.sleep = async (ms) => {
    slept.push(ms);
  };
});
after(async () => {
  await h?.stop();
});

type AnyAlert = DefenderAlert | GraphAlert;

/** The part of the two fakes' API the suite uses (the same on both). */
interface AlertFake {
  setAlerts(tenantId: string, alerts: AnyAlert[]): void;
  upsertAlert(tenantId: string, alert: AnyAlert): void;
  getAlerts(tenantId: string): AnyAlert[];
  touch(tenantId: string, ids: readonly string[], newTime: Date | string): unknown;
  inject(tenantId: string, fault: { status: number; retryAfterSeconds?: number } | { reset: true }, times?: number): void;
  clearFaults(): void;
  beforeResponse: ((context: { tenantId: string; requestNumber: number; fake: AlertFake }) => void | Promise<void>) | undefined;
}

/** What differs between the two sources, for the tests. */
interface Source {
  name: "defender" | "graph";
  fake: FakeDefender | FakeGraph;
  make(at: number, seed: string): AnyAlert;
  timeOf(alert: AnyAlert): string;
  /** The same alert with another update time, verbatim. */
  at(alert: AnyAlert, time: string): AnyAlert;
  /** Requests that listed a window (not the consent probe). */
  listCalls(tenantId: string): { itemCount: number; query: Record<string, string> }[];
}

const sources: Source[] = [
  {
    name: "defender",
    get fake() {
      return h.defender;
    },
    make: (at, seed) => makeAlert({ lastUpdateTime: new Date(at), seed, evidenceCount: 1 }),
    timeOf: (a) => (a as DefenderAlert).lastUpdateTime,
    at: (a, time) => ({ ...(a as DefenderAlert), lastUpdateTime: time }),
    listCalls: (t) => h.defender.requests(t).filter((r) => r.path === "/api/alerts" && r.query.$filter),
  },
  {
    name: "graph",
    get fake() {
      return h.graph;
    },
    make: (at, seed) => makeGraphAlert({ lastUpdateDateTime: new Date(at), seed, evidenceCount: 1 }),
    timeOf: (a) => (a as GraphAlert).lastUpdateDateTime,
    at: (a, time) => ({ ...(a as GraphAlert), lastUpdateDateTime: time }),
    listCalls: (t) => h.graph.requests(t).filter((r) => r.query.$filter || r.query.$skiptoken),
  },
];

for (const source of sources) {
  describe(`lossless pulls from ${source.name}`, () => {
    beforeEach(() => {
      slept.length = 0;
      source.fake.clearFaults();
      source.fake.beforeResponse = undefined;
    });

    const fake = () => source.fake as unknown as AlertFake;

    async function activeTenant(alerts: AnyAlert[]): Promise<string> {
      const tenantId = h.newTenant();
      fake().setAlerts(tenantId, alerts);
      assert.equal((await h.onboard(tenantId)).status, 200);
      await svc.storage.table(TABLES.tenants).updateEntity({ partitionKey: "tenant", rowKey: tenantId, source: source.name }, "Merge");
      return tenantId;
    }

    function recent(count: number, seed: string, span = 2 * 24 * 60 * MINUTE): AnyAlert[] {
      const now = Date.now();
      return Array.from({ length: count }, (_, i) => source.make(now - MINUTE - Math.floor(((i + 0.5) * span) / count), `${seed}-${i}`));
    }

    async function pull(tenantId: string): Promise<void> {
      await h.trigger("pull-worker", { tenantId });
    }

    /** Every alert's latest version is stored exactly once, as a row of this source. */
    async function assertInSync(tenantId: string): Promise<void> {
      const rows = new Map<string, { lastUpdateTimeExact: string; source: string }>();
      const filter = odata`PartitionKey eq ${tenantId} and RowKey lt ${"~"}`;
      for await (const row of svc.storage.table(TABLES.alerts).listEntities<{ alertId: string; lastUpdateTimeExact: string; source: string }>({
        queryOptions: { filter },
      })) {
        assert.ok(!rows.has(row.alertId), `${row.alertId} stored once`);
        rows.set(row.alertId, row);
      }
      const expected = fake().getAlerts(tenantId);
      assert.equal(rows.size, expected.length, "one row per alert");
      for (const alert of expected) {
        assert.equal(rows.get(alert.id)?.lastUpdateTimeExact, source.timeOf(alert), alert.id);
        assert.equal(rows.get(alert.id)?.source, source.name);
      }
    }

    it("reads a window several times the page size while alerts change between requests", async () => {
      const tenantId = await activeTenant(recent(PAGE * 6 + 7, `${source.name}-window`));
      let changes = 0;
      fake().beforeResponse = ({ tenantId: t, requestNumber, fake: f }) => {
        if (t !== tenantId || requestNumber % 2 !== 0) return;
        const victims = f.getAlerts(t).slice(0, 3).map((a) => a.id);
        f.touch(t, victims, new Date(Date.now() - 1000));
        changes++;
      };
      await pull(tenantId);
      fake().beforeResponse = undefined;
      assert.ok(changes > 0, "alerts changed between requests");
      assert.ok(source.listCalls(tenantId).length > 3, "the window was cut into pieces");
      await pull(tenantId); // picks up the alerts updated during the first pull
      await assertInSync(tenantId);
      const status = (await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } })).json as {
        alertsStored: number;
        lastError?: unknown;
        source: string;
      };
      assert.equal(status.alertsStored, PAGE * 6 + 7, "alertsStored is exact");
      assert.equal(status.lastError, undefined);
      assert.equal(status.source, source.name);
    });

    it("reads more same-millisecond alerts than a window holds, until two passes agree", async () => {
      const at = new Date(Date.now() - 3600_000).toISOString().replace("Z", "1234Z");
      const ties = recent(PAGE * 3 + 5, `${source.name}-ties`).map((a) => source.at(a, at));
      const tenantId = await activeTenant(ties);
      await pull(tenantId);
      await assertInSync(tenantId);
    });

    it("loses nothing when a pull crashes between windows, and the rerun catches up", async () => {
      const tenantId = await activeTenant(recent(PAGE * 3, `${source.name}-crash`));
      const alerts = svc.storage.table(TABLES.alerts);
      const original = alerts.submitTransaction.bind(alerts);
      let calls = 0;
      alerts.submitTransaction = async (actions, options) => {
        if (++calls === 2) throw Object.assign(new Error("simulated crash"), { statusCode: 503 });
        return original(actions, options);
      };
      try {
        // What reaches the host names the event and the error class only.
        await assert.rejects(pull(tenantId), /^HandlerFailure: pull\.worker-failed error=Error\/503$/);
      } finally {
        alerts.submitTransaction = original;
      }
      const after = (await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } })).json as {
        lastError?: { code: string };
      };
      assert.equal(after.lastError?.code, "InternalError");
      await pull(tenantId);
      await assertInSync(tenantId);
    });

    it("rides out 429 and 5xx storms and resets, honouring Retry-After", async () => {
      const tenantId = await activeTenant(recent(25, `${source.name}-storm`));
      fake().inject(tenantId, { status: 429, retryAfterSeconds: 7 }, 2);
      fake().inject(tenantId, { status: 503 }, 2);
      fake().inject(tenantId, { reset: true }, 1);
      await pull(tenantId);
      await assertInSync(tenantId);
      assert.deepEqual(slept.slice(0, 2), [7000, 7000]);
      assert.equal(slept.length, 5);
      assert.ok(h.logs.some((l) => l.includes(`${source.name}.retry tenantId=${tenantId} status=429`)));
    });

    it("catches an alert published later than the overlap with the hourly sweep", async () => {
      let clock = Date.now();
      const realNow = svc.now;
      svc.now = () => new Date(clock);
      try {
        const tenantId = await activeTenant(recent(10, `${source.name}-late`, 3600_000));
        await pull(tenantId);
        let late: AnyAlert | undefined;
        for (let minute = 5; minute <= 65; minute += 5) {
          clock = Date.now() + minute * MINUTE;
          fake().upsertAlert(tenantId, source.make(clock - 65_000, `${source.name}-fresh-${minute}`));
          if (minute === 20) {
            late = source.make(clock - 30 * MINUTE, `${source.name}-late-30m`);
            fake().upsertAlert(tenantId, late);
          }
          await pull(tenantId);
        }
        assert.ok(h.logs.some((l) => l.includes(`pull.late-found tenantId=${tenantId} alertId=${late!.id} `)), "found by the sweep");
        await assertInSync(tenantId);
      } finally {
        svc.now = realNow;
      }
    });
  });
}

describe("graph specifics", () => {
  it("falls back to le when Graph refuses lt, sends Prefer, and refuses a nextLink to another host", async () => {
    const tenantId = h.newTenant();
    h.graph.setAlerts(tenantId, Array.from({ length: 5 }, (_, i) => makeGraphAlert({ lastUpdateDateTime: new Date(Date.now() - (i + 2) * MINUTE), seed: `lt-${i}` })));
    assert.equal((await h.onboard(tenantId)).status, 200);
    await svc.storage.table(TABLES.tenants).updateEntity({ partitionKey: "tenant", rowKey: tenantId, source: "graph" }, "Merge");
    h.graph.rejectLt = true;
    try {
      await h.trigger("pull-worker", { tenantId });
    } finally {
      h.graph.rejectLt = false;
    }
    const calls = h.graph.requests(tenantId);
    assert.ok(calls.some((r) => r.status === 400) && calls.some((r) => / le /.test(r.query.$filter ?? "") && r.status === 200));
    assert.ok(calls.every((r) => r.includeUnknownEnumMembers), "Prefer: include-unknown-enum-members on every call");
    const stored = (await h.http("alerts-list", { path: `alerts?tenantId=${tenantId}` })).json as {
      alerts: { id: string; source: string; providerAlertId: string }[];
    };
    assert.equal(stored.alerts.length, 5);
    assert.ok(stored.alerts.every((a) => a.source === "graph" && a.providerAlertId));
    const one = stored.alerts[0]!;
    const got = await h.http("alerts-get", { path: `tenants/${tenantId}/alerts/${encodeURIComponent(one.id)}?source=graph`, params: { tenantId, alertId: one.id } });
    assert.equal(got.status, 200);
    assert.equal(got.text, JSON.stringify(h.graph.getAlert(tenantId, one.id)));
    // A page whose nextLink points at another host is refused.
    const other = h.newTenant();
    h.graph.setAlerts(other, Array.from({ length: PAGE + 5 }, (_, i) => makeGraphAlert({ lastUpdateDateTime: new Date(Date.now() - (i + 2) * MINUTE), seed: `foreign-${i}` })));
    assert.equal((await h.onboard(other)).status, 200);
    await svc.storage.table(TABLES.tenants).updateEntity({ partitionKey: "tenant", rowKey: other, source: "graph" }, "Merge");
    h.graph.nextLinkOrigin = "https://attacker.localhost";
    try {
      await h.trigger("pull-worker", { tenantId: other });
    } finally {
      h.graph.nextLinkOrigin = undefined;
    }
    const status = (await h.http("tenants-get", { path: `tenants/${other}`, params: { tenantId: other } })).json as { lastError?: { code: string } };
    assert.equal(status.lastError?.code, "UntrustedNextLink");
  });
});

describe("choosing the source per tenant", () => {
  it("onboards a tenant on Graph, and switches another from Defender to Graph keeping its old rows readable", async () => {
    // A tenant registered on Graph: the consent asks for Graph's scope, pulls read alerts_v2.
    const onGraph = h.newTenant();
    h.graph.setAlerts(onGraph, Array.from({ length: 4 }, (_, i) => makeGraphAlert({ lastUpdateDateTime: new Date(Date.now() - (i + 2) * MINUTE), seed: `g-${i}` })));
    const registered = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId: onGraph, source: "graph" }) });
    assert.equal(registered.status, 201, registered.text);
    const consent = await h.onboard(onGraph);
    assert.equal(consent.status, 200, consent.text);
    await h.trigger("pull-worker", { tenantId: onGraph });
    const graphStatus = (await h.http("tenants-get", { path: `tenants/${onGraph}`, params: { tenantId: onGraph } })).json as { source: string; alertsStored: number };
    assert.deepEqual([graphStatus.source, graphStatus.alertsStored], ["graph", 4]);
    assert.equal(h.defender.requests(onGraph).filter((r) => r.query.$filter).length, 0, "Defender is never asked");

    // A Defender tenant switches: old rows stay readable, new ones are graph rows, and the
    // alert that changes during the switch is stored at its latest version.
    const switching = h.newTenant();
    const defenderAlerts = Array.from({ length: 5 }, (_, i) => makeAlert({ lastUpdateTime: new Date(Date.now() - (i + 2) * MINUTE), seed: `sw-${i}` }));
    h.defender.setAlerts(switching, defenderAlerts);
    assert.equal((await h.onboard(switching)).status, 200);
    await h.trigger("pull-worker", { tenantId: switching });
    // The same alerts as Graph sees them (its providerAlertId is Defender's id), one of them changed meanwhile.
    h.graph.setAlerts(
      switching,
      defenderAlerts.map((a, i) =>
        makeGraphAlert({ lastUpdateDateTime: i === 0 ? new Date(Date.now() - 30_000) : a.lastUpdateTime, seed: `sw-g-${i}`, providerAlertId: a.id, status: i === 0 ? "resolved" : "new" }),
      ),
    );
    const patch = (body: unknown) => h.http("tenants-patch", { method: "PATCH", path: `tenants/${switching}`, params: { tenantId: switching }, body: JSON.stringify(body) });
    h.graph.forbid(switching);
    const refused = await patch({ source: "graph" });
    assert.equal(refused.status, 409, refused.text);
    assert.equal((refused.json as { error: { code: string } }).error.code, "ConsentRequired");
    h.graph.allow(switching);
    const switched = await patch({ source: "graph" });
    assert.equal(switched.status, 200, switched.text);
    assert.equal((switched.json as { source: string }).source, "graph");
    await h.trigger("pull-worker", { tenantId: switching });
    const listed = (await h.http("alerts-list", { path: `alerts?tenantId=${switching}&top=100` })).json as {
      alerts: { id: string; source: string; providerAlertId: string; status: string }[];
    };
    const bySource = (s: string) => listed.alerts.filter((a) => a.source === s);
    assert.equal(bySource("defender").length, 5, "the Defender rows stay");
    assert.equal(bySource("graph").length, 5, "every alert as a graph row");
    const changed = bySource("graph").find((a) => a.providerAlertId === defenderAlerts[0]!.id);
    assert.equal(changed?.status, "Resolved", "the change made during the switch");
    const old = await h.http("alerts-get", {
      path: `tenants/${switching}/alerts/${encodeURIComponent(defenderAlerts[1]!.id)}?source=defender`,
      params: { tenantId: switching, alertId: defenderAlerts[1]!.id },
    });
    assert.equal(old.text, JSON.stringify(defenderAlerts[1]));
  });
});
