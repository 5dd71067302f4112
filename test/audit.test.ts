/**
 * The audit trail: every state-changing operator call and every export leaves an entry
 * with the caller's identity (a user's object ID and sign-in name, or an application's
 * service principal and app ID), role, action, tenant, route, time and result; the entry is
 * written before the action, and an action whose entry cannot be written is refused (503)
 * and does not happen. Admins read it through GET /api/audit.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { TableClient } from "@azure/data-tables";
import { operatorRoutes } from "../shared/operator/route.js";
import { services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { makeAlerts } from "../simulators/alerts.js";
import { type Harness, startHarness } from "./support/harness.js";

interface Entry {
  id: string;
  at: string;
  completedAt?: string;
  actor: { type: string; oid: string; upn?: string; appId?: string };
  role: string;
  action: string;
  tenantId?: string;
  route: string;
  result: string;
  status?: number;
  detail?: Record<string, unknown>;
}

let h: Harness;
const exercised = new Set<string>();

before(async () => {
  // One delivery destination, so the destination routes have something to act on (nothing is delivered here).
  h = await startHarness({
    "DESTINATIONS__soc-hook__TYPE": "webhook",
    "DESTINATIONS__soc-hook__URL": "https://hook.localhost/alerts",
    "DESTINATIONS__soc-hook__SECRET_NAME": "soc-hook-secret",
  });
});

after(async () => {
  await h?.stop();
});

/** Azurite may need a moment before a deleted table's name can be used again. */
async function recreate(table: { createTable(): Promise<unknown> }): Promise<void> {
  let last: unknown;
  for (let i = 0; i < 50; i++) {
    try {
      await table.createTable();
      return;
    } catch (err) {
      last = err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw last;
}

async function audit(query = ""): Promise<Entry[]> {
  const result = await h.http("audit-list", { path: `audit${query}` });
  assert.equal(result.status, 200, result.text);
  return (result.json as { entries: Entry[] }).entries;
}

/** The newest entry of `action` (for `tenantId`). */
async function latest(action: string, tenantId?: string): Promise<Entry> {
  const found = (await audit(`?action=${action}`)).find((e) => !tenantId || e.tenantId === tenantId);
  assert.ok(found, `an audit entry for ${action}`);
  return found;
}

describe("audit trail", () => {
  it("records a user's registration, an application's pull and reconcile, and the export, with who did it", async () => {
    const { operators } = h;
    const tenantId = h.newTenant();
    h.defender.setAlerts(tenantId, makeAlerts({ count: 3, from: new Date(Date.now() - 3600_000), to: new Date(Date.now() - 120_000), seed: tenantId }));

    const user = await h.userToken("Operator");
    const created = await h.http("tenants-create", { method: "POST", path: "tenants", bearer: user, body: JSON.stringify({ tenantId }) });
    assert.equal(created.status, 201, created.text);
    exercised.add("tenants-create");
    const register = await latest("tenant.register", tenantId);
    assert.deepEqual(register.actor, { type: "user", oid: operators.users.Operator.oid, upn: operators.users.Operator.upn, appId: operators.consoleClientId });
    assert.equal(register.role, "Operator");
    assert.equal(register.route, "POST tenants");
    assert.equal(register.result, "succeeded");
    assert.equal(register.status, 201);
    assert.ok(Date.parse(register.completedAt ?? "") >= Date.parse(register.at));

    const consented = await h.onboard(tenantId);
    assert.equal(consented.status, 200, consented.text);
    const app = await h.appToken("Operator");
    const pulled = await h.http("tenants-pull", { method: "POST", path: `tenants/${tenantId}/pull`, params: { tenantId }, bearer: app });
    assert.equal(pulled.status, 202);
    exercised.add("tenants-pull");
    const pull = await latest("tenant.pull", tenantId);
    assert.deepEqual(pull.actor, { type: "app", oid: operators.automation.Operator.servicePrincipalId, appId: operators.automation.Operator.clientId });
    assert.equal(pull.result, "succeeded");
    await h.host.drainQueues("pull-worker");

    const reconciled = await h.http("tenants-reconcile", {
      method: "POST",
      path: `tenants/${tenantId}/reconcile`,
      params: { tenantId },
      body: JSON.stringify({ lookbackHours: 3 }),
    });
    assert.equal(reconciled.status, 202);
    exercised.add("tenants-reconcile");
    const reconcile = await latest("tenant.reconcile", tenantId);
    assert.equal(reconcile.actor.appId, operators.automation.Admin.clientId, "the harness's default caller");
    assert.equal(reconcile.role, "Admin");

    const exported = await h.http("tenants-export", { path: `tenants/${tenantId}/export`, params: { tenantId }, as: "Operator" });
    assert.equal(exported.status, 200, `${exported.text}\n${h.logs.slice(-8).join("\n")}`);
    exercised.add("tenants-export");
    // The entry is completed when the stream ends; the response has ended here.
    let exportEntry = await latest("alerts.export", tenantId);
    for (let i = 0; i < 100 && exportEntry.result === "started"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      exportEntry = await latest("alerts.export", tenantId);
    }
    assert.equal(exportEntry.result, "succeeded");
    assert.deepEqual(exportEntry.detail, { alerts: 3, more: false });
    assert.equal(exportEntry.actor.appId, operators.automation.Operator.clientId);
  });

  it("records offboarding and purge (Admin), refused actions as failed, and reads are not audited", async () => {
    const tenantId = h.newTenant();
    assert.equal((await h.onboard(tenantId)).status, 200);
    const before = (await audit()).length;
    assert.equal((await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } })).status, 200);
    assert.equal((await h.http("alerts-list", { path: `alerts?tenantId=${tenantId}` })).status, 200);
    assert.equal((await audit()).length, before, "reads leave no entry");

    const relinkRefused = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId }) });
    assert.equal(relinkRefused.status, 409);
    const refused = await latest("tenant.register", tenantId);
    assert.equal(refused.result, "failed");
    assert.equal(refused.status, 409);

    const offboarded = await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantId}`, params: { tenantId } });
    assert.equal(offboarded.status, 204);
    exercised.add("tenants-delete");
    const offboard = await latest("tenant.offboard", tenantId);
    assert.equal(offboard.result, "succeeded");
    assert.equal(offboard.route, "DELETE tenants/{tenantId}");

    const purged = await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantId}?purge=true`, params: { tenantId } });
    assert.equal(purged.status, 202, purged.text);
    const purge = await latest("tenant.purge", tenantId);
    assert.equal(purge.detail?.purgeId, (purged.json as { purgeId: string }).purgeId);
    assert.equal(purge.status, 202);

    const bad = await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantId}?purge=yes`, params: { tenantId } });
    assert.equal(bad.status, 400, "a bad flag is refused before anything is written");
    assert.equal((await audit(`?tenantId=${tenantId}&action=tenant.purge`)).length, 1);
  });

  it("records a tenant's delivery settings (Admin), a replay (Operator) and re-enabling a destination (Admin), with who did it", async () => {
    const { operators } = h;
    const tenantId = h.newTenant();
    assert.equal((await h.onboard(tenantId)).status, 200);

    const patched = await h.http("tenants-patch", { method: "PATCH", path: `tenants/${tenantId}`, params: { tenantId }, body: JSON.stringify({ destinations: ["soc-hook"] }) });
    assert.equal(patched.status, 200, patched.text);
    exercised.add("tenants-patch");
    const settings = await latest("tenant.settings", tenantId);
    assert.equal(settings.result, "succeeded");
    assert.equal(settings.route, "PATCH tenants/{tenantId}");
    assert.equal(settings.actor.appId, operators.automation.Admin.clientId);

    const user = await h.userToken("Operator");
    const replayed = await h.http("destinations-replay", {
      method: "POST",
      path: "destinations/soc-hook/replay",
      params: { name: "soc-hook" },
      bearer: user,
      body: JSON.stringify({ tenantId, since: new Date(Date.now() - 3600_000).toISOString() }),
    });
    assert.equal(replayed.status, 202, replayed.text);
    exercised.add("destinations-replay");
    const replay = await latest("destination.replay", tenantId);
    assert.deepEqual(replay.actor, { type: "user", oid: operators.users.Operator.oid, upn: operators.users.Operator.upn, appId: operators.consoleClientId });
    assert.equal(replay.status, 202);
    // The replay's own record names the same caller (it said "function-key" before operators had identities).
    const replayId = (replayed.json as { replayId: string }).replayId;
    const state = TableClient.fromConnectionString(h.azurite.connectionString, TABLES.deliveryState, { allowInsecureConnection: true });
    assert.equal((await state.getEntity<{ requestedBy: string }>("replay", replayId)).requestedBy, operators.users.Operator.upn);

    const enabled = await h.http("destinations-enable", { method: "POST", path: "destinations/soc-hook/enable", params: { name: "soc-hook" } });
    assert.equal(enabled.status, 200, enabled.text);
    exercised.add("destinations-enable");
    const enable = await latest("destination.enable");
    assert.equal(enable.result, "succeeded");
    assert.equal(enable.role, "Admin");
    assert.equal(enable.tenantId, undefined, "about a destination, not a tenant");
  });

  it("lets Admins filter the trail by tenant, action and time, newest first, in pages", async () => {
    const all = await audit("?top=1000");
    assert.ok(all.length >= 8);
    for (let i = 1; i < all.length; i++) assert.ok(all[i - 1]!.at >= all[i]!.at, "newest first");
    const first = await h.http("audit-list", { path: "audit?top=2" });
    const page = first.json as { entries: Entry[]; continuationToken?: string };
    assert.equal(page.entries.length, 2);
    assert.ok(page.continuationToken);
    const next = await h.http("audit-list", { path: `audit?top=2&continuationToken=${encodeURIComponent(page.continuationToken)}` });
    assert.deepEqual((next.json as { entries: Entry[] }).entries, all.slice(2, 4));
    const since = all[3]!.at;
    const recent = await audit(`?since=${encodeURIComponent(since)}`);
    assert.ok(recent.every((e) => e.at >= since) && recent.length >= 4);
    const until = all[3]!.at;
    assert.ok((await audit(`?until=${encodeURIComponent(until)}`)).every((e) => e.at <= until));
    for (const query of ["?top=0", "?since=yesterday", "?tenantId=x", "?action=DROP TABLE", "?nope=1"]) {
      assert.equal((await h.http("audit-list", { path: `audit${query}` })).status, 400, query);
    }
  });

  it("exercised every audited route, and stores no token or request body in the trail", async () => {
    const audited = [...operatorRoutes()].filter(([, d]) => d.audited).map(([name]) => name);
    assert.deepEqual([...exercised].sort(), audited.sort(), "each audited route has its entry checked above");
    // The suite-wide leak check reads the audit table too (test/support/harness.ts); here, its columns.
    const table = TableClient.fromConnectionString(h.azurite.connectionString, "audit", { allowInsecureConnection: true });
    const columns = new Set<string>();
    for await (const row of table.listEntities()) for (const key of Object.keys(row)) columns.add(key);
    for (const unexpected of ["token", "authorization", "body", "consentUrl", "link"]) assert.equal(columns.has(unexpected), false, unexpected);
  });
  // Last: it deletes the audit table (and the entries above with it).
  it("refuses the action with 503 when its entry cannot be written, and the action does not happen", async () => {
    const tenantId = h.newTenant();
    assert.equal((await h.onboard(tenantId)).status, 200);
    const svc = await services();
    const table = svc.storage.table(TABLES.audit);
    await table.deleteTable();
    let refused: Awaited<ReturnType<Harness["http"]>>;
    try {
      refused = await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantId}`, params: { tenantId } });
    } finally {
      await recreate(table);
    }
    assert.equal(refused.status, 503, refused.text);
    assert.equal((refused.json as { error: { code: string } }).error.code, "AuditUnavailable");
    assert.ok(h.logs.some((l) => /audit\.write-failed action=tenant\.offboard error=/.test(l)));
    const status = await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } });
    assert.equal((status.json as { status: string }).status, "active", "not offboarded");
  });

});
