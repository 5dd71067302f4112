import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { TableClient } from "@azure/data-tables";
import { grantsRead, sourceAccess } from "../shared/collection/sources/index.js";
import { resetHealthCache } from "../shared/platform/health.js";
import { type Services, services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { refreshTokenSecretName } from "../shared/platform/token-vault.js";
import { CLIENT_ID, type Harness, openLink, PUBLIC_BASE_URL, pathOf, startHarness } from "./support/harness.js";
import type { HttpResult } from "./support/functions.js";
import { knownSecrets } from "./support/leaks.js";

let h: Harness;
let svc: Services;

async function call(name: string, args: Parameters<Harness["http"]>[1]): Promise<HttpResult> {
  return h.http(name, args);
}

async function register(tenantId: string, extra: Record<string, unknown> = {}): Promise<HttpResult> {
  return call("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId, ...extra }) });
}

async function tenantStatus(tenantId: string): Promise<Record<string, unknown> & { lastError?: { code: string; message: string } }> {
  return (await call("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } })).json as Record<string, unknown>;
}

/** Registers, opens the link and gets Entra's redirect back to the callback. */
async function consentTo(tenantId: string, options: Parameters<Harness["entra"]["consent"]>[1] = {}, extra: Record<string, unknown> = {}) {
  const registered = await register(tenantId, extra);
  assert.ok(registered.status === 200 || registered.status === 201, registered.text);
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
  assert.equal(result.headers["x-content-type-options"], "nosniff");
  assert.match(result.headers["strict-transport-security"] ?? "", /max-age=\d+/);
  assert.match(result.headers["content-security-policy"] ?? "", /default-src 'none'/);
  assert.doesNotMatch(result.text, /<script|src=|href=/i);
  assert.match(result.text, text);
}

/** Counts the storage operations the app makes while `run` runs (every table, every method). */
async function storageCalls(run: () => Promise<unknown>): Promise<string[]> {
  const calls: string[] = [];
  const table = svc.storage.table.bind(svc.storage);
  const methods = new Set(["getEntity", "listEntities", "createEntity", "deleteEntity", "updateEntity", "upsertEntity", "submitTransaction"]);
  svc.storage.table = (name) =>
    new Proxy(table(name), {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof prop !== "string" || !methods.has(prop) || typeof value !== "function") return value;
        return (...args: unknown[]) => {
          const options = args.find((a) => typeof a === "object" && a !== null && "queryOptions" in a) as
            | { queryOptions?: { filter?: string } }
            | undefined;
          calls.push(`${name}.${prop}${options?.queryOptions?.filter ? `(${options.queryOptions.filter})` : ""}`);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    }) as TableClient;
  try {
    await run();
  } finally {
    svc.storage.table = table;
  }
  return calls;
}

async function stateRows(tenantId: string): Promise<{ partitionKey: string; rowKey: string; expiresAt: string }[]> {
  const rows: { partitionKey: string; rowKey: string; expiresAt: string }[] = [];
  const table = svc.storage.table(TABLES.consentStates);
  for await (const row of table.listEntities<{ tenantId: string; expiresAt: string }>()) {
    if (row.tenantId === tenantId) rows.push({ partitionKey: row.partitionKey!, rowKey: row.rowKey!, expiresAt: row.expiresAt });
  }
  return rows;
}

before(async () => {
  h = await startHarness();
  svc = await services();
});
after(async () => {
  await h?.stop();
});

describe("operator API: tenants", () => {
  it("registers a tenant (201), then gives a pending tenant a fresh link (200) without relink", async () => {
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
    assertPage(old, 404, /replaced by a newer link/);
    const list = (await call("tenants-list", { path: "tenants" })).json as { tenants: { tenantId: string }[] };
    assert.ok(list.tenants.some((t) => t.tenantId === tenantId));
  });

  it("rejects bad input with 400, 413 or 415 and a JSON error", async () => {
    const cases: [string | undefined, number, string, Record<string, string>?][] = [
      [JSON.stringify({ tenantId: "not-a-guid" }), 400, "InvalidTenantId"],
      ["{not json", 400, "InvalidJson"],
      ["[1,2]", 400, "InvalidBody"],
      [JSON.stringify({ tenantId: "6b1f5c3e-0000-4000-8000-000000000001", cloud: "mars" }), 400, "InvalidCloud"],
      [JSON.stringify({ tenantId: "6b1f5c3e-0000-4000-8000-000000000001", relink: "yes" }), 400, "InvalidRelink"],
      [JSON.stringify({ tenantId: "6b1f5c3e-0000-4000-8000-000000000001", displayName: "x".repeat(257) }), 400, "InvalidDisplayName"],
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

  it("answers 422 TenantNotFound for a tenant Entra does not know (AADSTS90002) and registers nothing", async () => {
    const unknown = "6b1f5c3e-0000-4000-8000-0000000090a2"; // never added to the fake Entra
    const result = await register(unknown);
    assert.equal(result.status, 422, result.text);
    const error = (result.json as { error: { code: string; message: string } }).error;
    assert.equal(error.code, "TenantNotFound");
    assert.match(error.message, /AADSTS90002/);
    assert.equal((await call("tenants-get", { path: `tenants/${unknown}`, params: { tenantId: unknown } })).status, 404);
    assert.ok(h.logs.some((l) => l.includes(`tenant.registration-refused tenantId=${unknown} code=AADSTS90002`)));
  });

  it("registers anyway when Entra cannot be reached, and logs that it could not check", async () => {
    const tenantId = h.newTenant();
    h.entra.failNext(1, { endpoint: "discovery", status: 503 });
    const result = await register(tenantId);
    assert.equal(result.status, 201, result.text);
    assert.ok(h.logs.some((l) => l.includes(`tenant.discovery-unavailable tenantId=${tenantId} code=HTTP503`)));
  });

  it('needs "relink": true for an active or reconsent-required tenant (409 RelinkRequired), and changes nothing without it', async () => {
    const tenantId = h.newTenant();
    assert.equal((await callback((await consentTo(tenantId)).callbackUrl)).status, 200);
    const refused = await register(tenantId, { displayName: "Renamed" });
    assert.equal(refused.status, 409, refused.text);
    assert.equal((refused.json as { error: { code: string } }).error.code, "RelinkRequired");
    const unchanged = await tenantStatus(tenantId);
    assert.equal(unchanged.status, "active");
    assert.notEqual(unchanged.displayName, "Renamed");
    const relinked = await register(tenantId, { relink: true, displayName: "Renamed" });
    assert.equal(relinked.status, 200, relinked.text);
    assert.equal((relinked.json as { status: string }).status, "active", "still collecting until the new consent");
    assert.equal((relinked.json as { displayName: string }).displayName, "Renamed");

    await svc.storage.table(TABLES.tenants).updateEntity({ partitionKey: "tenant", rowKey: tenantId, status: "reconsent-required" }, "Merge");
    const reconsent = await register(tenantId);
    assert.equal((reconsent.json as { error: { code: string } }).error.code, "RelinkRequired");
    assert.equal((await register(tenantId, { relink: true })).status, 200);
  });

  it("never changes the cloud of a tenant that has been active (400 CloudImmutable), relink or not", async () => {
    const tenantId = h.newTenant();
    assert.equal((await callback((await consentTo(tenantId)).callbackUrl)).status, 200);
    const moved = await register(tenantId, { relink: true, cloud: "gcc-high" });
    assert.equal(moved.status, 400, moved.text);
    assert.equal((moved.json as { error: { code: string } }).error.code, "CloudImmutable");
    assert.equal((await tenantStatus(tenantId)).cloud, undefined);
    // Naming the cloud it already has is fine.
    assert.equal((await register(tenantId, { relink: true, cloud: "commercial" })).status, 200);
    // Also after offboarding: the tenant's token and alerts lived in that cloud.
    await call("tenants-delete", { method: "DELETE", path: `tenants/${tenantId}`, params: { tenantId } });
    const offboarded = await register(tenantId, { cloud: "dod" });
    assert.equal((offboarded.json as { error: { code: string } }).error.code, "CloudImmutable");
  });
});

describe("consent flow", () => {
  it("onboards end to end: PKCE redirect, code redemption, token in Key Vault, tenant active", async () => {
    const tenantId = h.newTenant();
    const registered = await register(tenantId, { displayName: "Fabrikam <b>&</b>" });
    const consentUrl = (registered.json as { consentUrl: string }).consentUrl;
    const started = await call("consent-start", { path: pathOf(consentUrl) });
    assert.equal(started.status, 302);
    assert.equal(started.headers["x-content-type-options"], "nosniff");
    assert.match(started.headers["strict-transport-security"] ?? "", /max-age=/);
    const authorize = started.headers.location!;
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
    assertPage(await call("consent-start", { path: pathOf(consentUrl) }), 404, /already used/);
  });

  it("records a cancelled consent in the tenant's lastError and stores nothing", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId, { decision: "cancel" });
    assert.equal(new URL(callbackUrl).searchParams.get("error"), "access_denied");
    assertPage(await callback(callbackUrl), 400, /Consent was not given/);
    assert.equal(secretOf(tenantId), undefined);
    const status = await tenantStatus(tenantId);
    assert.equal(status.status, "pending");
    assert.equal(status.lastError?.code, "ConsentDeclined");
    assert.match(status.lastError?.message ?? "", /AADSTS65004/);
    assert.ok(h.logs.some((l) => l.includes(`consent.failed tenantId=${tenantId} reason=declined code=AADSTS65004`)));
  });

  it("rejects a missing, unknown or replayed state", async () => {
    assertPage(await callback(`${PUBLIC_BASE_URL}/api/consent/callback?code=abc`), 400, /state/);
    assertPage(await callback(`${PUBLIC_BASE_URL}/api/consent/callback?code=abc&state=forged`), 400, /unknown or was already used/);
    assertPage(await callback(`${PUBLIC_BASE_URL}/api/consent/callback?code=abc&state=abc.forged`), 400, /unknown or was already used/);
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
    const states = svc.storage.table(TABLES.consentStates);
    for (const row of await stateRows(tenantId)) {
      await states.updateEntity({ partitionKey: row.partitionKey, rowKey: row.rowKey, expiresAt: "2000-01-01T00:00:00.000Z" }, "Merge");
    }
    assertPage(await callback(callbackUrl), 400, /expired/);
    const tenants = svc.storage.table(TABLES.tenants);
    await tenants.updateEntity({ partitionKey: "tenant", rowKey: tenantId, consentLinkExpiresAt: "2000-01-01T00:00:00.000Z" }, "Merge");
    assertPage(await call("consent-start", { path: pathOf(consentUrl) }), 410, /expired/);
    assert.equal(secretOf(tenantId), undefined);
  });

  it("rejects a code the token endpoint refuses, and says opening the link again helps", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId);
    const tampered = new URL(callbackUrl);
    tampered.searchParams.set("code", "forged-code");
    assertPage(await callback(tampered.href), 400, /did not accept[\s\S]*retry/);
    assert.equal(secretOf(tenantId), undefined);
    assert.ok(h.logs.some((l) => l.includes(`consent.failed tenantId=${tenantId} reason=token-refused code=AADSTS9002313`)));
  });

  it("rejects an id_token whose signature does not verify against the tenant's keys", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId, { badIdTokenSignature: true });
    assertPage(await callback(callbackUrl), 400, /did not accept/);
    assert.equal(secretOf(tenantId), undefined);
    assert.equal((await tenantStatus(tenantId)).status, "pending");
    assert.ok(h.logs.some((l) => l.includes(`consent.failed tenantId=${tenantId} reason=id-token-invalid`)));
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

  it("refuses a consent that did not grant Alert.Read, says what is missing, and stores nothing (ScopeNotGranted)", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId, { grantedPermissions: ["Incident.Read"] });
    assertPage(await callback(callbackUrl), 403, /did not grant[\s\S]*Alert\.Read \(https:&#47;&#47;api\.securitycenter\.microsoft\.com\)/);
    assert.equal(secretOf(tenantId), undefined);
    const status = await tenantStatus(tenantId);
    assert.equal(status.status, "pending");
    assert.equal(status.lastError?.code, "ScopeNotGranted");
    // Alert.ReadWrite is enough.
    const other = h.newTenant();
    const granted = await consentTo(other, { grantedPermissions: ["Alert.ReadWrite"] });
    assertPage(await callback(granted.callbackUrl), 200, /now connected/);
  });

  it("reads the granted scope in the short and the resource-qualified form, per source", () => {
    const endpoints = sourceAccess("defender", {
      authorityHost: "",
      apiBaseUrl: "",
      apiScope: "https://api.securitycenter.microsoft.com/.default",
      graphBaseUrl: "https://graph.microsoft.com",
      graphScope: "https://graph.microsoft.com/.default",
    });
    assert.ok(grantsRead("Alert.Read offline_access", endpoints));
    assert.ok(grantsRead("https://api.securitycenter.microsoft.com/Alert.Read openid", endpoints));
    assert.ok(grantsRead("https://api.securitycenter.microsoft.com/alert.readwrite", endpoints));
    assert.ok(!grantsRead("https://graph.microsoft.com/Alert.Read", endpoints));
    assert.ok(!grantsRead("https://api.securitycenter.microsoft.com/Incident.Read Alert.Read.All", endpoints));
    assert.ok(!grantsRead(undefined, endpoints));
    const graph = sourceAccess("graph", { authorityHost: "", apiBaseUrl: "", apiScope: "", graphBaseUrl: "", graphScope: "https://graph.microsoft.com/.default" });
    assert.ok(grantsRead("SecurityAlert.Read.All offline_access", graph));
    assert.ok(grantsRead("https://graph.microsoft.com/SecurityAlert.ReadWrite.All", graph));
    assert.ok(!grantsRead("Alert.Read User.Read", graph));
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
    try {
      const { callbackUrl } = await consentTo(tenantId);
      assertPage(await callback(callbackUrl), 403, /View Data/);
      assert.equal(secretOf(tenantId), undefined);
      const status = await tenantStatus(tenantId);
      assert.equal(status.status, "pending");
      assert.equal(status.lastError?.code, "DefenderForbidden");
    } finally {
      h.defender.allow(tenantId);
    }
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

  it("rejects an incomplete or malformed consent link before any storage call", async () => {
    const paths = [
      "consent/start",
      "consent/start?tenant=6b1f5c3e-0000-4000-8000-00000000aaaa",
      "consent/start?tenant=not-a-guid&link=abcdefghijklmnopqrstuvwxyz",
      `consent/start?tenant=6b1f5c3e-0000-4000-8000-00000000aaaa&link=${"a".repeat(129)}`,
      "consent/start?tenant=6b1f5c3e-0000-4000-8000-00000000aaaa&link=has%20spaces%20in%20it!",
    ];
    for (const path of paths) {
      const calls = await storageCalls(async () => assertPage(await call("consent-start", { path }), 400, /incomplete/));
      assert.deepEqual(calls, [], path);
    }
  });

  it("answers unknown tenants, offboarded tenants and wrong or replaced links identically, after the same storage work", async () => {
    const registered = h.newTenant();
    const first = (await register(registered)).json as { consentUrl: string };
    await register(registered); // replaces the first link
    const offboarded = h.newTenant();
    const offLink = ((await register(offboarded)).json as { consentUrl: string }).consentUrl;
    await call("tenants-delete", { method: "DELETE", path: `tenants/${offboarded}`, params: { tenantId: offboarded } });
    const link = "x".repeat(43);
    const cases = {
      unknownTenant: `consent/start?tenant=6b1f5c3e-0000-4000-8000-00000000cccc&link=${link}`,
      wrongLink: `consent/start?tenant=${registered}&link=${link}`,
      replacedLink: pathOf(first.consentUrl),
      offboarded: pathOf(offLink),
    };
    const answers: Record<string, { status: number; text: string; headers: string; calls: string[] }> = {};
    for (const [name, path] of Object.entries(cases)) {
      let result: HttpResult | undefined;
      const calls = await storageCalls(async () => {
        result = await call("consent-start", { path });
      });
      // The Date header follows the clock, not the answer: a second may tick between cases.
      const { date: _date, ...headers } = result!.headers as Record<string, unknown>;
      answers[name] = { status: result!.status, text: result!.text, headers: JSON.stringify(headers), calls };
    }
    const reference = answers.unknownTenant!;
    assert.equal(reference.status, 404);
    assert.deepEqual(reference.calls, ["tenants.getEntity"]);
    for (const [name, answer] of Object.entries(answers)) assert.deepEqual(answer, reference, name);
  });

  it("caps the callback's inputs before any storage call", async () => {
    const tenantId = h.newTenant();
    const { callbackUrl } = await consentTo(tenantId);
    const oversized: [string, string][] = [
      ["state", `${"a".repeat(40)}.${"b".repeat(100)}`],
      ["code", "c".repeat(8193)],
      ["error", "e".repeat(65)],
      ["error_description", "d".repeat(2049)],
    ];
    for (const [param, value] of oversized) {
      const url = new URL(callbackUrl);
      url.searchParams.set(param, value);
      const calls = await storageCalls(async () => assertPage(await callback(url.href), 400, /not recognised/));
      assert.deepEqual(calls, [], param);
    }
    // The untouched response still works: none of the above consumed its state.
    assertPage(await callback(callbackUrl), 200, /now connected/);
  });

  it("keeps at most CONSENT_STATES_PER_LINK (5) states per link, dropping the oldest, and reads only that link's states", async () => {
    const tenantId = h.newTenant();
    const consentUrl = ((await register(tenantId)).json as { consentUrl: string }).consentUrl;
    const authorizeUrls: string[] = [];
    const calls = await storageCalls(async () => {
      for (let i = 0; i < 7; i++) authorizeUrls.push(await openLink(h, consentUrl));
    });
    const rows = await stateRows(tenantId);
    assert.equal(rows.length, 5);
    assert.equal(new Set(rows.map((r) => r.partitionKey)).size, 1, "one partition per link");
    const queries = calls.filter((c) => c.startsWith("consentstates.listEntities"));
    assert.equal(queries.length, 7);
    for (const q of queries) assert.match(q, /^consentstates\.listEntities\(PartitionKey eq 'link-[\w-]+'\)$/);
    // The two oldest sign-ins were dropped; the newest still completes.
    for (const old of authorizeUrls.slice(0, 2)) {
      assertPage(await callback(await h.entra.consent(old)), 400, /unknown or was already used/);
    }
    assertPage(await callback(await h.entra.consent(authorizeUrls[6]!)), 200, /now connected/);
  });

  it("the pull timer removes expired consent states and keeps live ones", async () => {
    const tenantId = h.newTenant();
    const consentUrl = ((await register(tenantId)).json as { consentUrl: string }).consentUrl;
    await openLink(h, consentUrl);
    await openLink(h, consentUrl);
    const [expired, live] = await stateRows(tenantId);
    assert.ok(expired && live);
    const states = svc.storage.table(TABLES.consentStates);
    await states.updateEntity({ partitionKey: expired.partitionKey, rowKey: expired.rowKey, expiresAt: "2000-01-01T00:00:00.000Z" }, "Merge");
    await h.trigger("pull-timer", { isPastDue: false, scheduleStatus: {} });
    assert.deepEqual(
      (await stateRows(tenantId)).map((r) => r.rowKey),
      [live.rowKey],
    );
    assert.ok(h.logs.some((l) => /states\.purged count=[1-9]/.test(l)));
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
    assert.equal((await callback((await consentTo(tenantId, {}, { relink: true })).callbackUrl)).status, 200);
    assert.deepEqual(secretOf(tenantId)?.versions.map((v) => v.enabled), [false, true]);
  });

  it("answers 404 for an unknown tenant", async () => {
    const id = "6b1f5c3e-0000-4000-8000-00000000bbbb";
    assert.equal((await call("tenants-delete", { method: "DELETE", path: `tenants/${id}`, params: { tenantId: id } })).status, 404);
  });
});

describe("health", () => {
  it("answers anonymous callers with the status only; the causes need an operator token", async () => {
    resetHealthCache();
    const ok = await call("health", { path: "health" });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.json, { status: "ok" });
    resetHealthCache();
    h.vault.failNext(1, 403);
    const bad = await call("health", { path: "health" });
    assert.equal(bad.status, 503);
    assert.deepEqual(bad.json, { status: "unhealthy" });
    const details = await call("health-details", { path: "health/details" });
    assert.equal(details.status, 503);
    const report = details.json as { status: string; failing: string[]; causes: { part: string; code: string; since: string }[] };
    assert.equal(report.status, "unhealthy");
    assert.deepEqual(report.failing, ["keyVault"]);
    assert.equal(report.causes.length, 1);
    assert.equal(report.causes[0]!.part, "keyVault");
    assert.match(report.causes[0]!.code, /^RestError\/.*403$/);
    assert.ok(!Number.isNaN(Date.parse(report.causes[0]!.since)));
    resetHealthCache();
  });

  it("probes Key Vault at most every 30 s per instance", async () => {
    resetHealthCache();
    await call("health", { path: "health" });
    const before = h.vault.requestLog.length;
    await call("health", { path: "health" });
    await call("health-details", { path: "health/details" });
    assert.equal(h.vault.requestLog.length, before, "a cached probe does not call Key Vault");
    resetHealthCache();
  });
});

describe("secrets never leak", () => {
  it("the suite-wide leak check knows the state, nonce, code, verifier and link secret of a consent", async () => {
    const tenantId = h.newTenant();
    const { consentUrl, authorize, callbackUrl } = await consentTo(tenantId);
    assert.equal((await callback(callbackUrl)).status, 200);
    const secrets = knownSecrets();
    const q = new URL(authorize).searchParams;
    for (const [name, value] of [
      ["state", q.get("state")],
      ["nonce", q.get("nonce")],
      ["code", new URL(callbackUrl).searchParams.get("code")],
      ["link secret", new URL(consentUrl).searchParams.get("link")],
      ["refresh token", h.entra.issuedRefreshTokens(tenantId)[0]],
    ] as const) {
      assert.ok(value && secrets.has(value), `${name} is checked`);
    }
    const challenge = q.get("code_challenge");
    const verifier = [...secrets].find((s) => createHash("sha256").update(s).digest("base64url") === challenge);
    assert.ok(verifier, "the PKCE verifier is checked");
    // Every log line, response and thrown error of this file is checked in an `after` hook
    // (test/support/leaks.ts); see test/leaks.test.ts for what it catches.
  });
});
