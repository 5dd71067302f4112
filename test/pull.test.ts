import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { odata } from "@azure/data-tables";
import { checkHealth, resetHealthCache } from "../shared/platform/health.js";
import { refreshTokenSecretName } from "../shared/platform/token-vault.js";
import { type Services, services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { type DefenderAlert, makeAlert, makeAlerts, makeLargeAlert } from "../simulators/alerts.js";
import { type Harness, startHarness } from "./support/harness.js";

const PAGE = 40;
let h: Harness;
let svc: Services;
const slept: number[] = [];

before(async () => {
  h = await startHarness({ PULL_PAGE_SIZE: String(PAGE), PULL_LAG_SECONDS: "0", PULL_MAX_CALLS_PER_MINUTE: "30" });
  svc = await services();
  // Retry-After and backoff waits are recorded instead of slept.
  svc.sleep = async (ms) => {
    slept.push(ms);
  };
});
after(async () => {
  await h?.stop();
});
beforeEach(() => {
  slept.length = 0;
  h.defender.clearFaults();
});

async function activeTenant(alerts: DefenderAlert[] = []): Promise<string> {
  const tenantId = h.newTenant();
  h.defender.setAlerts(tenantId, alerts);
  const page = await h.onboard(tenantId);
  assert.equal(page.status, 200, page.text);
  return tenantId;
}

async function pull(tenantId: string): Promise<void> {
  await h.trigger("pull-worker", { tenantId });
}

interface StoredRow {
  alertId: string;
  lastUpdateTimeExact: string;
  status?: string;
}

async function storedRows(tenantId: string): Promise<StoredRow[]> {
  const rows: StoredRow[] = [];
  const filter = odata`PartitionKey eq ${tenantId}`;
  const table = svc.storage.table(TABLES.alerts);
  for await (const row of table.listEntities<StoredRow>({
    queryOptions: { filter, select: ["alertId", "lastUpdateTimeExact", "status"] },
  })) {
    rows.push(row);
  }
  return rows;
}

/** Every alert's latest version is stored exactly once. */
async function assertInSync(tenantId: string): Promise<void> {
  const rows = await storedRows(tenantId);
  const expected = new Map(h.defender.getAlerts(tenantId).map((a) => [a.id, a.lastUpdateTime]));
  assert.equal(rows.length, expected.size, "one row per alert");
  for (const row of rows) assert.equal(row.lastUpdateTimeExact, expected.get(row.alertId), row.alertId);
}

async function status(tenantId: string): Promise<Record<string, unknown>> {
  return (await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } })).json as Record<
    string,
    unknown
  >;
}

function recent(count: number, seed: string): DefenderAlert[] {
  const now = Date.now();
  return makeAlerts({ count, from: new Date(now - 2 * 24 * 3600_000), to: new Date(now - 60_000), seed, evidenceCount: 1 });
}

/** Runs the timer, then every queued message through the worker, as the host would. */
async function runSchedule(): Promise<string[]> {
  await h.trigger("pull-timer", {});
  const handled: string[] = [];
  for (;;) {
    const received = await svc.storage.pullQueue.receiveMessages({ numberOfMessages: 32 });
    if (received.receivedMessageItems.length === 0) return handled;
    for (const m of received.receivedMessageItems) {
      const message = JSON.parse(Buffer.from(m.messageText, "base64").toString("utf8")) as { tenantId: string };
      handled.push(message.tenantId);
      await h.trigger("pull-worker", message);
      await svc.storage.pullQueue.deleteMessage(m.messageId, m.popReceipt);
    }
  }
}

describe("pulling alerts", () => {
  it("reads a window several times the page size while alerts change, and loses nothing", async () => {
    const tenantId = await activeTenant(recent(PAGE * 4 + 7, "window"));
    let changes = 0;
    h.defender.beforeResponse = ({ tenantId: t, requestNumber, fake }) => {
      if (t !== tenantId || requestNumber % 2 !== 0) return;
      const victims = fake.getAlerts(t).slice(0, 3).map((a) => a.id);
      fake.touch(t, victims, new Date(Date.now() - 1000), { status: "InProgress" });
      changes++;
    };
    await pull(tenantId);
    h.defender.beforeResponse = undefined;
    assert.ok(changes > 0, "alerts changed between requests");
    const requests = h.defender.requests(tenantId).filter((r) => r.path === "/api/alerts" && r.query.$filter);
    assert.ok(requests.every((r) => Number(r.query.$top) === PAGE && r.query.$expand === "evidence"));
    assert.ok(requests.some((r) => r.itemCount === PAGE), "a full answer forced a split");
    await pull(tenantId); // picks up the alerts updated during the first pull
    await assertInSync(tenantId);
    const s = await status(tenantId);
    assert.equal(s.alertsStored, PAGE * 4 + 7);
    assert.ok(s.lastSuccessAt);
    assert.equal(s.lastError, undefined);
  });

  it("reads more same-millisecond alerts than a page holds with $skip, until two passes agree", async () => {
    const at = new Date(Date.now() - 3600_000).toISOString().replace("Z", "1234Z");
    const ties = recent(PAGE * 2 + 5, "ties").map((a) => ({ ...a, lastUpdateTime: at }));
    const tenantId = await activeTenant(ties);
    await pull(tenantId);
    const skipped = h.defender.requests(tenantId).filter((r) => r.query.$skip);
    assert.ok(skipped.length >= 4, "two full $skip passes");
    await assertInSync(tenantId);
  });

  it("stores updates without duplicates, and reruns change nothing", async () => {
    const alerts = recent(30, "updates");
    const tenantId = await activeTenant(alerts);
    await pull(tenantId);
    h.defender.touch(tenantId, alerts.slice(0, 10).map((a) => a.id), new Date(Date.now() - 500), { status: "Resolved" });
    await pull(tenantId);
    await pull(tenantId);
    await assertInSync(tenantId);
    const touched = new Set(alerts.slice(0, 10).map((a) => a.id));
    const rows = (await storedRows(tenantId)).filter((r) => touched.has(r.alertId));
    assert.equal(rows.length, 10);
    assert.ok(rows.every((r) => r.status === "Resolved"));
  });

  it("round-trips a several-MiB alert byte for byte", async () => {
    const big = makeLargeAlert(5 * 1024 * 1024, { lastUpdateTime: new Date(Date.now() - 3600_000) });
    const tenantId = await activeTenant([big, ...recent(5, "big-neighbours")]);
    await pull(tenantId);
    const got = await h.http("alerts-get", {
      path: `tenants/${tenantId}/alerts/${encodeURIComponent(big.id)}`,
      params: { tenantId, alertId: big.id },
    });
    assert.equal(got.status, 200);
    assert.ok(got.text.length > 5_000_000);
    assert.equal(got.text, JSON.stringify(big));
    // A changed big alert replaces its body; the old overflow rows go away.
    h.defender.touch(tenantId, [big.id], new Date(Date.now() - 1000), { status: "Resolved" });
    await pull(tenantId);
    const again = await h.http("alerts-get", {
      path: `tenants/${tenantId}/alerts/${big.id}`,
      params: { tenantId, alertId: big.id },
    });
    assert.equal(again.text, JSON.stringify(h.defender.getAlert(tenantId, big.id)));
    const bodies = svc.storage.table(TABLES.alertBodies);
    const keys = new Set<string>();
    for await (const row of bodies.listEntities({ queryOptions: { filter: odata`PartitionKey eq ${tenantId}` } })) {
      keys.add(String(row.rowKey).split("|")[1] ?? "");
    }
    assert.equal(keys.size, 1, "only the current body's overflow rows remain");
    const missing = await h.http("alerts-get", {
      path: `tenants/${tenantId}/alerts/nope`,
      params: { tenantId, alertId: "nope" },
    });
    assert.equal(missing.status, 404);
  });

  it("loses nothing when a pull crashes between pages, and the rerun catches up", async () => {
    const tenantId = await activeTenant(recent(PAGE * 3, "crash"));
    const alerts = svc.storage.table(TABLES.alerts);
    const original = alerts.submitTransaction.bind(alerts);
    let calls = 0;
    alerts.submitTransaction = async (actions) => {
      if (++calls === 2) throw Object.assign(new Error("simulated crash"), { statusCode: 503 });
      return original(actions);
    };
    await assert.rejects(pull(tenantId), /^HandlerFailure: pull\.worker-failed error=Error\/503$/);
    alerts.submitTransaction = original;
    const after = await status(tenantId);
    assert.equal(after.lastError && (after.lastError as { code: string }).code, "InternalError");
    await pull(tenantId);
    await assertInSync(tenantId);
  });

  it("rides out 429 and 5xx storms and resets, honouring Retry-After", async () => {
    const tenantId = await activeTenant(recent(25, "storm"));
    h.defender.inject(tenantId, { status: 429, retryAfterSeconds: 7 }, 2);
    h.defender.inject(tenantId, { status: 503 }, 2);
    h.defender.inject(tenantId, { reset: true }, 1);
    await pull(tenantId);
    await assertInSync(tenantId);
    assert.deepEqual(slept.slice(0, 2), [7000, 7000]);
    assert.equal(slept.length, 5);
    assert.ok(slept.slice(2).every((ms) => ms >= 0 && ms <= 30_000));
    assert.equal((await status(tenantId)).lastError, undefined);
  });

  it("stops cleanly when the per-minute budget runs out, and resumes on the next run", async () => {
    const tenantId = await activeTenant(recent(PAGE * 12, "budget"));
    h.defender.inject(tenantId, { status: 503 }, 25);
    await pull(tenantId);
    const first = h.defender.requests(tenantId).filter((r) => r.path === "/api/alerts");
    assert.ok(first.length <= 30, `${first.length} calls in one minute`);
    const s = await status(tenantId);
    assert.ok((s.lastError as { code: string }).code === "BudgetExhausted" || (s.lastError as { code: string }).code === "HTTP503");
    h.defender.clearFaults();
    const realNow = svc.now;
    svc.now = () => new Date(Date.now() + 61_000);
    try {
      for (let i = 0; i < 5 && ((await status(tenantId)).lastError !== undefined || i === 0); i++) {
        svc.now = () => new Date(Date.now() + 61_000 * (i + 2));
        await pull(tenantId);
      }
    } finally {
      svc.now = realNow;
    }
    await assertInSync(tenantId);
  });

  it("stores timestamps with 1 to 7 fractional digits exactly", async () => {
    const base = Date.now() - 3600_000;
    const alerts = [1, 2, 3, 4, 5, 6, 7].map((digits, i) =>
      makeAlert({ lastUpdateTime: new Date(base + i * 1000), fractionDigits: digits, seed: `digits-${digits}` }),
    );
    const tenantId = await activeTenant(alerts);
    await pull(tenantId);
    await assertInSync(tenantId);
    assert.equal((await status(tenantId)).watermark, alerts[6]!.lastUpdateTime);
  });

  it("runs one pull per tenant at a time: a duplicate message just ends", async () => {
    const tenantId = await activeTenant(recent(20, "dupe"));
    await Promise.all([pull(tenantId), pull(tenantId)]);
    assert.ok(h.logs.some((l) => l.includes(`pull.skipped tenantId=${tenantId} reason=`)));
    await assertInSync(tenantId);
  });

  it("drops a malformed (poison) message without failing", async () => {
    await h.trigger("pull-worker", "not json");
    await h.trigger("pull-worker", { tenantId: "../../etc" });
    assert.ok(h.logs.filter((l) => l.includes("pull.message-rejected")).length >= 2);
  });
});

describe("scheduling", () => {
  it("POST /api/tenants/{id}/pull queues a pull (202), and refuses unknown or inactive tenants", async () => {
    const tenantId = await activeTenant(recent(3, "manual"));
    const queued = await h.http("tenants-pull", { method: "POST", path: `tenants/${tenantId}/pull`, params: { tenantId } });
    assert.equal(queued.status, 202);
    const peeked = await svc.storage.pullQueue.peekMessages({ numberOfMessages: 32 });
    const messages = peeked.peekedMessageItems.map((m) => JSON.parse(Buffer.from(m.messageText, "base64").toString("utf8")));
    assert.ok(messages.some((m) => m.tenantId === tenantId && m.reason === "manual"), "base64 JSON message queued");
    const unknown = "6b1f5c3e-0000-4000-8000-00000000cccc";
    const missing = await h.http("tenants-pull", { method: "POST", path: `tenants/${unknown}/pull`, params: { tenantId: unknown } });
    assert.equal(missing.status, 404);
    const pending = h.newTenant();
    await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId: pending }) });
    const inactive = await h.http("tenants-pull", { method: "POST", path: `tenants/${pending}/pull`, params: { tenantId: pending } });
    assert.equal(inactive.status, 409);
    await runSchedule();
  });

  it("ends a run over many tenants, with faults and changing alerts, with every latest version stored once", async () => {
    const tenants: string[] = [];
    for (let i = 0; i < 5; i++) tenants.push(await activeTenant(recent(PAGE + 15 * i, `many-${i}`)));
    h.defender.inject("*", { status: 503 }, 4);
    h.defender.inject("*", { status: 429, retryAfterSeconds: 2 }, 3);
    h.defender.inject("*", { reset: true }, 2);
    h.defender.beforeResponse = ({ tenantId, requestNumber, fake }) => {
      if (!tenants.includes(tenantId) || requestNumber % 3 !== 0) return;
      const ids = fake.getAlerts(tenantId).slice(-2).map((a) => a.id);
      fake.touch(tenantId, ids, new Date(Date.now() - 200), { status: "Resolved" });
    };
    await runSchedule();
    h.defender.beforeResponse = undefined;
    await runSchedule();
    for (const tenantId of tenants) await assertInSync(tenantId);
  });
});

describe("tokens during pulls", () => {
  it("marks only a revoked tenant reconsent-required; the others go on", async () => {
    const revoked = await activeTenant(recent(5, "revoked"));
    const healthy = await activeTenant(recent(5, "healthy"));
    const missingSp = await activeTenant(recent(5, "missing-sp"));
    h.entra.revokeTenant(revoked, 70008);
    h.entra.missingServicePrincipal(missingSp);
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    for (const t of [revoked, healthy, missingSp]) forgetAccessToken(t);
    const handled = await runSchedule();
    assert.ok(handled.includes(revoked) && handled.includes(healthy));
    const r = await status(revoked);
    assert.equal(r.status, "reconsent-required");
    assert.equal((r.lastError as { code: string }).code, "AADSTS70008");
    assert.ok(h.logs.some((l) => l.includes(`tenant.status tenantId=${revoked} status=reconsent-required code=AADSTS70008`)));
    const m = await status(missingSp);
    assert.equal(m.status, "active");
    assert.equal((m.lastError as { code: string }).code, "AADSTS500011");
    await assertInSync(healthy);
    assert.equal((await status(healthy)).lastError, undefined);
    // A reconsent-required tenant is not queued again until it is onboarded again.
    assert.ok(!(await runSchedule()).includes(revoked));
    h.entra.restoreTenant(revoked);
    assert.equal((await h.onboard(revoked)).status, 200);
    assert.equal((await status(revoked)).status, "active");
  });

  it("writes a rotated refresh token back when the stored one is old, and disables the old version", async () => {
    const tenantId = await activeTenant(recent(3, "writeback"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    forgetAccessToken(tenantId);
    await pull(tenantId); // fresh token: no write-back yet
    const name = refreshTokenSecretName(tenantId);
    assert.equal(h.vault.inspect(name)?.versions.length, 1);
    const tenants = svc.storage.table(TABLES.tenants);
    await tenants.updateEntity(
      { partitionKey: "tenant", rowKey: tenantId, refreshTokenWrittenAt: "2000-01-01T00:00:00.000Z" },
      "Merge",
    );
    forgetAccessToken(tenantId);
    await pull(tenantId);
    const versions = h.vault.inspect(name)!.versions;
    assert.deepEqual(versions.map((v) => v.enabled), [false, true]);
    assert.ok(h.entra.issuedRefreshTokens(tenantId).includes(versions[1]!.value));
    // The written-back token works: the next redemption uses it.
    forgetAccessToken(tenantId);
    await pull(tenantId);
    assert.equal((await status(tenantId)).lastError, undefined);
  });

  it("retries Entra's transient failures during a pull", async () => {
    const tenantId = await activeTenant(recent(4, "entra-503"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    forgetAccessToken(tenantId);
    h.entra.failNext(2, { status: 503 });
    await pull(tenantId);
    assert.equal(slept.length, 2, "two backoff waits");
    await assertInSync(tenantId);
    assert.equal((await status(tenantId)).lastError, undefined);
  });

  it("never brings back a token that an offboarding deleted", async () => {
    const tenantId = await activeTenant();
    await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantId}`, params: { tenantId } });
    const version = await svc.vault.write(tenantId, "late-write-back", {}, false);
    assert.equal(version, undefined);
    assert.equal(h.vault.inspect(refreshTokenSecretName(tenantId))?.deleted, true);
  });

});

describe("reading alerts", () => {
  it("lists across tenants with filters and a continuation token, and rejects bad filters", async () => {
    const startedAt = new Date(Date.now() - 1000).toISOString();
    const a = await activeTenant(recent(7, "read-a").map((x) => ({ ...x, severity: "High" })));
    const b = await activeTenant(recent(5, "read-b").map((x) => ({ ...x, severity: "Low" })));
    await pull(a);
    await pull(b);
    const list = async (query: string) => h.http("alerts-list", { path: `alerts?${query}` });
    const high = await list(`tenantId=${a}&severity=high&top=3`);
    assert.equal(high.status, 200);
    const first = high.json as { alerts: { tenantId: string; severity: string }[]; continuationToken?: string };
    assert.equal(first.alerts.length, 3);
    assert.ok(first.alerts.every((x) => x.tenantId === a && x.severity === "High"), JSON.stringify(first.alerts[0]));
    assert.ok(first.continuationToken);
    let all = first.alerts.length;
    let token = first.continuationToken;
    while (token) {
      const next = (await list(`tenantId=${a}&severity=High&top=3&continuationToken=${encodeURIComponent(token)}`))
        .json as typeof first;
      all += next.alerts.length;
      token = next.continuationToken ?? "";
    }
    assert.equal(all, 7);
    const since = (await list(`since=${startedAt}&top=1000`)).json as typeof first;
    const tenantsSeen = new Set(since.alerts.map((x) => x.tenantId));
    assert.ok(tenantsSeen.has(a) && tenantsSeen.has(b));
    for (const bad of ["severity=extreme", "status=gone", "top=0", "top=5000", "since=yesterday", "tenantId=x", "colour=red", "continuationToken=%%%"]) {
      const result = await list(bad);
      assert.equal(result.status, 400, `${bad}: ${result.text}`);
    }
  });
});

// Last, because it breaks the app credential for the rest of this file.
describe("app credential", () => {
  it("reports an expired client secret in /api/health and leaves tenant status alone", async () => {
    const tenantId = await activeTenant(recent(2, "client"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    forgetAccessToken(tenantId);
    h.entra.expireClientSecret();
    await pull(tenantId);
    const s = await status(tenantId);
    assert.equal(s.status, "active");
    assert.equal(s.lastError, undefined);
    assert.ok(h.logs.some((l) => l.includes("app.credential.failed code=AADSTS7000222")));
    resetHealthCache();
    assert.deepEqual(await checkHealth(svc), { status: "unhealthy", failing: ["clientCredential"] });
  });
});
