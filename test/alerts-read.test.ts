import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type DefenderAlert, makeAlerts } from "../simulators/alerts.js";
import type { HttpResult } from "./support/functions.js";
import { type Harness, startHarness } from "./support/harness.js";

/**
 * GET /api/alerts filters, each driven through real pulls into this file's own Azurite, so
 * a test does not depend on rows other tests left behind: run alone, it still fails when
 * its filter is ignored.
 */

let h: Harness;

interface Listed {
  alerts: { tenantId: string; id: string; status: string; storedAt: string }[];
  continuationToken?: string;
}

async function list(query: string): Promise<Listed> {
  const result = await h.http("alerts-list", { path: `alerts?${query}` });
  assert.equal(result.status, 200, result.text);
  return result.json as Listed;
}

async function activeTenant(alerts: DefenderAlert[]): Promise<string> {
  const tenantId = h.newTenant();
  h.defender.setAlerts(tenantId, alerts);
  const page = await h.onboard(tenantId);
  assert.equal(page.status, 200, page.text);
  await h.trigger("pull-worker", { tenantId });
  return tenantId;
}

function batch(count: number, seed: string, status: string): DefenderAlert[] {
  const now = Date.now();
  return makeAlerts({ count, from: new Date(now - 24 * 3600_000), to: new Date(now - 120_000), seed }).map((a) => ({ ...a, status }));
}

const ids = (listed: Listed) => listed.alerts.map((a) => a.id).sort();

before(async () => {
  h = await startHarness({ PULL_LAG_SECONDS: "0" });
});
after(async () => {
  await h?.stop();
});

describe("GET /api/alerts filters", () => {
  it("status= returns only alerts with that status (case-insensitive), of a tenant that has others", async () => {
    const resolved = batch(3, "read-resolved", "Resolved");
    const fresh = batch(4, "read-new", "New");
    const tenantId = await activeTenant([...resolved, ...fresh]);
    assert.equal((await list(`tenantId=${tenantId}&top=1000`)).alerts.length, 7, "both statuses are stored");
    const onlyResolved = await list(`tenantId=${tenantId}&status=resolved&top=1000`);
    assert.deepEqual(ids(onlyResolved), resolved.map((a) => a.id).sort());
    assert.ok(onlyResolved.alerts.every((a) => a.status === "Resolved"));
    assert.deepEqual(ids(await list(`tenantId=${tenantId}&status=New&top=1000`)), fresh.map((a) => a.id).sort());
    assert.deepEqual((await list(`tenantId=${tenantId}&status=InProgress`)).alerts, []);
  });

  it("since= returns only rows stored or changed at or after that time", async () => {
    const alerts = batch(6, "read-since", "New");
    const tenantId = await activeTenant(alerts);
    const first = await list(`tenantId=${tenantId}&top=1000`);
    assert.equal(first.alerts.length, 6);
    const newest = Math.max(...first.alerts.map((a) => Date.parse(a.storedAt)));
    const since = new Date(newest + 1);
    // Storage stamps rows with its own clock: let it pass `since` before the next write.
    while (Date.now() <= since.getTime() + 2) await new Promise((resolve) => setImmediate(resolve));
    const changed = alerts.slice(0, 2).map((a, i) => ({ ...a, status: "Resolved", lastUpdateTime: new Date(Date.now() - 1000 + i).toISOString() }));
    for (const alert of changed) h.defender.upsertAlert(tenantId, alert);
    await h.trigger("pull-worker", { tenantId });
    const after = await list(`tenantId=${tenantId}&since=${since.toISOString()}&top=1000`);
    assert.deepEqual(ids(after), changed.map((a) => a.id).sort());
    assert.ok(after.alerts.every((a) => Date.parse(a.storedAt) >= since.getTime()));
  });
});

describe("GET /api/tenants/{tenantId}/alerts/{alertId}", () => {
  it("answers the stored JSON with nosniff, like every other response", async () => {
    const [alert] = batch(1, "read-one", "New");
    const tenantId = await activeTenant([alert!]);
    const result: HttpResult = await h.http("alerts-get", {
      path: `tenants/${tenantId}/alerts/${alert!.id}`,
      params: { tenantId, alertId: alert!.id },
    });
    assert.equal(result.status, 200);
    assert.equal(result.headers["x-content-type-options"], "nosniff");
    assert.equal((JSON.parse(result.text) as { id: string }).id, alert!.id);
  });
});
