/**
 * Application mode (issue 12): onboarding by admin consent without anyone's refresh token,
 * its verification while consent propagates, pulls with client credentials, switching a
 * tenant between modes, offboarding, and how token failures are classified in this mode.
 * Against real Azurite and the HTTPS fakes, with the client secret (the credential types
 * are test/credentials.test.ts).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { probeSource } from "../shared/collection/sources/index.js";
import {
  AppTokenProvider,
  cachedAccessToken,
  clientCredentialsToken,
  forgetAccessToken,
  TokenFailure,
} from "../shared/collection/tokens.js";
import { getTenant } from "../shared/onboarding/tenants.js";
import { endpointsFor } from "../shared/platform/config.js";
import { resetHealthCache } from "../shared/platform/health.js";
import { resetServices, type Services, services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { refreshTokenSecretName } from "../shared/platform/token-vault.js";
import { makeAlerts } from "../simulators/alerts.js";
import type { PropagationFailure } from "../simulators/entra.js";
import { repoRoot } from "../simulators/https.js";
import type { HttpResult } from "./support/functions.js";
import { CLIENT_ID, type Harness, openLink, PUBLIC_BASE_URL, pathOf, startHarness } from "./support/harness.js";
import { knownSecrets } from "./support/leaks.js";

const DEFENDER_SCOPE = "https://api.securitycenter.microsoft.com/.default";
const GRAPH_SCOPE = "https://graph.microsoft.com/.default";
let h: Harness;
let svc: Services;
const slept: number[] = [];

function instrument(s: Services): Services {
  // Backoff waits are recorded instead of slept.
  s.sleep = async (ms) => {
    slept.push(ms);
  };
  return s;
}

before(async () => {
  h = await startHarness();
  svc = instrument(await services());
});
after(async () => {
  await h?.stop();
});
beforeEach(() => {
  slept.length = 0;
});

async function register(tenantId: string, extra: Record<string, unknown> = {}): Promise<HttpResult> {
  return h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId, ...extra }) });
}

async function tenantStatus(tenantId: string): Promise<Record<string, unknown> & { lastError?: { code: string; message: string } }> {
  return (await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } })).json as never;
}

/** Registers in application mode, opens the link and returns Entra's admin consent URL. */
async function adminConsentUrl(tenantId: string, extra: Record<string, unknown> = {}): Promise<string> {
  const registered = await register(tenantId, { mode: "application", ...extra });
  assert.ok(registered.status === 200 || registered.status === 201, registered.text);
  return openLink(h, (registered.json as { consentUrl: string }).consentUrl);
}

async function callback(url: string): Promise<HttpResult> {
  return h.http("consent-callback", { path: pathOf(url) });
}

function assertPage(result: HttpResult, status: number, text: RegExp): void {
  assert.equal(result.status, status, result.text);
  assert.match(result.headers["content-type"] ?? "", /text\/html/);
  assert.match(result.text.replace(/&#39;/g, "'"), text);
}

function secretOf(tenantId: string) {
  return h.vault.inspect(refreshTokenSecretName(tenantId));
}

/** Token requests the fake Entra saw for a tenant, by path. */
function tokenRequests(tenantId?: string) {
  return h.entra.requestLog.filter((r) => r.path.endsWith("/oauth2/v2.0/token") && (!tenantId || r.path.startsWith(`/${tenantId}/`)));
}

async function appTenant(alerts = 0): Promise<string> {
  const tenantId = h.newTenant();
  if (alerts > 0) {
    const now = Date.now();
    h.defender.setAlerts(tenantId, makeAlerts({ count: alerts, from: new Date(now - 24 * 3600_000), to: new Date(now - 120_000), seed: 7 }));
  }
  assertPage(await h.onboardApp(tenantId), 200, /Consent complete/);
  return tenantId;
}

async function pull(tenantId: string): Promise<void> {
  await h.trigger("pull-worker", { tenantId });
}

async function timer(): Promise<void> {
  await h.trigger("pull-timer", { isPastDue: false, scheduleStatus: {} });
}

describe("application-mode onboarding", () => {
  it("sends the admin to the invited tenant's admin consent endpoint, verifies with client credentials and a probe, and stores nothing", async () => {
    const tenantId = h.newTenant();
    const registered = await register(tenantId, { mode: "application", displayName: "Woodgrove" });
    assert.equal(registered.status, 201, registered.text);
    assert.equal((registered.json as { mode: string }).mode, "application");
    const consentUrl = (registered.json as { consentUrl: string }).consentUrl;
    const location = await openLink(h, consentUrl);
    const url = new URL(location);
    assert.equal(url.origin + url.pathname, `${h.entra.url}/${tenantId}/v2.0/adminconsent`, "the tenant itself, never common");
    assert.deepEqual([...url.searchParams.keys()].sort(), ["client_id", "redirect_uri", "scope", "state"]);
    assert.equal(url.searchParams.get("client_id"), CLIENT_ID);
    assert.equal(url.searchParams.get("scope"), DEFENDER_SCOPE);
    assert.equal(url.searchParams.get("redirect_uri"), `${PUBLIC_BASE_URL}/api/consent/callback`);
    const vaultWrites = h.vault.requestLog.filter((r) => r.method !== "GET").length;

    const back = h.entra.adminConsent(location);
    const params = new URL(back).searchParams;
    assert.equal(params.get("admin_consent"), "True");
    assert.equal(params.get("tenant"), tenantId);
    const page = await callback(back);
    assertPage(page, 200, /Woodgrove is now connected with the application permission Alert\.Read\.All/);
    assert.match(page.text.replace(/&#39;/g, "'"), /delete the service's enterprise application/);

    const status = await tenantStatus(tenantId);
    assert.equal(status.status, "active");
    assert.equal(status.mode, "application");
    assert.equal(status.consentedBy, undefined, "nobody signs in: no account to name");
    assert.equal(secretOf(tenantId), undefined, "no refresh token");
    assert.equal(h.vault.requestLog.filter((r) => r.method !== "GET").length, vaultWrites, "nothing written to Key Vault");
    const requests = tokenRequests(tenantId);
    assert.ok(requests.length > 0 && requests.every((r) => r.grantType === "client_credentials" && r.status === 200));
    assert.equal(tokenRequests().filter((r) => /^\/(common|organizations)\//.test(r.path)).length, 0);
    assert.ok(h.logs.some((l) => l.includes(`consent.completed tenantId=${tenantId} mode=application`)));
    // The link is used up.
    assert.equal((await h.http("consent-start", { path: pathOf(consentUrl) })).status, 404);
  });

  it("refuses a callback whose tenant names another organisation, and stores nothing for either", async () => {
    const invited = h.newTenant();
    const other = h.newTenant();
    const location = await adminConsentUrl(invited);
    const back = new URL(h.entra.adminConsent(location));
    const before = tokenRequests().length;
    back.searchParams.set("tenant", other);
    assertPage(await callback(back.href), 403, /another organisation/);
    assert.equal(tokenRequests().length, before, "no token was asked for, for anyone");
    assert.equal((await tenantStatus(invited)).status, "pending");
    assert.equal((await h.http("tenants-get", { path: `tenants/${other}`, params: { tenantId: other } })).status, 404);
    assert.ok(h.logs.some((l) => l.includes(`consent.failed tenantId=${invited} mode=application reason=tenant-mismatch`)));
    // The state was consumed: the genuine response cannot be replayed after a forged one.
    back.searchParams.set("tenant", invited);
    assertPage(await callback(back.href), 400, /unknown or was already used/);
  });

  it("refuses a state bound to another tenant: B's real consent cannot activate A, and A's state cannot activate B", async () => {
    const a = h.newTenant();
    const b = h.newTenant();
    const forA = await adminConsentUrl(a);
    const forB = await adminConsentUrl(b);
    h.entra.adminConsent(forB); // B's admin really consents, but B's callback never arrives
    const stateOfA = new URL(forA).searchParams.get("state") ?? "";
    const forged = new URL(`${PUBLIC_BASE_URL}/api/consent/callback`);
    forged.searchParams.set("admin_consent", "True");
    forged.searchParams.set("tenant", b);
    forged.searchParams.set("scope", DEFENDER_SCOPE);
    forged.searchParams.set("state", stateOfA);
    assertPage(await callback(forged.href), 403, /another organisation/);
    assert.equal((await tenantStatus(a)).status, "pending");
    assert.equal((await tenantStatus(b)).status, "pending");
    assert.equal(tokenRequests(b).length, 0, "the app never asked B for a token on the strength of a callback");
    assert.equal(secretOf(a), undefined);
    assert.equal(secretOf(b), undefined);
  });

  it("refuses a replayed state and a declined consent (access_denied), and records the decline", async () => {
    const tenantId = h.newTenant();
    const location = await adminConsentUrl(tenantId);
    const declined = h.entra.adminConsent(location, { decision: "cancel" });
    assert.equal(new URL(declined).searchParams.get("error"), "access_denied");
    assertPage(await callback(declined), 400, /Consent was not given/);
    assert.equal((await tenantStatus(tenantId)).lastError?.code, "ConsentDeclined");
    assertPage(await callback(declined), 400, /unknown or was already used/);

    const again = h.entra.adminConsent(await adminConsentUrl(tenantId));
    assertPage(await callback(again), 200, /Consent complete/);
    assertPage(await callback(again), 400, /unknown or was already used/);
    assert.equal((await tenantStatus(tenantId)).status, "active");
  });

  it("answers an admin-consent-shaped response to a delegated sign-in as unknown, and a code to an admin consent likewise", async () => {
    const delegated = h.newTenant();
    const registered = await register(delegated);
    const authorize = await openLink(h, (registered.json as { consentUrl: string }).consentUrl);
    const forged = new URL(`${PUBLIC_BASE_URL}/api/consent/callback`);
    forged.searchParams.set("admin_consent", "True");
    forged.searchParams.set("tenant", delegated);
    forged.searchParams.set("state", new URL(authorize).searchParams.get("state") ?? "");
    assertPage(await callback(forged.href), 400, /not recognised/);
    assert.equal((await tenantStatus(delegated)).status, "pending");

    const app = h.newTenant();
    const back = new URL(h.entra.adminConsent(await adminConsentUrl(app)));
    back.searchParams.set("code", "a-code-nobody-asked-for");
    assertPage(await callback(back.href), 400, /not recognised/);
    assert.equal((await tenantStatus(app)).status, "pending");
  });

  it("activates within the bounded retry when the first two client-credentials attempts get AADSTS65001", async () => {
    const tenantId = h.newTenant();
    const back = h.entra.adminConsent(await adminConsentUrl(tenantId));
    h.entra.delayAppAccess(tenantId, CLIENT_ID, [65001, 65001]);
    assertPage(await callback(back), 200, /Consent complete/);
    assert.deepEqual(slept, [2000, 4000], "backed off twice");
    assert.deepEqual(
      tokenRequests(tenantId).map((r) => r.status),
      [400, 400, 200],
    );
    assert.equal((await tenantStatus(tenantId)).status, "active");
  });

  it("keeps a consent that is still propagating pending (ConsentPropagating), then the timer's probe activates it and its first pull follows", async () => {
    const tenantId = h.newTenant();
    h.defender.setAlerts(tenantId, makeAlerts({ count: 5, from: new Date(Date.now() - 3600_000), to: new Date(Date.now() - 120_000), seed: 3 }));
    const back = h.entra.adminConsent(await adminConsentUrl(tenantId));
    const failures: PropagationFailure[] = Array.from({ length: 40 }, (_, i) => (i % 2 ? 7000229 : "no-roles"));
    h.entra.delayAppAccess(tenantId, CLIENT_ID, failures);
    const page = await callback(back);
    assertPage(page, 202, /Consent recorded[\s\S]*confirmed automatically, usually within minutes/);
    assert.equal(
      slept.reduce((a, b) => a + b, 0),
      60_000,
      "retried for APP_CONSENT_RETRY_SECONDS (60 s)",
    );
    let status = await tenantStatus(tenantId);
    assert.equal(status.status, "pending");
    assert.equal(status.lastError?.code, "ConsentPropagating");
    const until = Date.parse(String(status.consentVerifyUntil));
    assert.ok(Math.abs(until - Date.now() - 24 * 3600_000) < 120_000, "APP_CONSENT_VERIFY_HOURS (24) from now");

    // Still propagating at the first probe: stays pending.
    await timer();
    assert.ok(h.logs.some((l) => /schedule\.queued tenants=\d+ verifications=[1-9]/.test(l)));
    await h.host.drainQueues();
    assert.equal((await tenantStatus(tenantId)).status, "pending");

    h.entra.clearAppAccessDelay(tenantId, CLIENT_ID);
    await timer();
    await h.host.drainQueues();
    status = await tenantStatus(tenantId);
    assert.equal(status.status, "active");
    assert.equal(status.mode, "application");
    assert.equal(status.consentVerifyUntil, undefined);
    assert.equal(status.lastError, undefined);
    assert.equal(status.alertsStored, 5, "the first pull followed the activation");
    await timer();
    const queued = h.logs.filter((l) => l.includes("schedule.queued"));
    assert.ok(!queued.at(-1)?.includes("verifications="), "no more probes");
  });

  it("at consentVerifyUntil a permission that never arrived becomes AppPermissionMissing, and probing stops", async () => {
    const tenantId = h.newTenant();
    const back = h.entra.adminConsent(await adminConsentUrl(tenantId));
    h.entra.withdrawApplicationPermissions(tenantId, CLIENT_ID); // tokens come without roles: 403
    assertPage(await callback(back), 202, /Consent recorded/);
    const realNow = svc.now;
    const until = Date.parse(String((await tenantStatus(tenantId)).consentVerifyUntil));
    svc.now = () => new Date(until + 1000);
    try {
      await h.trigger("pull-worker", { tenantId, reason: "verify" });
    } finally {
      svc.now = realNow;
    }
    const status = await tenantStatus(tenantId);
    assert.equal(status.status, "pending");
    assert.equal(status.lastError?.code, "AppPermissionMissing");
    assert.match(status.lastError?.message ?? "", /Alert\.Read\.All/);
    assert.equal(status.consentVerifyUntil, undefined);
    assert.ok(h.logs.some((l) => l.includes(`consent.failed tenantId=${tenantId} mode=application reason=app-permission-missing code=AppPermissionMissing`)));
  });

  it("with APP_CONSENT_VERIFY_HOURS=0 the callback's page itself names the missing Alert.Read.All", async () => {
    process.env.APP_CONSENT_VERIFY_HOURS = "0";
    resetServices();
    svc = instrument(await services());
    try {
      const tenantId = h.newTenant();
      const back = h.entra.adminConsent(await adminConsentUrl(tenantId));
      h.entra.withdrawApplicationPermissions(tenantId, CLIENT_ID);
      assertPage(await callback(back), 403, /application permission Alert\.Read\.All \(https:&#47;&#47;api\.securitycenter\.microsoft\.com\) is missing/);
      const status = await tenantStatus(tenantId);
      assert.equal(status.lastError?.code, "AppPermissionMissing");
      assert.equal(status.consentVerifyUntil, undefined);
    } finally {
      delete process.env.APP_CONSENT_VERIFY_HOURS;
      resetServices();
      svc = instrument(await services());
    }
  });
});

describe("pulls in application mode", () => {
  it("pull with client credentials and read nothing from Key Vault", async () => {
    const tenantId = await appTenant(12);
    forgetAccessToken(tenantId);
    const vaultRequests = h.vault.requestLog.length;
    const before = h.entra.tokenCount(tenantId).clientCredentials;
    await pull(tenantId);
    assert.equal(h.vault.requestLog.length, vaultRequests, "no Key Vault request at all");
    assert.equal(h.entra.tokenCount(tenantId).clientCredentials, before + 1);
    const status = await tenantStatus(tenantId);
    assert.equal(status.alertsStored, 12);
    assert.ok(status.lastSuccessAt);
  });

  it("keys the token cache by tenant, audience and mode: a Graph token never serves a Defender call", async () => {
    const tenantId = await appTenant();
    forgetAccessToken(tenantId);
    const endpoints = endpointsFor(svc.config, undefined);
    const graph = await clientCredentialsToken(svc, endpoints, tenantId, GRAPH_SCOPE);
    assert.equal(cachedAccessToken(tenantId, GRAPH_SCOPE, svc.now(), "application"), graph);
    assert.equal(cachedAccessToken(tenantId, DEFENDER_SCOPE, svc.now(), "application"), undefined);
    const row = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
    assert.ok(row);
    const defender = await new AppTokenProvider(svc, row, endpoints).get(DEFENDER_SCOPE);
    assert.notEqual(defender, graph);
    assert.equal(await probeSource("defender", { authorityHost: "", apiBaseUrl: h.defender.url, apiScope: "", graphBaseUrl: "", graphScope: "" }, defender), "ok");
    assert.equal(await probeSource("defender", { authorityHost: "", apiBaseUrl: h.defender.url, apiScope: "", graphBaseUrl: "", graphScope: "" }, graph), "forbidden", "the Defender API refuses the Graph token");
    assert.equal(cachedAccessToken(tenantId, DEFENDER_SCOPE, svc.now(), "delegated"), undefined, "the modes never share an entry");
    assert.equal(cachedAccessToken(h.newTenant(), DEFENDER_SCOPE, svc.now(), "application"), undefined);
  });

  it("a deleted enterprise application (AADSTS7000229) makes that tenant alone reconsent-required", async () => {
    const gone = await appTenant();
    const fine = await appTenant();
    forgetAccessToken(gone);
    h.entra.deleteServicePrincipal(gone, CLIENT_ID);
    await pull(gone);
    const status = await tenantStatus(gone);
    assert.equal(status.status, "reconsent-required");
    assert.equal(status.lastError?.code, "AADSTS7000229");
    assert.equal((await tenantStatus(fine)).status, "active");
    assert.ok(h.logs.some((l) => l.includes(`tenant.status tenantId=${gone} status=reconsent-required code=AADSTS7000229`)));
  });

  it("when every application-mode tenant fails the same way (AADSTS700016), it is app.credential.failed and no status changes", async () => {
    const a = await appTenant();
    const b = await appTenant();
    forgetAccessToken(a);
    forgetAccessToken(b);
    resetHealthCache();
    h.entra.failNext(20, { status: 400, error: "unauthorized_client", aadsts: 700016 });
    try {
      await pull(a);
    } finally {
      h.entra.failNext(0);
    }
    assert.equal((await tenantStatus(a)).status, "active");
    assert.equal((await tenantStatus(b)).status, "active");
    assert.ok(h.logs.some((l) => l.includes("app.credential.failed code=AADSTS700016 credential=secret reason=app-not-found")));
    const details = (await h.http("health-details", { path: "health/details" })).json as { failing: string[] };
    assert.deepEqual(details.failing, ["clientCredential"]);
    // Recovers with the next successful token.
    await pull(a);
    resetHealthCache();
    assert.equal((await h.http("health", { path: "health" })).status, 200);
  });

  it("a 401/403 with a freshly issued token (permission withdrawn) makes the tenant reconsent-required (AppPermissionMissing)", async () => {
    const tenantId = await appTenant(3);
    h.entra.withdrawApplicationPermissions(tenantId, CLIENT_ID);
    // The cached token still carries the role; once it is gone, a new one does not.
    forgetAccessToken(tenantId);
    await pull(tenantId);
    const status = await tenantStatus(tenantId);
    assert.equal(status.status, "reconsent-required");
    assert.equal(status.lastError?.code, "AppPermissionMissing");
  });
});

describe("switching modes and offboarding", () => {
  it("switches a delegated tenant to application mode and removes its refresh token only after the new mode is verified", async () => {
    const tenantId = h.newTenant();
    assert.equal((await h.onboard(tenantId)).status, 200);
    assert.equal(secretOf(tenantId)?.deleted, false);

    const back = h.entra.adminConsent(await adminConsentUrl(tenantId, { relink: true }));
    let status = await tenantStatus(tenantId);
    assert.equal(status.status, "active");
    assert.equal(status.mode, "delegated");
    assert.equal(status.requestedMode, "application");
    h.entra.delayAppAccess(tenantId, CLIENT_ID, Array.from({ length: 20 }, () => 65001 as const));
    assertPage(await callback(back), 202, /Consent recorded/);
    assert.equal(secretOf(tenantId)?.deleted, false, "not verified yet: the refresh token stays");
    // Still collected in delegated mode meanwhile.
    forgetAccessToken(tenantId);
    const redeemed = h.entra.tokenCount(tenantId).refreshToken;
    await pull(tenantId);
    assert.equal(h.entra.tokenCount(tenantId).refreshToken, redeemed + 1);
    assert.equal((await tenantStatus(tenantId)).mode, "delegated");

    h.entra.clearAppAccessDelay(tenantId, CLIENT_ID);
    await timer();
    await h.host.drainQueues();
    status = await tenantStatus(tenantId);
    assert.equal(status.mode, "application");
    assert.equal(status.status, "active");
    assert.equal(secretOf(tenantId)?.deleted, true, "removed once the new mode was verified");
    assert.ok(h.logs.some((l) => l.includes(`consent.refresh-token-removed tenantId=${tenantId} reason=mode-switched`)));
    const vaultRequests = h.vault.requestLog.length;
    forgetAccessToken(tenantId);
    await pull(tenantId);
    assert.equal(h.vault.requestLog.length, vaultRequests);
  });

  it("offboards an application-mode tenant: the row stays, no token is requested for it again, and the answer says how access really ends", async () => {
    const tenantId = await appTenant();
    const row = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
    assert.ok(row);
    const removed = await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantId}`, params: { tenantId } });
    assert.equal(removed.status, 200, removed.text);
    const body = removed.json as { status: string; mode: string; accessEnds: string; revokeSteps: string[] };
    assert.equal(body.status, "offboarded");
    assert.equal(body.mode, "application");
    assert.match(body.accessEnds, /until the customer deletes the enterprise application/);
    assert.ok(body.revokeSteps.some((s) => /Enterprise apps/.test(s)) && body.revokeSteps.some((s) => /Delete/.test(s)));
    assert.ok(h.logs.some((l) => l.includes(`tenant.offboarded tenantId=${tenantId} mode=application access=until-customer-deletes-enterprise-application`)));
    assert.equal((await tenantStatus(tenantId)).status, "offboarded");

    const before = h.entra.tokenCount(tenantId).clientCredentials;
    await pull(tenantId);
    await assert.rejects(new AppTokenProvider(svc, row, endpointsFor(svc.config, undefined)).get(DEFENDER_SCOPE, { forceNew: true }), (err: unknown) => {
      assert.ok(err instanceof TokenFailure);
      assert.equal(err.detail.code, "TenantOffboarded");
      return true;
    });
    assert.equal(h.entra.tokenCount(tenantId).clientCredentials, before, "no token requested for an offboarded tenant");
  });
});

describe("secrets never leak, and no resource token is decoded", () => {
  it("the leak check knows the client-credential tokens", async () => {
    const tenantId = await appTenant();
    const issued = h.entra.appTokensIssued(tenantId);
    assert.ok(issued.length > 0);
    const secrets = knownSecrets();
    for (const token of issued) assert.ok(secrets.has(token), "every app-only token is checked");
  });

  it("no app code decodes a token: nothing under shared/ or functions/ parses a JWT", () => {
    const root = repoRoot(import.meta.url);
    const offenders: string[] = [];
    for (const dir of ["shared", "functions"]) {
      for (const entry of readdirSync(join(root, dir), { recursive: true, withFileTypes: true })) {
        if (!entry.isFile() || !entry.name.endsWith(".ts")) continue;
        const text = readFileSync(join(entry.parentPath, entry.name), "utf8");
        if (/decodeJwt|decodeProtectedHeader|\.split\("\."\)|getValidatedIdTokenClaims\(\s*\w+\s*\)\s*\.\s*roles/.test(text)) offenders.push(entry.name);
      }
    }
    assert.deepEqual(offenders, []);
  });
});
