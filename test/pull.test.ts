import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { odata } from "@azure/data-tables";
import { checkHealth, resetHealthCache } from "../shared/platform/health.js";
import { refreshTokenSecretName } from "../shared/platform/token-vault.js";
import { type Services, services } from "../shared/platform/services.js";
import { COUNT_PREFIX } from "../shared/collection/alert-store.js";
import { TABLES } from "../shared/platform/storage.js";
import { type DefenderAlert, makeAlert, makeAlerts, makeLargeAlert } from "../simulators/alerts.js";
import { type Harness, startHarness, untilOrEnd } from "./support/harness.js";

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
  // Fault injections never outlive the test that made them, even one that failed.
  slept.length = 0;
  h.defender.clearFaults();
  h.defender.beforeResponse = undefined;
  h.defender.clampTop = undefined;
  h.defender.nextLinkOrigin = undefined;
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
  const filter = odata`PartitionKey eq ${tenantId} and RowKey lt ${"~"}`;
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

/** Runs `fn` with the app's clock set to `at` (and the fake Defender's log stamped likewise). */
async function withClock<T>(at: number, fn: () => Promise<T>): Promise<T> {
  const realNow = svc.now;
  const realFake = h.defender.now;
  svc.now = () => new Date(at);
  h.defender.now = () => at;
  try {
    return await fn();
  } finally {
    svc.now = realNow;
    h.defender.now = realFake;
  }
}

async function syncRow(tenantId: string): Promise<{ watermark?: string }> {
  return svc.storage.table(TABLES.syncState).getEntity<{ watermark?: string }>(tenantId, "defender");
}

async function overflowKeys(tenantId: string): Promise<Set<string>> {
  const keys = new Set<string>();
  const bodies = svc.storage.table(TABLES.alertBodies);
  for await (const row of bodies.listEntities({ queryOptions: { filter: odata`PartitionKey eq ${tenantId}` } })) {
    keys.add(String(row.rowKey).split("|")[1] ?? "");
  }
  return keys;
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
    // The replaced version's parts stay for the grace period (a reader may still be on it),
    // then the next run deletes them.
    assert.equal((await overflowKeys(tenantId)).size, 2, "old parts kept during the grace period");
    await withClock(Date.now() + 11 * 60_000, () => pull(tenantId));
    assert.equal((await overflowKeys(tenantId)).size, 1, "only the current body's overflow rows remain");
    const missing = await h.http("alerts-get", {
      path: `tenants/${tenantId}/alerts/nope`,
      params: { tenantId, alertId: "nope" },
    });
    assert.equal(missing.status, 404);
  });

  it("stops cleanly when the per-minute budget runs out, and the next run in that minute makes no call", async () => {
    // PAGE*30 alerts in 40-item pages need at least 30 leaves plus the splitting calls: more
    // than the 30 calls a minute allowed here.
    const tenantId = await activeTenant(recent(PAGE * 30, "budget"));
    const minute = Math.floor(Date.now() / 60_000) * 60_000 + 1000;
    const listCalls = () => h.defender.requests(tenantId).filter((r) => r.path === "/api/alerts" && r.query.$filter).length;
    await withClock(minute, () => pull(tenantId));
    assert.equal(listCalls(), 30, "exactly the per-minute budget");
    const s = await status(tenantId);
    assert.equal((s.lastError as { code: string }).code, "BudgetExhausted");
    assert.ok(h.logs.some((l) => l.startsWith(`[warning] pull.partial tenantId=${tenantId} code=BudgetExhausted`)));
    // The budget is kept on the sync-state row: a second run in the same minute makes no call.
    await withClock(minute + 20_000, () => pull(tenantId));
    assert.equal(listCalls(), 30, "the persisted budget stops a new run in the same minute");
    for (let i = 1; i <= 20 && (await status(tenantId)).lastError !== undefined; i++) {
      await withClock(minute + i * 61_000, () => pull(tenantId));
    }
    await assertInSync(tenantId);
    assert.equal((await status(tenantId)).lastError, undefined);
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
    const row = await tenants.getEntity<{ refreshTokenVersion?: string; generation?: string }>("tenant", tenantId);
    assert.equal(row.refreshTokenVersion, versions[1]!.version, "the tenant row names the written-back version");
    assert.deepEqual(versions[1]!.tags, { tenantId, generation: row.generation }, "tagged like every version");
    // The written-back token works: the next redemption uses it.
    forgetAccessToken(tenantId);
    await pull(tenantId);
    assert.equal((await status(tenantId)).lastError, undefined);
    assert.deepEqual(
      h.vault.inspect(name)!.versions.map((v) => v.enabled),
      [false, true],
      "the next pull read the new version, not the old one",
    );
  });

  it("writes back only once the write-back interval has passed since the stored token was written", async () => {
    const tenantId = await activeTenant(recent(3, "wb-interval"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    const name = refreshTokenSecretName(tenantId);
    const row = await svc.storage.table(TABLES.tenants).getEntity<{ refreshTokenWrittenAt: string }>("tenant", tenantId);
    const due = Date.parse(row.refreshTokenWrittenAt) + svc.config.pull.writebackIntervalMs;
    forgetAccessToken(tenantId);
    await withClock(due - 1, () => pull(tenantId));
    assert.equal(h.vault.inspect(name)?.versions.length, 1, "not yet");
    forgetAccessToken(tenantId);
    await withClock(due, () => pull(tenantId));
    assert.equal(h.vault.inspect(name)?.versions.length, 2, "written back once the interval has passed");
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

describe("guards of the pull engine (each test fails when its guard is removed)", () => {
  /** Wraps svc.vault.read once: `during` runs after the pull has started, before the token is redeemed. */
  function duringTokenRead(during: () => Promise<void>): void {
    const original = svc.vault.read.bind(svc.vault);
    svc.vault.read = async (...args) => {
      svc.vault.read = original;
      const stored = await original(...args);
      await during();
      return stored;
    };
  }

  async function makeWriteBackDue(tenantId: string): Promise<void> {
    await svc.storage
      .table(TABLES.tenants)
      .updateEntity({ partitionKey: "tenant", rowKey: tenantId, refreshTokenWrittenAt: "2000-01-01T00:00:00.000Z" }, "Merge");
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    forgetAccessToken(tenantId);
  }

  it("serves access tokens from the cache: a second pull redeems nothing", async () => {
    const tenantId = await activeTenant(recent(3, "cache"));
    const anonymous = h.defender.requests(null).length;
    await pull(tenantId);
    const redeemed = h.entra.tokenCount(tenantId).refreshToken;
    await pull(tenantId);
    assert.equal(h.entra.tokenCount(tenantId).refreshToken, redeemed);
    assert.equal(h.defender.requests(null).length, anonymous, "every request carried a token");
  });

  it("keeps a cached access token until five minutes before it expires, then redeems a new one", async () => {
    const tenantId = await activeTenant(recent(3, "cache-expiry"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    forgetAccessToken(tenantId);
    const lifetime = h.entra.accessTokenLifetimeSec;
    h.entra.accessTokenLifetimeSec = 1800; // not the hour the app assumes when expires_in is missing
    try {
      const t0 = Date.now();
      await withClock(t0, () => pull(tenantId));
      const redeemed = h.entra.tokenCount(tenantId).refreshToken;
      await withClock(t0 + 25 * 60_000 - 1, () => pull(tenantId));
      assert.equal(h.entra.tokenCount(tenantId).refreshToken, redeemed, "still cached just before 25 minutes");
      await withClock(t0 + 25 * 60_000, () => pull(tenantId));
      assert.equal(h.entra.tokenCount(tenantId).refreshToken, redeemed + 1, "redeemed again five minutes before expiry");
    } finally {
      h.entra.accessTokenLifetimeSec = lifetime;
    }
  });

  it("replaces a cached access token that the API refuses (401) with a new one, and goes on", async () => {
    const tenantId = await activeTenant(recent(3, "cache-401"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    await pull(tenantId); // caches an access token
    const redeemed = h.entra.tokenCount(tenantId).refreshToken;
    // The API refuses the first token it sees from now on (the cached one), as it would a revoked one.
    const verify = h.entra.verifyAccessToken.bind(h.entra);
    let refused: string | undefined;
    h.entra.verifyAccessToken = async (token, audience) => {
      refused ??= token;
      return token === refused ? null : verify(token, audience);
    };
    try {
      await pull(tenantId);
    } finally {
      h.entra.verifyAccessToken = verify;
      forgetAccessToken(tenantId);
    }
    assert.ok(h.defender.requests(null).some((r) => r.status === 401), "the API refused the cached token");
    assert.equal(h.entra.tokenCount(tenantId).refreshToken, redeemed + 1, "one new token");
    assert.equal((await status(tenantId)).lastError, undefined);
  });

  it("does not write a token back when a re-consent changed the tenant during the pull", async () => {
    const tenantId = await activeTenant(recent(3, "wb-generation"));
    await makeWriteBackDue(tenantId);
    const name = refreshTokenSecretName(tenantId);
    duringTokenRead(async () => {
      assert.equal((await h.onboard(tenantId)).status, 200); // a re-consent: new generation, new version
    });
    await pull(tenantId);
    const versions = h.vault.inspect(name)!.versions;
    assert.equal(versions.filter((v) => v.enabled).length, 1, "only the re-consent's version is enabled");
    assert.equal(versions.at(-1)!.enabled, true, "the newest version is the consent's");
    assert.ok(!h.logs.some((l) => l.includes(`token.written-back tenantId=${tenantId}`)));
    const consented = h.entra.issuedRefreshTokens(tenantId);
    assert.ok(consented.includes(versions.at(-1)!.value));
  });

  it("never recovers a secret that was deleted while the pull ran", async () => {
    const tenantId = await activeTenant(recent(3, "wb-recover"));
    await makeWriteBackDue(tenantId);
    duringTokenRead(() => svc.vault.remove(tenantId));
    await pull(tenantId);
    assert.equal(h.vault.inspect(refreshTokenSecretName(tenantId))?.deleted, true, "the write-back did not recover it");
    assert.ok(!h.logs.some((l) => l.includes(`token.written-back tenantId=${tenantId}`)), "nothing was written back");
  });

  it("disables its written-back version when a re-consent lands during the write-back", async () => {
    const tenantId = await activeTenant(recent(3, "wb-etag"));
    await makeWriteBackDue(tenantId);
    const write = svc.vault.write.bind(svc.vault);
    svc.vault.write = async (...args) => {
      svc.vault.write = write; // the consent's own write goes straight through
      const version = await write(...args);
      assert.equal((await h.onboard(tenantId)).status, 200); // a re-consent between the write and the tenant update
      return version;
    };
    try {
      await pull(tenantId);
    } finally {
      svc.vault.write = write;
    }
    const row = await svc.storage.table(TABLES.tenants).getEntity<{ refreshTokenVersion?: string }>("tenant", tenantId);
    const enabled = h.vault.inspect(refreshTokenSecretName(tenantId))!.versions.filter((v) => v.enabled);
    assert.deepEqual(
      enabled.map((v) => v.version),
      [row.refreshTokenVersion],
      "only the consent's version is enabled",
    );
    assert.ok(!h.logs.some((l) => l.includes(`token.written-back tenantId=${tenantId}`)));
  });

  it("redeems the refresh-token version the tenant row names, not a newer one left in Key Vault", async () => {
    const tenantId = await activeTenant(recent(3, "pinned-version"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    // A version no consent recorded, e.g. a write-back that lost its race and crashed before disabling it.
    const stray = await svc.vault.write(tenantId, "not-a-refresh-token", { tenantId }, false);
    assert.ok(stray);
    forgetAccessToken(tenantId);
    await pull(tenantId);
    const after = await status(tenantId);
    assert.equal(after.status, "active");
    assert.equal(after.lastError, undefined, "the consent's token was redeemed");
    await assertInSync(tenantId);
  });

  it("marks a tenant whose refresh token is gone from Key Vault reconsent-required (RefreshTokenMissing)", async () => {
    const tenantId = await activeTenant(recent(3, "token-gone"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    await svc.vault.remove(tenantId); // out of band: the tenant row still says active
    forgetAccessToken(tenantId);
    await pull(tenantId);
    const after = await status(tenantId);
    assert.equal(after.status, "reconsent-required");
    assert.equal((after.lastError as { code: string }).code, "RefreshTokenMissing");
  });

  it("never writes a refresh token, or any token, into its logs", async () => {
    const tenantId = await activeTenant(recent(3, "wb-log"));
    await makeWriteBackDue(tenantId);
    const from = h.logs.length;
    await pull(tenantId);
    const lines = h.logs.slice(from);
    assert.ok(lines.some((l) => l.includes(`token.written-back tenantId=${tenantId}`)), "a write-back happened");
    for (const token of h.entra.issuedRefreshTokens(tenantId)) {
      assert.ok(!lines.some((l) => l.includes(token)), "no refresh token in the logs");
    }
  });

  it("does not mark a re-consented tenant reconsent-required when the old grant fails mid-pull", async () => {
    const tenantId = await activeTenant(recent(3, "generation"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    forgetAccessToken(tenantId);
    duringTokenRead(async () => {
      assert.equal((await h.onboard(tenantId)).status, 200); // a new consent lands...
      h.entra.revokeTenant(tenantId, 70008); // ...and the pull's old token is refused
    });
    await pull(tenantId);
    h.entra.restoreTenant(tenantId);
    assert.equal((await status(tenantId)).status, "active", "the pull's failure did not override the new consent");
  });

  it("does not rewrite unchanged alerts: a rerun leaves every row's Timestamp as it was", async () => {
    const tenantId = await activeTenant(recent(30, "unchanged"));
    await pull(tenantId);
    const stamps = async () => {
      const out = new Map<string, string>();
      const filter = odata`PartitionKey eq ${tenantId} and RowKey lt ${"~"}`;
      for await (const row of svc.storage.table(TABLES.alerts).listEntities({ queryOptions: { filter } })) {
        out.set(String(row.rowKey), String(row.timestamp));
      }
      return out;
    };
    const before = await stamps();
    await pull(tenantId);
    assert.deepEqual(await stamps(), before);
  });

  it("ends the run cleanly when Retry-After asks for more than two minutes", async () => {
    const tenantId = await activeTenant(recent(5, "long-retry"));
    h.defender.inject(tenantId, { status: 429, retryAfterSeconds: 120 }, 1);
    await pull(tenantId);
    assert.deepEqual(slept, [120_000], "two minutes are still waited for");
    assert.equal((await status(tenantId)).lastError, undefined);
    h.defender.inject(tenantId, { status: 429, retryAfterSeconds: 180 }, 1);
    await pull(tenantId);
    assert.ok(!slept.includes(180_000), "did not wait three minutes inside the run");
    const lastError = (await status(tenantId)).lastError as { code: string; message: string };
    assert.equal(lastError.code, "BudgetExhausted");
    assert.match(lastError.message, /asked to wait longer/);
    assert.ok(h.logs.some((l) => l.includes(`defender.throttled tenantId=${tenantId} status=429 waitMs=180000`)));
    await pull(tenantId);
    await assertInSync(tenantId);
  });

  it("backs off exponentially with full jitter after 5xx answers: random x 1, 2, 4, 8, 16 s", async () => {
    const tenantId = await activeTenant(recent(5, "backoff"));
    h.defender.inject(tenantId, { status: 503 }, 5);
    const random = svc.random;
    svc.random = () => 0.5;
    try {
      await pull(tenantId);
    } finally {
      svc.random = random;
    }
    assert.deepEqual(slept, [500, 1000, 2000, 4000, 8000]);
    await assertInSync(tenantId);
  });

  it("logs every retry with the status and the wait", async () => {
    const tenantId = await activeTenant(recent(5, "retry-log"));
    h.defender.inject(tenantId, { status: 503 }, 1);
    h.defender.inject(tenantId, { status: 429, retryAfterSeconds: 3 }, 1);
    await pull(tenantId);
    assert.ok(h.logs.some((l) => /defender\.retry tenantId=\S+ status=503 attempt=1 waitMs=\d+/.test(l) && l.includes(tenantId)));
    assert.ok(h.logs.some((l) => l.includes(`defender.retry tenantId=${tenantId} status=429 attempt=2 waitMs=3000`)));
  });

  it("follows @odata.nextLink under $top, but only on the API's own origin", async () => {
    const tenantId = await activeTenant(recent(25, "nextlink"));
    h.defender.clampTop = 10;
    try {
      await pull(tenantId);
      await assertInSync(tenantId);
      assert.ok(h.defender.requests(tenantId).some((r) => r.query.$skip), "the nextLink was followed");
      const other = await activeTenant(recent(25, "nextlink-foreign"));
      h.defender.nextLinkOrigin = "https://attacker.localhost";
      await pull(other);
      const lastError = (await status(other)).lastError as { code: string; message: string };
      assert.equal(lastError.code, "UntrustedNextLink");
      assert.match(lastError.message, /another origin/);
    } finally {
      h.defender.clampTop = undefined;
      h.defender.nextLinkOrigin = undefined;
    }
  });

  it("writes a new tenant's alerts in full transactions: 500 alerts in ceil(500 / 49) = 11, only the last one short", async () => {
    const tenantId = await activeTenant(recent(500, "full-transactions"));
    // One window, read in one answer (this file's page size is 40).
    const { pull: settings } = svc.config;
    const pageSize = settings.pageSize;
    settings.pageSize = 10_000;
    const table = svc.storage.table(TABLES.alerts);
    const submit = table.submitTransaction.bind(table);
    /** Alerts per transaction that wrote alert rows (each also creates one `~n` count row). */
    const sizes: number[] = [];
    table.submitTransaction = async (actions, options) => {
      if (actions.some(([kind, entity]) => kind === "create" && entity.rowKey.startsWith(COUNT_PREFIX))) {
        sizes.push(actions.filter(([, entity]) => !entity.rowKey.startsWith("~")).length);
      }
      return submit(actions, options);
    };
    try {
      await pull(tenantId);
    } finally {
      table.submitTransaction = submit;
      settings.pageSize = pageSize;
    }
    // The items arrive in parser batches of 100; writing whatever had piled up (200 alerts)
    // made five transactions where four fit, the fifth of 4 alerts.
    assert.deepEqual(sizes.toSorted((x, y) => y - x), [...Array(10).fill(49), 10]);
    assert.equal((await storedRows(tenantId)).length, 500);
  });

  it("reads a window of 2.2 x the page size in ceil(N / page) + 1 = 4 calls: its full answer, then three slices, looking up no alert", async () => {
    const tenantId = await activeTenant(recent(Math.round(PAGE * 2.2), "three-slices"));
    // A new tenant's slices compare with what the full answer wrote, not with storage.
    const table = svc.storage.table(TABLES.alerts);
    const getEntity = table.getEntity.bind(table);
    let lookups = 0;
    table.getEntity = (async (partitionKey: string, rowKey: string, options?: object) => {
      if (!rowKey.startsWith("~")) lookups++;
      return getEntity(partitionKey, rowKey, options);
    }) as typeof table.getEntity;
    try {
      await pull(tenantId);
    } finally {
      table.getEntity = getEntity;
    }
    assert.equal(lookups, 0, "alert rows looked up one by one");
    const reads = h.defender.requests(tenantId).filter((r) => r.path === "/api/alerts" && r.query.$expand === "evidence");
    assert.deepEqual(
      reads.map((r) => r.itemCount < PAGE),
      [false, true, true, true],
      "one full answer, then three slices that each came back complete",
    );
    assert.equal((await storedRows(tenantId)).length, Math.round(PAGE * 2.2));
  });

  it("renews its lease at checkpoints, so a pull longer than the lease completes", async () => {
    const tenantId = await activeTenant(recent(PAGE * 4, "renew"));
    let at = Date.now();
    const realNow = svc.now;
    svc.now = () => new Date(at);
    // Each Defender answer takes four (virtual) minutes: the whole pull outlasts a 12-minute lease.
    h.defender.beforeResponse = ({ tenantId: t }) => {
      if (t === tenantId) at += 4 * 60_000;
    };
    try {
      await pull(tenantId);
    } finally {
      h.defender.beforeResponse = undefined;
      svc.now = realNow;
    }
    assert.ok(at - Date.now() > 12 * 60_000, "the pull outlasted one lease");
    assert.ok(!h.logs.some((l) => l.includes(`pull.lease-lost tenantId=${tenantId}`)));
    await assertInSync(tenantId);
  });

  it("stops at its next write or checkpoint once its lease is within 30 s of its end, even when no other run took it", async () => {
    const t0 = Date.now();
    let at = t0;
    const realNow = svc.now;
    svc.now = () => new Date(at);
    const lastThirtySeconds = t0 + 12 * 60_000 - 30_000; // the lease is 12 minutes (functionTimeout + 2)
    // A: the first Defender answer takes until the lease's last 30 s; nothing may be written after it.
    const a = await activeTenant(recent(10, "expiring-read"));
    h.defender.beforeResponse = ({ tenantId: t }) => {
      if (t === a) at = lastThirtySeconds;
    };
    // B: the write of the first page takes that long; the checkpoint after it may not land.
    const b = await activeTenant(recent(10, "expiring-write"));
    const table = svc.storage.table(TABLES.alerts);
    const submit = table.submitTransaction.bind(table);
    table.submitTransaction = async (actions, options) => {
      const result = await submit(actions, options);
      if (actions.some(([, entity]) => entity.partitionKey === b)) at = lastThirtySeconds;
      return result;
    };
    try {
      at = t0;
      await pull(a);
      at = t0;
      await pull(b);
      // The lease is free exactly at its end: the next pull of A takes it.
      at = t0 + 12 * 60_000;
      h.defender.beforeResponse = undefined;
      await pull(a);
    } finally {
      h.defender.beforeResponse = undefined;
      table.submitTransaction = submit;
      svc.now = realNow;
    }
    for (const t of [a, b]) assert.ok(h.logs.some((l) => l.includes(`pull.lease-lost tenantId=${t}`)), t);
    assert.equal(h.logs.filter((l) => l.includes(`pull.succeeded tenantId=${a}`)).length, 1, "only A's last pull succeeded");
    assert.ok(!h.logs.some((l) => l.includes(`pull.succeeded tenantId=${b}`)));
    assert.ok((await storedRows(b)).length > 0, "B wrote its page before the lease ran short");
    assert.equal((await syncRow(b)).watermark, undefined, "B's checkpoint did not land");
    await assertInSync(a);
  });

  it("lets only one of two runs that find the lease free at once take it (the ETag decides)", async () => {
    const tenantId = await activeTenant(recent(5, "acquire-race"));
    await pull(tenantId); // the sync-state row exists, its lease released
    const sync = svc.storage.table(TABLES.syncState);
    const update = sync.updateEntity.bind(sync);
    let open: () => void = () => {};
    const bothRead = new Promise<void>((resolve) => {
      open = resolve;
    });
    let acquisitions = 0;
    // Both runs have read the free lease before either writes its claim.
    sync.updateEntity = async (entity, mode, options) => {
      const { leaseId } = entity as { leaseId?: unknown };
      if (entity.partitionKey === tenantId && typeof leaseId === "string" && leaseId !== "") {
        if (++acquisitions === 2) open();
        await bothRead;
      }
      return update(entity, mode, options);
    };
    const from = h.logs.length;
    try {
      await Promise.all([pull(tenantId), pull(tenantId)]);
    } finally {
      sync.updateEntity = update;
    }
    const lines = h.logs.slice(from);
    assert.equal(lines.filter((l) => l.includes(`pull.succeeded tenantId=${tenantId}`)).length, 1);
    assert.equal(lines.filter((l) => l.includes(`pull.skipped tenantId=${tenantId} reason=already-running`)).length, 1);
  });

  it("fails the message when storage fails while taking the lease, so the host retries it (not skipped as busy)", async () => {
    const tenantId = await activeTenant(recent(3, "acquire-503"));
    await pull(tenantId); // the sync-state row exists, its lease released
    const sync = svc.storage.table(TABLES.syncState);
    const update = sync.updateEntity.bind(sync);
    let failed = false;
    sync.updateEntity = async (entity, mode, options) => {
      const { leaseId } = entity as { leaseId?: unknown };
      if (!failed && entity.partitionKey === tenantId && typeof leaseId === "string" && leaseId !== "") {
        failed = true;
        throw Object.assign(new Error("storage unavailable"), { statusCode: 503 });
      }
      return update(entity, mode, options);
    };
    const from = h.logs.length;
    try {
      await assert.rejects(pull(tenantId));
    } finally {
      sync.updateEntity = update;
    }
    assert.ok(failed, "the acquisition was the write that failed");
    assert.ok(!h.logs.slice(from).some((l) => l.includes(`pull.skipped tenantId=${tenantId}`)), "not reported as busy");
    await pull(tenantId); // the retry finds the lease free
    assert.equal((await status(tenantId)).lastError, undefined);
  });

  it("runs no second pull while a live lease is held (not only when the acquisitions race)", async () => {
    const tenantId = await activeTenant(recent(10, "held"));
    let release: () => void = () => {};
    const blocked = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered: () => void = () => {};
    const inside = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let held = false;
    h.defender.beforeResponse = async ({ tenantId: t }) => {
      // Only the first request waits, so a second pull that ran anyway fails the test instead of hanging it.
      if (t !== tenantId || held) return;
      held = true;
      entered();
      await blocked;
    };
    const first = pull(tenantId);
    try {
      await untilOrEnd(inside, first); // the first pull holds the lease and waits in Defender
      const calls = h.defender.requests(tenantId).length;
      await pull(tenantId); // sequential, so no ETag race can mask a missing check
      assert.equal(h.defender.requests(tenantId).length, calls, "the second pull made no call");
      assert.ok(h.logs.some((l) => l.includes(`pull.skipped tenantId=${tenantId} reason=already-running`)));
    } finally {
      h.defender.beforeResponse = undefined;
      release();
      await first;
    }
    await assertInSync(tenantId);
  });

  it("writes pull.succeeded and pull.failed lines in the form the alert rules match", async () => {
    const ok = await activeTenant(recent(2, "names-ok"));
    await pull(ok);
    const watermark = (await status(ok)).watermark as string;
    assert.ok(watermark);
    assert.ok(h.logs.some((l) => l.startsWith(`[information] pull.succeeded tenantId=${ok} alerts=2 watermark=${watermark} `)));
    // Every way a pull fails: the API refuses, the token endpoint refuses, storage fails (the host retries).
    const bad = await activeTenant(recent(2, "names-bad"));
    h.defender.forbid(bad);
    await pull(bad);
    h.defender.allow(bad);
    assert.ok(h.logs.some((l) => l.startsWith(`[warning] pull.failed tenantId=${bad} code=Forbidden`)));
    const noApp = await activeTenant(recent(2, "names-token"));
    const { forgetAccessToken } = await import("../shared/collection/tokens.js");
    forgetAccessToken(noApp);
    h.entra.missingServicePrincipal(noApp);
    await pull(noApp);
    assert.ok(h.logs.some((l) => l.startsWith(`[warning] pull.failed tenantId=${noApp} code=AADSTS500011`)));
    const broken = await activeTenant(recent(2, "names-storage"));
    const alerts = svc.storage.table(TABLES.alerts);
    const submit = alerts.submitTransaction.bind(alerts);
    alerts.submitTransaction = async () => {
      throw Object.assign(new Error("storage unavailable"), { statusCode: 503 });
    };
    try {
      await assert.rejects(pull(broken));
    } finally {
      alerts.submitTransaction = submit;
    }
    assert.ok(h.logs.some((l) => l.startsWith(`[error] pull.failed tenantId=${broken} code=InternalError error=`)));
  });
});

describe("upgrading from pull state on the tenant row", () => {
  it("builds the time index and the exact count once, resumes from the old watermark, and writes no duplicates", async () => {
    const alerts = recent(12, "upgrade");
    const tenantId = await activeTenant(alerts);
    const { encodeAlert } = await import("../shared/collection/alert-store.js");
    // Rows as the previous version wrote them: no index rows, state on the tenant row.
    const table = svc.storage.table(TABLES.alerts);
    for (const alert of alerts) {
      const json = JSON.stringify(alert);
      const { row } = encodeAlert(tenantId, { json, id: alert.id, lastUpdateTime: alert.lastUpdateTime, fields: JSON.parse(json) });
      await table.upsertEntity(row, "Replace");
    }
    const newestOld = alerts
      .map((a) => a.lastUpdateTime)
      .sort()
      .at(-1)!;
    await svc.storage
      .table(TABLES.tenants)
      .updateEntity({ partitionKey: "tenant", rowKey: tenantId, watermark: newestOld, alertsStored: 11 }, "Merge");
    h.defender.touch(tenantId, [alerts[0]!.id], new Date(Date.now() - 500), { status: "Resolved" });
    await pull(tenantId);
    await assertInSync(tenantId);
    const s = await status(tenantId);
    assert.equal(s.alertsStored, 12, "the exact count replaced the old estimate");
    const index = [];
    const filter = odata`PartitionKey eq ${tenantId} and RowKey ge ${"~i|"} and RowKey lt ${"~i}"}`;
    for await (const row of table.listEntities({ queryOptions: { filter } })) index.push(row);
    assert.equal(index.length, 12, "one index row per alert");
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
