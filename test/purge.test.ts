/**
 * Purge on exit: `DELETE /api/tenants/{id}?purge=true` offboards the tenant and asks its
 * running pull to stop; the queue-driven job waits while the pull still holds the lease,
 * then deletes every row of the tenant in every app table except the audit trail (which
 * keeps the purge's record), and nothing of another tenant. A pull that was running during
 * the purge writes nothing after the purge started deleting.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { leaseTiming } from "../shared/collection/lease-timing.js";
import { PURGE_PLAN, runPurge } from "../shared/operator/purge.js";
import { services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { makeAlerts, makeLargeAlert } from "../simulators/alerts.js";
import { type Harness, openLink, startHarness } from "./support/harness.js";
import { allRows } from "./support/stored-alerts.js";

let h: Harness;
let tenantA: string;
let tenantB: string;
let snapshotB: Map<string, string[]>;
const realNow = () => new Date();

before(async () => {
  // A delivery destination, so the pulls also write outbox entries and delivery markers (nothing is delivered here).
  h = await startHarness({
    "DESTINATIONS__soc-hook__TYPE": "webhook",
    "DESTINATIONS__soc-hook__URL": "https://hook.localhost/alerts",
    "DESTINATIONS__soc-hook__SECRET_NAME": "soc-hook-secret",
  });
  tenantA = h.newTenant();
  tenantB = h.newTenant();
  for (const tenantId of [tenantA, tenantB]) {
    h.defender.setAlerts(tenantId, makeAlerts({ count: 150, from: new Date(Date.now() - 5 * 24 * 3600_000), to: new Date(Date.now() - 120_000), seed: tenantId }));
    h.defender.upsertAlert(tenantId, makeLargeAlert(3 * 1024 * 1024, { lastUpdateTime: new Date(Date.now() - 3600_000), seed: `big:${tenantId}` }));
    assert.equal((await h.onboard(tenantId)).status, 200);
    await h.trigger("pull-worker", { tenantId });
  }
});

after(async () => {
  await h?.stop();
});

/** Where a tenant appears: table -> row keys (by PartitionKey, RowKey or a tenantId column). */
async function rowsOf(tenantId: string): Promise<Map<string, string[]>> {
  const found = new Map<string, string[]>();
  for (const table of Object.values(TABLES)) {
    const rows = (await allRows(h.azurite.connectionString, table)).filter(
      (r) => r.partitionKey === tenantId || r.rowKey === tenantId || r.tenantId === tenantId,
    );
    found.set(table, rows.map((r) => `${r.partitionKey}/${r.rowKey}/${String(r.etag)}`).sort());
  }
  return found;
}

describe("purge", () => {
  it("finds the tenants' data in every table it will purge (the test's premise)", async () => {
    const rows = await rowsOf(tenantA);
    for (const [table, plan] of Object.entries(PURGE_PLAN)) {
      if (plan === "keep" || table === TABLES.consentStates) continue;
      assert.ok((rows.get(table) ?? []).length > 0, `${table} holds rows of the tenant`);
    }
    assert.ok((rows.get(TABLES.alertBodies) ?? []).length > 0, "overflow parts");
    assert.ok((rows.get(TABLES.alerts) ?? []).some((r) => r.split("/")[1]!.startsWith("~o|")), "delivery outbox entries");
    snapshotB = await rowsOf(tenantB);
  });

  it("waits for a running pull's lease, then deletes everything of the tenant; the pull writes nothing after", async () => {
    const svc = await services();
    // One clock for the app, the pull's lease included (the lease keeps the clock it started with).
    let shift = 0;
    svc.now = () => new Date(Date.now() + shift);
    // A consent state of the tenant (a re-link opened but not finished).
    const relink = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId: tenantA, relink: true }) });
    await openLink(h, (relink.json as { consentUrl: string }).consentUrl);
    assert.ok((await rowsOf(tenantA)).get(TABLES.consentStates)!.length > 0);

    // New alerts for A, and a pull that stops inside its first request until released.
    h.defender.setAlerts(tenantA, [
      ...h.defender.getAlerts(tenantA),
      ...makeAlerts({ count: 40, from: new Date(Date.now() - 600_000), to: new Date(Date.now() - 90_000), seed: `late:${tenantA}` }),
    ]);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let reached!: () => void;
    const inside = new Promise<void>((resolve) => (reached = resolve));
    h.defender.beforeResponse = async (ctx) => {
      if (ctx.tenantId !== tenantA) return;
      reached();
      await gate;
    };
    const pulling = h.trigger("pull-worker", { tenantId: tenantA });
    await inside;

    const requested = await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantA}?purge=true`, params: { tenantId: tenantA } });
    assert.equal(requested.status, 202, requested.text);
    const { purgeId } = requested.json as { purgeId: string };
    assert.match(purgeId, /^\d{13}-[0-9a-f]{12}$/);
    const again = await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantA}?purge=true`, params: { tenantId: tenantA } });
    assert.equal((again.json as { purgeId: string }).purgeId, purgeId, "asking again answers the same purge");
    const blocked = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId: tenantA, relink: true }) });
    assert.equal(blocked.status, 409);
    assert.equal((blocked.json as { error: { code: string } }).error.code, "PurgeInProgress");
    const stop = await svc.storage.table(TABLES.syncState).getEntity<{ stopRequestedAt?: string }>(tenantA, "defender");
    assert.ok(stop.stopRequestedAt, "the running pull is asked to stop");

    // The pull still holds its lease: the job waits, deleting nothing.
    const stored = (await rowsOf(tenantA)).get(TABLES.alerts)!.length;
    const alertRows = (await rowsOf(tenantA)).get(TABLES.alerts)!.filter((r) => !r.split("/")[1]!.startsWith("~")).length;
    await h.trigger("purge-worker", { tenantId: tenantA, purgeId });
    const waiting = await h.http("tenants-purge", { path: `tenants/${tenantA}/purge`, params: { tenantId: tenantA }, as: "Reader" });
    assert.equal(waiting.status, 200);
    assert.deepEqual(
      { state: (waiting.json as { state: string }).state, waitingFor: (waiting.json as { waitingFor?: string }).waitingFor },
      { state: "waiting", waitingFor: "pull-lease" },
    );
    assert.equal((await rowsOf(tenantA)).get(TABLES.alerts)!.length, stored, "nothing deleted while the lease is held");

    // Time passes beyond the lease (the pull is still stuck); the job deletes everything.
    shift = leaseTiming().leaseTtlMs + 60_000;
    await h.trigger("purge-worker", { tenantId: tenantA, purgeId });
    const done = await h.http("tenants-purge", { path: `tenants/${tenantA}/purge`, params: { tenantId: tenantA } });
    const report = done.json as { state: string; deleted: Record<string, number>; alertsDeleted: number; requestedBy: string };
    assert.equal(report.state, "done", done.text);
    assert.equal(report.alertsDeleted, alertRows, "every alert of the tenant, counted once");
    assert.ok(report.deleted.alertbodies! > 0 && report.deleted.syncstate! >= 2 && report.deleted.consentstates! >= 1 && report.deleted.tenants === 1, JSON.stringify(report));
    assert.equal(report.requestedBy, h.operators.automation.Admin.servicePrincipalId);

    // The stuck pull goes on: its lease is over, so it must not write.
    release();
    await pulling;
    h.defender.beforeResponse = undefined;
    assert.ok(h.logs.some((l) => l.includes(`pull.lease-lost tenantId=${tenantA}`)), "the pull stopped at its lease");
    const left = await rowsOf(tenantA);
    for (const [table, rows] of left) {
      if (table === TABLES.audit) continue;
      assert.deepEqual(rows, [], `${table} holds nothing of the purged tenant`);
    }
    assert.ok(left.get(TABLES.audit)!.some((r) => r.startsWith(`purge/${tenantA}|${purgeId}`)), "the purge's record stays in the audit table");
    assert.deepEqual(await rowsOf(tenantB), snapshotB, "nothing of the other tenant changed");
    svc.now = realNow;
  });

  it("leaves the refresh token soft-deleted, stays gone for new pulls, and lets the tenant register anew", async () => {
    const secret = h.vault.inspect(`tenant-${tenantA}-refresh-token`);
    assert.equal(secret?.deleted, true, "soft-deleted; purge protection keeps it until its retention ends");
    await h.trigger("pull-worker", { tenantId: tenantA });
    assert.deepEqual((await rowsOf(tenantA)).get(TABLES.syncState), [], "a late pull message recreates nothing");
    const status = await h.http("tenants-get", { path: `tenants/${tenantA}`, params: { tenantId: tenantA } });
    assert.equal(status.status, 404);
    const registered = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId: tenantA }) });
    assert.equal(registered.status, 201, "a new registration after the purge");
  });

  it("resumes across bounded runs and counts every row it deleted", async () => {
    const svc = await services();
    const before = await rowsOf(tenantB);
    const requested = await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantB}?purge=true`, params: { tenantId: tenantB } });
    assert.equal(requested.status, 202);
    const { purgeId } = requested.json as { purgeId: string };
    const log = { info: () => {}, warn: () => {}, error: () => {} };
    const outcomes: string[] = [];
    for (let i = 0; i < 50; i++) {
      const outcome = await runPurge(svc, { tenantId: tenantB, purgeId }, log, { maxRows: 60 });
      outcomes.push(outcome);
      if (outcome === "done") break;
    }
    assert.ok(outcomes.length >= 3 && outcomes.slice(0, -1).every((o) => o === "continued"), outcomes.join(","));
    assert.equal(outcomes.at(-1), "done");
    const report = (await h.http("tenants-purge", { path: `tenants/${tenantB}/purge`, params: { tenantId: tenantB } })).json as {
      deleted: Record<string, number>;
      alertsDeleted: number;
      runs: number;
    };
    const alertRows = before.get(TABLES.alerts)!.filter((r) => !r.split("/")[1]!.startsWith("~")).length;
    assert.equal(report.alertsDeleted, alertRows, "every alert counted once");
    assert.equal(report.deleted.alertbodies, before.get(TABLES.alertBodies)!.length);
    assert.equal(report.runs, outcomes.length);
    for (const [table, rows] of await rowsOf(tenantB)) if (table !== TABLES.audit) assert.deepEqual(rows, [], table);
  });
});
