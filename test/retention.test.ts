/**
 * Retention: the daily lifecycle timer deletes exactly the alerts whose lastUpdateTime is
 * older than ALERT_RETENTION_DAYS, with their index rows, overflow parts and delivery outbox
 * entries, in bounded runs
 * (RETENTION_MAX_ALERTS_PER_RUN) that go on where the last one stopped, keeps the exact
 * count (and alertsStored) right, leaves newer versions and other tenants alone, and
 * deletes audit entries and purge records older than AUDIT_RETENTION_DAYS.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { TableClient } from "@azure/data-tables";
import { INDEX_PREFIX } from "../shared/collection/alert-store.js";
import { foldAlertCount } from "../shared/collection/alert-writer.js";
import { services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { type DefenderAlert, makeAlert, makeAlerts, makeLargeAlert } from "../simulators/alerts.js";
import { type Harness, startHarness } from "./support/harness.js";
import { partition, storeAlerts } from "./support/stored-alerts.js";

const DAY = 24 * 3600_000;
const RETENTION_DAYS = 30;
const PER_RUN = 100;

let h: Harness;
let tenantA: string;
let tenantB: string;
const expired = new Map<string, Set<string>>();
const kept = new Map<string, Set<string>>();
let bigExpired: DefenderAlert[];
let bigKept: DefenderAlert;

const ago = (days: number) => new Date(Date.now() - days * DAY);

before(async () => {
  h = await startHarness({ ALERT_RETENTION_DAYS: String(RETENTION_DAYS), RETENTION_MAX_ALERTS_PER_RUN: String(PER_RUN) });
  tenantA = h.newTenant();
  tenantB = h.newTenant();
  for (const tenantId of [tenantA, tenantB]) {
    const created = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId }) });
    assert.equal(created.status, 201, created.text);
  }
  const old = makeAlerts({ count: 180, from: ago(90), to: ago(RETENTION_DAYS + 1), seed: `old:${tenantA}` });
  const fresh = makeAlerts({ count: 60, from: ago(RETENTION_DAYS - 1), to: ago(0.1), seed: `fresh:${tenantA}` });
  bigExpired = [0, 1].map((i) => makeLargeAlert(3 * 1024 * 1024, { lastUpdateTime: ago(40 + i), seed: `big-old:${i}:${tenantA}` }));
  bigKept = makeLargeAlert(3 * 1024 * 1024, { lastUpdateTime: ago(2), seed: `big-new:${tenantA}` });
  // Stored at an expired time, then replaced by a newer version: the newer one stays.
  const moved = makeAlert({ lastUpdateTime: ago(50), seed: `moved:${tenantA}` });
  // With a destination that has not delivered them yet: each alert also has an outbox entry.
  await storeAlerts(tenantA, [...old, ...fresh, ...bigExpired, bigKept, moved], { outbox: ["soc-hook"] });
  await storeAlerts(tenantA, [{ ...moved, lastUpdateTime: ago(1).toISOString(), status: "Resolved" }], { outbox: ["soc-hook"] });
  expired.set(tenantA, new Set([...old, ...bigExpired].map((a) => a.id)));
  kept.set(tenantA, new Set([...fresh, bigKept, moved].map((a) => a.id)));

  const oldB = makeAlerts({ count: 42, from: ago(200), to: ago(RETENTION_DAYS + 0.5), seed: `old:${tenantB}` });
  const freshB = makeAlerts({ count: 20, from: ago(RETENTION_DAYS - 0.5), to: ago(0.1), seed: `fresh:${tenantB}` });
  await storeAlerts(tenantB, [...oldB, ...freshB]);
  expired.set(tenantB, new Set(oldB.map((a) => a.id)));
  kept.set(tenantB, new Set(freshB.map((a) => a.id)));

  const svc = await services();
  for (const tenantId of [tenantA, tenantB]) {
    await svc.storage.table(TABLES.syncState).upsertEntity({ partitionKey: tenantId, rowKey: "defender", alertsStored: expired.get(tenantId)!.size + kept.get(tenantId)!.size });
  }
});

after(async () => {
  await h?.stop();
});

async function alertIds(tenantId: string): Promise<Set<string>> {
  const rows = await partition(h.azurite.connectionString, "alerts", tenantId);
  return new Set([...rows.values()].filter((r) => !String(r.rowKey).startsWith("~")).map((r) => String(r.alertId)));
}

describe("retention", () => {
  it("stored the big alerts with overflow parts (the test's premise)", async () => {
    const bodies = await partition(h.azurite.connectionString, "alertbodies", tenantA);
    for (const big of [...bigExpired, bigKept]) {
      assert.ok([...bodies.keys()].some((k) => k.startsWith(`${big.id}|`)), `${big.id} has overflow parts`);
    }
  });

  it("deletes exactly the expired alerts with their index rows, parts and outbox entries, over several bounded runs", async () => {
    const runs: string[] = [];
    for (let run = 1; run <= 10; run++) {
      const before = h.logs.length;
      await h.trigger("lifecycle-timer", { isPastDue: false });
      const line = h.logs.slice(before).find((l) => l.includes("retention.done"));
      assert.ok(line, `run ${run} reported`);
      runs.push(line);
      const deleted = Number(/alerts=(\d+)/.exec(line)?.[1]);
      assert.ok(deleted <= PER_RUN, `run ${run} deleted ${deleted}, at most ${PER_RUN}`);
      if (/complete=true/.test(line)) break;
    }
    const total = expired.get(tenantA)!.size + expired.get(tenantB)!.size;
    assert.equal(runs.length, Math.ceil(total / PER_RUN), `runs: ${runs.join(" | ")}`);
    assert.ok(runs.slice(0, -1).every((l) => /complete=false/.test(l)));
    assert.equal(runs.reduce((sum, l) => sum + Number(/alerts=(\d+)/.exec(l)?.[1]), 0), total);

    const svc = await services();
    for (const tenantId of [tenantA, tenantB]) {
      assert.deepEqual([...(await alertIds(tenantId))].sort(), [...kept.get(tenantId)!].sort(), `${tenantId}: exactly the newer alerts remain`);
      const rows = await partition(h.azurite.connectionString, "alerts", tenantId);
      const index = [...rows.keys()].filter((k) => k.startsWith(INDEX_PREFIX));
      assert.equal(index.length, kept.get(tenantId)!.size, "one index row per remaining alert");
      assert.ok(index.every((k) => Date.parse(`${k.slice(3, 26)}Z`) > Date.now() - RETENTION_DAYS * DAY), "no expired index row");
      assert.equal([...rows.keys()].filter((k) => k.startsWith("~g|")).length, 0, "no garbage row left");
      if (tenantId === tenantA) {
        const outbox = [...rows.values()].filter((r) => String(r.rowKey).startsWith("~o|")).map((r) => String(r.alertId));
        assert.deepEqual(outbox.sort(), [...kept.get(tenantId)!].sort(), "the kept alerts' outbox entries, and no other");
      }
      assert.equal(await foldAlertCount(svc.storage.table(TABLES.alerts), tenantId), kept.get(tenantId)!.size, "the exact count");
      const status = await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } });
      assert.equal((status.json as { alertsStored: number }).alertsStored, kept.get(tenantId)!.size, "alertsStored");
    }
    const bodies = [...(await partition(h.azurite.connectionString, "alertbodies", tenantA)).keys()];
    assert.ok(bodies.length > 0 && bodies.every((k) => k.startsWith(`${bigKept.id}|`)), "only the kept big alert's parts remain");
    const listed = await h.http("alerts-list", { path: `alerts?tenantId=${tenantA}&top=1000` });
    assert.equal((listed.json as { alerts: unknown[] }).alerts.length, kept.get(tenantA)!.size);
    const big = await h.http("alerts-get", { path: `tenants/${tenantA}/alerts/${bigKept.id}`, params: { tenantId: tenantA, alertId: bigKept.id } });
    assert.deepEqual(JSON.parse(big.text), bigKept, "the kept big alert is whole");
  });

  it("does nothing more once nothing is expired", async () => {
    const before = h.logs.length;
    await h.trigger("lifecycle-timer", { isPastDue: false });
    assert.ok(h.logs.slice(before).some((l) => /retention\.done alerts=0 parts=0 .*complete=true/.test(l)));
  });

  it("deletes audit entries and purge records older than AUDIT_RETENTION_DAYS (400), and keeps the rest", async () => {
    const table = TableClient.fromConnectionString(h.azurite.connectionString, "audit", { allowInsecureConnection: true });
    const key = (ms: number, tag: string) => `${String(9_999_999_999_999 - ms).padStart(13, "0")}-${tag}`;
    const entry = (days: number, tag: string) => ({
      partitionKey: "audit",
      rowKey: key(Date.now() - days * DAY, tag),
      at: new Date(Date.now() - days * DAY).toISOString(),
      actorType: "app",
      oid: "x",
      role: "Admin",
      action: "tenant.pull",
      route: "POST tenants/{tenantId}/pull",
      result: "succeeded",
    });
    await table.createEntity(entry(401, "000000000001"));
    await table.createEntity(entry(399, "000000000002"));
    const record = (days: number, tenant: string) => ({
      partitionKey: "purge",
      rowKey: `${tenant}|${key(Date.now() - days * DAY, "000000000003")}`,
      tenantId: tenant,
      state: "done",
      completedAt: new Date(Date.now() - days * DAY).toISOString(),
    });
    await table.createEntity(record(402, "11111111-0000-4000-8000-000000000001"));
    await table.createEntity(record(10, "11111111-0000-4000-8000-000000000002"));
    await h.trigger("lifecycle-timer", { isPastDue: false });
    const audit = await partition(h.azurite.connectionString, "audit", "audit");
    assert.equal([...audit.keys()].some((k) => k.endsWith("-000000000001")), false, "401 days: deleted");
    assert.equal([...audit.keys()].some((k) => k.endsWith("-000000000002")), true, "399 days: kept");
    const purges = [...(await partition(h.azurite.connectionString, "audit", "purge")).keys()];
    assert.deepEqual(purges.map((k) => k.split("|")[0]), ["11111111-0000-4000-8000-000000000002"]);
  });
});
