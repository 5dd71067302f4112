import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { resetHealthCache } from "../shared/platform/health.js";
import { refreshTokenSecretName } from "../shared/platform/token-vault.js";
import { TABLES } from "../shared/platform/storage.js";
import { services } from "../shared/platform/services.js";
import { CLIENT_ID, CLIENT_SECRET, type Harness, openLink, PUBLIC_BASE_URL, pathOf, startHarness } from "./support/harness.js";
import type { HttpResult } from "./support/functions.js";

let h: Harness;
/** Every response body the tests saw, checked for secrets at the end. */
const seen: string[] = [];

async function call(name: string, args: Parameters<Harness["http"]>[1]): Promise<HttpResult> {
  const result = await h.http(name, args);
  // consent/start must hand state and the PKCE challenge to Entra in its Location header.
  seen.push(result.text, name === "consent-start" ? "" : JSON.stringify(result.headers));
  return result;
}

async function register(tenantId: string, extra: Record<string, unknown> = {}): Promise<HttpResult> {
  return call("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId, ...extra }) });
}

async function tenantStatus(tenantId: string): Promise<Record<string, unknown>> {
  return (await call("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } })).json as Record<string, unknown>;
}

/** Registers, opens the link and gets Entra's redirect back to the callback. */
async function consentTo(tenantId: string, options: Parameters<Harness["entra"]["consent"]>[1] = {}) {
  const registered = await register(tenantId);
  const consentUrl = (registered.json as { consentUrl: string }).consentUrl;
  const authorize = await openLink(h, consentUrl);
  const callbackUrl = await h.entra.consent(authorize, options);
  return { consentUrl, authorize, callbackUrl };
}

async function callback(url: string): Promise<HttpResult> {
  return call("consent-callback", { path: pathOf(url) });
}

function secretOf(tenantId: string) {
  return h.vault.inspect(refreshTokenSecretName(tenantId));
}

function assertPage(result: HttpResult, status: number, text: RegExp) {
  assert.equal(result.status, status, result.text);
  assert.match(result.headers["content-type"] ?? "", /text\/html/);
  assert.equal(result.headers["referrer-policy"], "no-referrer");
  assert.equal(result.headers["cache-control"], "no-store");
  assert.match(result.headers["content-security-policy"] ?? "", /default-src 'none'/);
  assert.doesNotMatch(result.text, /<script|src=|href=/i);
  assert.match(result.text, text);
}

before(async () => {
  h = await startHarness();
});
after(async () => {
  await h?.stop();
});

describe("operator API: tenants", () => {
  it("registers a tenant (201), then refreshes its link (200)", async () => {
    const tenantId = h.newTenant();
    const created = await register(tenantId.toUpperCase(), { displayName: "Contoso" });
    assert.equal(created.status, 201);
    const body = created.json as Record<string, string>;
    assert.equal(body.tenantId, tenantId);
    assert.equal(body.status, "pending");
    assert.equal(body.displayName, "Contoso");
    assert.ok(body.consentUrl?.startsWith(`${PUBLIC_BASE_URL}/api/consent/start?`));
    const expires = Date.parse(body.consentUrlExpiresAt ?? "");
    assert.ok(Math.abs(expires - Date.now() - 7 * 24 * 3600_000) < 60_000);
    const again = await register(tenantId);
    assert.equal(again.status, 200);
    assert.notEqual((again.json as Record<string, string>).consentUrl, body.consentUrl);
    // The older link was replaced.
    const old = await call("consent-start", { path: pathOf(body.consentUrl!) });
    assertPage(old, 410, /replaced|already used/);
    const list = (await call("tenants-list", { path: "tenants" })).json as { tenants: { tenantId: string }[] };
    assert.ok(list.tenants.some((t) => t.tenantId === tenantId));
  });

  it("rejects bad input with 400, 413 or 415 and a JSON error", async () => {
    const cases: [string | undefined, number, string, Record<string, string>?][] = [
      [JSON.stringify({ tenantId: "not-a-guid" }), 400, "InvalidTenantId"],
      ["{not json", 400, "InvalidJson"],
      ["[1,2]", 400, "InvalidBody"],
      [JSON.stringify({ tenantId: "6b1f5c3e-0000-4000-8000-000000000001", cloud: "mars" }), 400, "InvalidCloud"],
      [JSON.stringify({ tenantId: "6b1f5c3e-0000-4000-8000-000000000001", extra: 1 }), 400, "UnknownField"],
      [JSON.stringify({ tenantId: "6b1f5c3e-0000-4000-8000-000000000001", displayName: "x".repeat(20_000) }), 413, "PayloadTooLarge"],
      ["tenantId=x", 415, "UnsupportedMediaType", { "content-type": "application/x-www-form-urlencoded" }],
    ];
    for (const [body, status, code, headers] of cases) {
      const result = await call("tenants-create", { method: "POST", path: "tenants", body, ...(headers ? { headers } : {}) });
      assert.equal(result.status, status, `${body?.slice(0, 40)} -> ${result.text}`);
      assert.equal((result.json as { error: { code: string } }).error.code, code);
    }
    const missing = await call("tenants-get", { path: "tenants/6b1f5c3e-0000-4000-8000-000000000009", params: { tenantId: "6b1f5c3e-0000-4000-8000-000000000009" } });
    assert.equal(missing.status, 404);
    const bad = await call("tenants-get", { path: "tenants/nope", params: { tenantId: "nope" } });
    assert.equal(bad.status, 400);
  });
});

describe("consent flow", () => {
  it("onboards end to end: PKCE redirect, code redemption, token in Key Vault, tenant active", async () => {
    const tenantId = h.newTenant();
    const { consentUrl, authorize } = await (async () => {
      const registered = await register(tenantId, { displayName: "Fabrikam <b>&</b>" });
      const url = (registered.json as { consentUrl: string }).consentUrl;
      return { consentUrl: url, authorize: await openLink(h, url) };
    })();
    const auth = new URL(authorize);
    assert.equal(auth.origin + auth.pathname, `${h.entra.url}/${tenantId}/oauth2/v2.0/authorize`);
    const q = auth.searchParams;
    assert.equal(q.get("client_id"), CLIENT_ID);
    assert.equal(q.get("response_type"), "code");
    assert.equal(q.get("redirect_uri"), `${PUBLIC_BASE_URL}/api/consent/callback`);
    assert.equal(q.get("code_challenge_method"), "S256");
    assert.match(q.get("code_challenge") ?? "", /^[\w-]{43}$/);
    assert.deepEqual(
      q.get("scope")?.split(" ").sort(),
      ["https://api.securitycenter.microsoft.com/.default", "offline_access", "openid", "profile"],
    );
    assert.ok((q.get("state") ?? "").length >= 32);
    assert.ok((q.get("nonce") ?? "").length >= 32);

    const result = await callback(await h.entra.consent(authorize));
    assertPage(result, 200, /Fabrikam &lt;b&gt;&amp;&lt;&#47;b&gt; is now connected/);
    const secret = secretOf(tenantId);
    assert.ok(secret && !secret.deleted);
    assert.equal(secret.versions.length, 1);
    assert.ok(h.entra.issuedRefreshTokens(tenantId).includes(secret.versions[0]!.value));
    const status = await tenantStatus(tenantId);
    assert.equal(status.status, "active");
    assert.equal(status.consentedBy, `admin@${tenantId.slice(0, 8)}.example`);
    assert.ok(status.consentedAt);
    // The link stops working once consent succeeded.
    assertPage(await call("consent-start", { path: pathOf(consentUrl) }), 410, /already used/);
  });

  it("shows an error page and stores nothing when the admin cancels", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId, { decision: "cancel" });
    assert.equal(new URL(callbackUrl).searchParams.get("error"), "access_denied");
    assertPage(await callback(callbackUrl), 400, /Consent was not given/);
    assert.equal(secretOf(tenantId), undefined);
    assert.equal((await tenantStatus(tenantId)).status, "pending");
  });

  it("rejects a missing, unknown or replayed state", async () => {
    assertPage(await callback(`${PUBLIC_BASE_URL}/api/consent/callback?code=abc`), 400, /state/);
    assertPage(await callback(`${PUBLIC_BASE_URL}/api/consent/callback?code=abc&state=forged`), 400, /unknown or was already used/);
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId);
    assertPage(await callback(callbackUrl), 200, /now connected/);
    assertPage(await callback(callbackUrl), 400, /unknown or was already used/);
    assert.equal(secretOf(tenantId)?.versions.length, 1);
  });

  it("lets exactly one of two concurrent callbacks with one state win", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId);
    const results = await Promise.all([callback(callbackUrl), callback(callbackUrl)]);
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 400]);
    assert.equal(secretOf(tenantId)?.versions.length, 1);
  });

  it("rejects an expired state and an expired link", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl, consentUrl } = await consentTo(tenantId);
    const states = (await services()).storage.table(TABLES.consentStates);
    for await (const row of states.listEntities<{ tenantId: string }>()) {
      if (row.tenantId === tenantId) {
        await states.updateEntity({ partitionKey: row.partitionKey!, rowKey: row.rowKey!, expiresAt: "2000-01-01T00:00:00.000Z" }, "Merge");
      }
    }
    assertPage(await callback(callbackUrl), 400, /expired/);
    const tenants = (await services()).storage.table(TABLES.tenants);
    await tenants.updateEntity({ partitionKey: "tenant", rowKey: tenantId, consentLinkExpiresAt: "2000-01-01T00:00:00.000Z" }, "Merge");
    assertPage(await call("consent-start", { path: pathOf(consentUrl) }), 410, /expired/);
    assert.equal(secretOf(tenantId), undefined);
  });

  it("rejects a code the token endpoint refuses", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId);
    const tampered = new URL(callbackUrl);
    tampered.searchParams.set("code", "forged-code");
    assertPage(await callback(tampered.href), 400, /did not accept/);
    assert.equal(secretOf(tenantId), undefined);
  });

  it("rejects an account of another tenant", async () => {
    const tenantId = h.newTenant();
    const other = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId, { idTokenTenant: other });
    assertPage(await callback(callbackUrl), 403, /wrong organisation/);
    assert.equal(secretOf(tenantId), undefined);
    assert.equal(secretOf(other), undefined);
    assert.equal((await tenantStatus(tenantId)).status, "pending");
  });

  it("rejects a token response without a refresh token", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId, { omitRefreshToken: true });
    assertPage(await callback(callbackUrl), 400, /Offline access/);
    assert.equal(secretOf(tenantId), undefined);
  });

  it("names the missing Defender role when the token cannot read alerts", async () => {
    const tenantId = h.newTenant();
    h.defender.forbid(tenantId);
    const { callbackUrl } = await consentTo(tenantId);
    assertPage(await callback(callbackUrl), 403, /View Data/);
    assert.equal(secretOf(tenantId), undefined);
    assert.equal((await tenantStatus(tenantId)).status, "pending");
    h.defender.allow(tenantId);
  });

  it("stores nothing and says so when Key Vault refuses the write", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId);
    h.vault.failNext(1, 403);
    assertPage(await callback(callbackUrl), 500, /Nothing was stored/);
    assert.equal(secretOf(tenantId), undefined);
    assert.equal((await tenantStatus(tenantId)).status, "pending");
    assert.ok(h.logs.some((l) => l.includes("page.failed error=RestError")));
  });

  it("rejects an incomplete or unknown consent link", async () => {
    assertPage(await call("consent-start", { path: "consent/start" }), 400, /incomplete/);
    assertPage(
      await call("consent-start", { path: "consent/start?tenant=6b1f5c3e-0000-4000-8000-00000000aaaa&link=x" }),
      404,
      /not valid/,
    );
  });
});

describe("offboarding and re-onboarding", () => {
  it("offboards (token soft-deleted), then onboards again despite soft delete and purge protection", async () => {
    const tenantId = h.newTenant();
    const first = await consentTo(tenantId);
    assert.equal((await callback(first.callbackUrl)).status, 200);
    const removed = await call("tenants-delete", { method: "DELETE", path: `tenants/${tenantId}`, params: { tenantId } });
    assert.equal(removed.status, 204);
    assert.equal(secretOf(tenantId)?.deleted, true);
    assert.equal((await tenantStatus(tenantId)).status, "offboarded");

    const second = await consentTo(tenantId);
    assert.equal((await tenantStatus(tenantId)).status, "pending");
    assertPage(await callback(second.callbackUrl), 200, /now connected/);
    const secret = secretOf(tenantId)!;
    assert.equal(secret.deleted, false);
    assert.equal(secret.versions.length, 2);
    assert.deepEqual(secret.versions.map((v) => v.enabled), [false, true]);
    assert.equal((await tenantStatus(tenantId)).status, "active");
  });

  it("disables older versions when a tenant consents again", async () => {
    const tenantId = h.newTenant();
    assert.equal((await callback((await consentTo(tenantId)).callbackUrl)).status, 200);
    assert.equal((await callback((await consentTo(tenantId)).callbackUrl)).status, 200);
    assert.deepEqual(secretOf(tenantId)?.versions.map((v) => v.enabled), [false, true]);
  });

  it("answers 404 for an unknown tenant", async () => {
    const id = "6b1f5c3e-0000-4000-8000-00000000bbbb";
    assert.equal((await call("tenants-delete", { method: "DELETE", path: `tenants/${id}`, params: { tenantId: id } })).status, 404);
  });
});

describe("health", () => {
  it("is ok when storage and Key Vault answer, 503 when the vault fails, and cached", async () => {
    resetHealthCache();
    const ok = await call("health", { path: "health" });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.json, { status: "ok" });
    resetHealthCache();
    h.vault.failNext(1, 403);
    const bad = await call("health", { path: "health" });
    assert.equal(bad.status, 503);
    assert.deepEqual(bad.json, { status: "unhealthy", failing: ["keyVault"] });
    const before = h.vault.requestLog.length;
    await call("health", { path: "health" });
    assert.equal(h.vault.requestLog.length, before, "a cached answer does not call Key Vault");
    resetHealthCache();
  });
});

describe("secrets never leak", () => {
  it("no token, code, verifier, state or client secret appears in any log line or response", () => {
    const secrets = [...h.entra.secretsSeen(), CLIENT_SECRET].filter((s) => s.length >= 8);
    assert.ok(secrets.length > 20, "the flows above issued codes and tokens");
    const haystacks = [...h.logs, ...seen];
    for (const secret of secrets) {
      for (const text of haystacks) assert.ok(!text.includes(secret), `a secret leaked into: ${text.slice(0, 120)}`);
    }
  });
});
