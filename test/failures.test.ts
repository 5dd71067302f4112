import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { recordClientCredential, resetHealthCache } from "../shared/platform/health.js";
import { HandlerFailure } from "../shared/platform/http.js";
import { type Services, services } from "../shared/platform/services.js";
import { refreshTokenSecretName } from "../shared/platform/token-vault.js";
import type { HttpResult } from "./support/functions.js";
import { CLIENT_ID, CLIENT_SECRET, type Harness, openLink, PUBLIC_BASE_URL, pathOf, startHarness } from "./support/harness.js";

/**
 * Every failure names its cause to the person who can act on it: the customer's page, the
 * tenant's lastError, health, and the log; and no raw error leaves a handler.
 */

let h: Harness;
let svc: Services;

async function register(tenantId: string): Promise<string> {
  const result = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId }) });
  assert.ok(result.status === 201 || result.status === 200, result.text);
  return (result.json as { consentUrl: string }).consentUrl;
}

async function lastError(tenantId: string): Promise<{ code: string; message: string } | undefined> {
  const result = await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } });
  return (result.json as { lastError?: { code: string; message: string } }).lastError;
}

async function healthDetails(): Promise<{ status: string; failing: string[]; causes: { part: string; code: string; since: string }[] }> {
  return (await h.http("health-details", { path: "health/details" })).json as never;
}

function page(result: HttpResult, status: number): string {
  assert.equal(result.status, status, result.text);
  assert.match(result.headers["content-type"] ?? "", /text\/html/);
  return result.text.replace(/&#39;/g, "'");
}

before(async () => {
  h = await startHarness();
  svc = await services();
});
after(async () => {
  await h?.stop();
});

describe("the customer's page, lastError and the log name Entra's code", () => {
  it("a link naming a tenant Entra does not know (AADSTS90002): 'the link is wrong, ask your provider'", async () => {
    const unknown = "6b1f5c3e-0000-4000-8000-0000000090a3"; // not in the fake Entra
    h.entra.failNext(1, { endpoint: "discovery", status: 503 }); // so registration cannot check it
    const consentUrl = await register(unknown);
    const text = page(await h.http("consent-start", { path: pathOf(consentUrl) }), 400);
    assert.match(text, /link is wrong/i);
    assert.match(text, /AADSTS90002/);
    assert.match(text, /ask your service provider/i);
    assert.doesNotMatch(text, /try again in a few minutes/);
    assert.equal((await lastError(unknown))?.code, "AADSTS90002");
    assert.ok(h.logs.some((l) => l.includes(`consent.failed tenantId=${unknown} reason=tenant-not-found code=AADSTS90002`)));
  });

  it("a lasting refusal at the token endpoint (AADSTS500011): the code, and no retry advice", async () => {
    const tenantId = h.newTenant();
    const authorize = await openLink(h, await register(tenantId));
    h.entra.missingServicePrincipal(tenantId);
    try {
      const text = page(await h.http("consent-callback", { path: pathOf(await h.entra.consent(authorize)) }), 400);
      assert.match(text, /AADSTS500011/);
      assert.match(text, /ask your service provider/i);
      assert.doesNotMatch(text, /retry/i);
      assert.equal((await lastError(tenantId))?.code, "AADSTS500011");
      assert.ok(h.logs.some((l) => l.includes(`consent.failed tenantId=${tenantId} reason=tenant-refused code=AADSTS500011`)));
      assert.equal(h.vault.inspect(refreshTokenSecretName(tenantId)), undefined);
    } finally {
      h.entra.restoreTenant(tenantId);
    }
  });
});

describe("the app's own credential (invalid_client) during consent", () => {
  it("tells the customer the provider must fix its configuration, and health fails at once", async () => {
    resetHealthCache();
    assert.equal((await h.http("health", { path: "health" })).status, 200); // primes the cached Key Vault probe
    const tenantId = h.newTenant();
    const authorize = await openLink(h, await register(tenantId));
    const callbackUrl = await h.entra.consent(authorize);
    // The provider's secret is wrong: Entra answers 401 invalid_client AADSTS7000215.
    h.entra.registerApp({ clientId: CLIENT_ID, clientSecret: "a-different-secret", redirectUris: [`${PUBLIC_BASE_URL}/api/consent/callback`] });
    try {
      const text = page(await h.http("consent-callback", { path: pathOf(callbackUrl) }), 500);
      assert.match(text, /service provider must fix its configuration/i);
      assert.match(text, /AADSTS7000215/);
      assert.doesNotMatch(text, /retry|try again|open the consent link again/i);
      assert.ok(h.logs.some((l) => l.includes("app.credential.failed code=AADSTS7000215")));
      assert.equal((await lastError(tenantId))?.code, "AADSTS7000215");
      // Health on this instance, without waiting for any cache.
      const health = await h.http("health", { path: "health" });
      assert.equal(health.status, 503);
      assert.deepEqual(health.json, { status: "unhealthy" });
      const details = await healthDetails();
      assert.deepEqual(details.failing, ["clientCredential"]);
      assert.equal(details.causes[0]?.code, "AADSTS7000215");
      assert.ok(h.logs.some((l) => l.includes("health.failing part=clientCredential setting=MSSP_CLIENT_SECRET code=AADSTS7000215")));
    } finally {
      h.entra.registerApp({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [`${PUBLIC_BASE_URL}/api/consent/callback`] });
    }
    // The next consent proves the credential works again.
    const other = h.newTenant();
    const again = await h.http("consent-callback", { path: pathOf(await h.entra.consent(await openLink(h, await register(other)))) });
    assert.equal(again.status, 200, again.text);
    assert.deepEqual((await h.http("health", { path: "health" })).json, { status: "ok" });
  });

  it("reads the credential state from storage on every call, so another instance's finding shows at once", async () => {
    resetHealthCache();
    assert.equal((await h.http("health", { path: "health" })).status, 200);
    // What another instance's pull or consent writes when Entra rejects the secret.
    await recordClientCredential(svc, true, "AADSTS7000222");
    try {
      assert.equal((await h.http("health", { path: "health" })).status, 503);
      const details = await healthDetails();
      assert.deepEqual(details.causes.map((c) => `${c.part} ${c.code}`), ["clientCredential AADSTS7000222"]);
    } finally {
      await recordClientCredential(svc, false);
    }
    assert.equal((await h.http("health", { path: "health" })).status, 200);
  });
});

describe("health logs why it fails", () => {
  it("once per cause, naming the part and setting, and once when it recovers", async () => {
    resetHealthCache();
    const realNow = svc.now;
    let offset = 0;
    svc.now = () => new Date(realNow().getTime() + offset);
    const logsBefore = h.logs.length;
    try {
      h.vault.failNext(2, 403);
      for (let i = 0; i < 2; i++) {
        assert.equal((await h.http("health", { path: "health" })).status, 503);
        offset += 31_000; // the next call probes Key Vault again
      }
      assert.equal((await h.http("health", { path: "health" })).status, 200);
    } finally {
      svc.now = realNow;
    }
    const lines = h.logs.slice(logsBefore).filter((l) => l.includes("health."));
    assert.equal(lines.length, 2, lines.join("\n"));
    assert.match(lines[0]!, /health\.failing part=keyVault setting=KEY_VAULT_URL code=RestError\/\w+\/403$/);
    assert.match(lines[1]!, /health\.recovered part=keyVault/);
    assert.ok(!lines.join("\n").includes(h.vault.url), "names the setting, not its value");
  });
});

describe("no raw error leaves a handler", () => {
  it("the queue worker logs one sanitized line and throws only the event and the error class", async () => {
    const tenantId = h.newTenant();
    h.defender.setAlerts(tenantId, []);
    const onboarded = await h.onboard(tenantId);
    assert.equal(onboarded.status, 200, onboarded.text);
    h.vault.failNext(2, 403); // reading the refresh token fails: the host must retry
    const thrown = await h.trigger("pull-worker", { tenantId }).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(thrown instanceof HandlerFailure, String(thrown));
    assert.match(thrown.message, /^pull\.worker-failed error=RestError\/\w+\/403$/);
    assert.equal(thrown.cause, undefined);
    assert.ok(h.logs.some((l) => new RegExp(`pull\\.worker-failed tenantId=${tenantId} error=RestError/\\w+/403`).test(l)));
  });

  it("the timer logs one sanitized line and throws only the event and the error class", async () => {
    const tenantId = h.newTenant();
    h.defender.setAlerts(tenantId, []);
    assert.equal((await h.onboard(tenantId)).status, 200);
    await svc.storage.pullQueue.delete(); // sending the tenant's message fails with 404
    try {
      const thrown = await h.trigger("pull-timer", { isPastDue: false }).then(
        () => undefined,
        (err: unknown) => err,
      );
      assert.ok(thrown instanceof HandlerFailure, String(thrown));
      assert.match(thrown.message, /^schedule\.failed error=RestError\/QueueNotFound\/404$/);
      assert.ok(h.logs.some((l) => l.includes("schedule.failed error=RestError/QueueNotFound/404")));
    } finally {
      await svc.storage.pullQueue.createIfNotExists();
    }
  });
});
