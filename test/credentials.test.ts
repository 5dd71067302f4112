/**
 * The app's own credential at customer tenants (MSSP_CLIENT_CREDENTIAL): a client secret,
 * the managed identity as a federated identity credential, or a certificate whose key stays
 * in Key Vault. Each works for all three grants (authorization code, refresh token, client
 * credentials); assertion failures are the app's own (app.credential.failed with a reason,
 * health) and leave every tenant's status alone; health names the credential in use.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, beforeEach, describe, it } from "node:test";
import { decodeProtectedHeader } from "jose";
import { forgetAccessToken } from "../shared/collection/tokens.js";
import type { ClientCredentialKind } from "../shared/platform/config.js";
import { resetHealthCache } from "../shared/platform/health.js";
import type { Services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { makeAlerts } from "../simulators/alerts.js";
import type { HttpResult } from "./support/functions.js";
import { CERTIFICATE_NAME, CLIENT_ID, FIC_NAME, type Harness, startHarness } from "./support/harness.js";
import { findLeaks, knownSecrets } from "./support/leaks.js";

let h: Harness;
let svc: Services;
const slept: number[] = [];

async function use(kind: ClientCredentialKind): Promise<void> {
  svc = await h.useCredential(kind);
  svc.sleep = async (ms) => {
    slept.push(ms);
  };
}

before(async () => {
  h = await startHarness();
  await use("secret");
});
after(async () => {
  await h?.stop();
});
beforeEach(() => {
  slept.length = 0;
  resetHealthCache();
});

async function tenantStatus(tenantId: string): Promise<Record<string, unknown> & { lastError?: { code: string } }> {
  return (await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } })).json as never;
}

async function healthDetails(): Promise<{ failing: string[]; causes: { part: string; code: string }[]; credential?: Record<string, unknown> }> {
  return (await h.http("health-details", { path: "health/details" })).json as never;
}

function withAlerts(count: number): string {
  const tenantId = h.newTenant();
  const now = Date.now();
  h.defender.setAlerts(tenantId, makeAlerts({ count, from: new Date(now - 6 * 3600_000), to: new Date(now - 120_000), seed: 11 }));
  return tenantId;
}

async function pull(tenantId: string): Promise<void> {
  forgetAccessToken(tenantId); // so the pull asks Entra for a token with the credential in use
  await h.trigger("pull-worker", { tenantId });
}

function page(result: HttpResult, status: number, text: RegExp): void {
  assert.equal(result.status, status, result.text);
  assert.match(result.text.replace(/&#39;/g, "'"), text);
}

const EXPECTED_AUTH = { secret: "secret", "managed-identity": "federated", certificate: "certificate" } as const;

describe("each credential works for all three grants", () => {
  for (const kind of ["secret", "managed-identity", "certificate"] as const) {
    it(`${kind}: authorization code (delegated consent), refresh token (delegated pull), client credentials (application mode)`, async () => {
      await use(kind);
      const from = h.entra.requestLog.length;
      const signs = h.vault.signCount(CERTIFICATE_NAME);
      const delegated = withAlerts(4);
      page(await h.onboard(delegated), 200, /Consent complete/);
      await pull(delegated);
      const app = withAlerts(6);
      page(await h.onboardApp(app), 200, /Consent complete/);
      await pull(app);

      const requests = h.entra.requestLog.slice(from).filter((r) => r.path.endsWith("/oauth2/v2.0/token"));
      assert.deepEqual(new Set(requests.map((r) => r.grantType)), new Set(["authorization_code", "refresh_token", "client_credentials"]));
      assert.ok(requests.every((r) => r.status === 200), JSON.stringify(requests));
      assert.deepEqual(new Set(requests.map((r) => r.clientAuth)), new Set([EXPECTED_AUTH[kind]]));
      assert.equal((await tenantStatus(delegated)).alertsStored, 4);
      assert.equal((await tenantStatus(app)).alertsStored, 6);
      if (kind === "certificate") assert.ok(h.vault.signCount(CERTIFICATE_NAME) > signs, "signed by Key Vault");
      else assert.equal(h.vault.signCount(CERTIFICATE_NAME), signs);
      if (kind === "managed-identity") assert.ok(h.identity.requestLog.some((r) => r.resource === "api://AzureADTokenExchange" && r.status === 200));
      assert.equal((await healthDetails()).credential?.type, kind);
    });
  }

  it("a certificate assertion is PS256 with x5t#S256 of the certificate, signed in Key Vault without reading the key's secret", async () => {
    await use("certificate");
    const before = h.vault.requestLog.length;
    await pull(await appTenantWith());
    const assertion = h.entra.assertionsSeen().at(-1) ?? "";
    const header = decodeProtectedHeader(assertion) as Record<string, unknown>;
    assert.equal(header.alg, "PS256");
    assert.equal(header["x5t#S256"], h.certificate.thumbprintSha256);
    assert.equal(header.x5t, undefined);
    const vault = h.vault.requestLog.slice(before);
    assert.ok(vault.some((r) => r.method === "POST" && /^\/keys\/mssp-client-certificate\/[0-9a-f]+\/sign$/.test(r.path)));
    assert.ok(!vault.some((r) => r.path.startsWith("/secrets/")), "no secret is read: the private key never leaves the vault");
  });
});

async function appTenantWith(): Promise<string> {
  const tenantId = h.newTenant();
  page(await h.onboardApp(tenantId), 200, /Consent complete/);
  return tenantId;
}

describe("a rejected assertion is the app's own failure, named, and no tenant changes", () => {
  const fic = (change: Partial<{ subject: string; audiences: string[] }>) =>
    h.entra.addFederatedCredential(CLIENT_ID, {
      name: FIC_NAME,
      issuer: h.identity.exchangeIssuer,
      subject: change.subject ?? h.identity.principalId,
      audiences: change.audiences ?? ["api://AzureADTokenExchange"],
    });

  const cases: [string, string, string, () => () => void][] = [
    ["wrong audience", "AADSTS700212", "assertion-audience-wrong", () => {
      fic({ audiences: ["api://AzureADTokenExchangeUSGov"] });
      return () => fic({});
    }],
    ["unknown subject", "AADSTS700213", "assertion-subject-unknown", () => {
      fic({ subject: randomUUID() });
      return () => fic({});
    }],
    ["expired assertion", "AADSTS700024", "assertion-expired", () => {
      const realNow = h.entra.now;
      h.entra.now = () => Date.now() + 25 * 3600_000; // the managed identity's 24 h token has run out
      return () => {
        h.entra.now = realNow;
      };
    }],
  ];
  for (const [what, code, reason, breakIt] of cases) {
    it(`${what}: app.credential.failed code=${code} reason=${reason}, health failing, tenants untouched`, async () => {
      await use("managed-identity");
      const delegated = withAlerts(1);
      page(await h.onboard(delegated), 200, /Consent complete/);
      const app = await appTenantWith();
      const restore = breakIt();
      try {
        await pull(delegated);
        await pull(app);
        const line = `app.credential.failed code=${code} credential=managed-identity reason=${reason}`;
        assert.ok(h.logs.filter((l) => l.includes(line)).length >= 2, `${line} for both pulls`);
        assert.equal((await tenantStatus(delegated)).status, "active");
        assert.equal((await tenantStatus(app)).status, "active");
        const health = await healthDetails();
        assert.deepEqual(health.failing, ["clientCredential"]);
        assert.equal(health.causes[0]?.code, code);
        assert.ok(h.logs.some((l) => l.includes(`health.failing part=clientCredential setting=MSSP_FIC_CLIENT_ID code=${code}`)));
        // A consent meets it too: the customer is told the provider must fix its configuration.
        page(await h.onboard(h.newTenant()), 500, /service provider must fix its configuration/);
      } finally {
        restore();
      }
      await pull(app);
      resetHealthCache();
      assert.equal((await h.http("health", { path: "health" })).status, 200, "recovers once Entra accepts the credential again");
    });
  }

  it("a certificate that is not on the app registration: AADSTS700027 assertion-signature-invalid", async () => {
    await use("secret");
    const app = await appTenantWith();
    await use("certificate");
    h.entra.removeCertificates(CLIENT_ID);
    try {
      await pull(app);
    } finally {
      h.entra.addCertificate(CLIENT_ID, h.certificate.certificateDer);
    }
    assert.ok(h.logs.some((l) => l.includes("app.credential.failed code=AADSTS700027 credential=certificate reason=assertion-signature-invalid")));
    assert.equal((await tenantStatus(app)).status, "active");
  });

  it("retries AADSTS70021 of a new federated credential for a few minutes, but not once the credential has worked", async () => {
    await use("managed-identity");
    h.entra.federatedCredentialInactiveFor(CLIENT_ID, 2);
    const app = await appTenantWith();
    assert.deepEqual(slept, [5_000, 10_000]);
    assert.equal((await tenantStatus(app)).status, "active");
    h.entra.federatedCredentialInactiveFor(CLIENT_ID, 1);
    await pull(app);
    assert.ok(h.logs.some((l) => l.includes("app.credential.failed code=AADSTS70021 credential=managed-identity reason=no-matching-federated-credential")));
    assert.deepEqual(slept, [5_000, 10_000], "no more waiting once a token was issued with it");
    await pull(app); // and the credential works again
  });
});

describe("settings, health and the secret's expiry", () => {
  it("with a managed identity, a tenant of another cloud (gcc-high, dod) is refused with 400 CloudNotSupported before anything is asked or stored", async () => {
    await use("managed-identity");
    const tenantId = h.newTenant();
    const discoveries = h.entra.requestLog.length;
    for (const cloud of ["gcc-high", "dod"]) {
      const refused = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId, cloud }) });
      assert.equal(refused.status, 400, refused.text);
      assert.equal((refused.json as { error: { code: string; message: string } }).error.code, "CloudNotSupported");
      assert.match((refused.json as { error: { message: string } }).error.message, /deployment in its own cloud/);
    }
    assert.equal(h.entra.requestLog.length, discoveries);
    assert.equal((await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } })).status, 404, "nothing registered");
  });

  it("/api/health/details names the credential in use, and for a secret its expiry (from the timer's daily check)", async () => {
    await use("secret");
    await svc.storage.table(TABLES.appState).deleteEntity("app", "credential-expiry-check").catch(() => undefined);
    assert.deepEqual((await healthDetails()).credential, { type: "secret", expiry: "unknown" }, "not checked yet");
    await svc.secrets.setSecret("mssp-client-secret", "secret-value-never-shown", { expiresOn: new Date(Date.now() + 40.5 * 24 * 3600_000) });
    await h.trigger("pull-timer", { isPastDue: false, scheduleStatus: {} });
    const vaultRequests = h.vault.requestLog.length;
    const secret = await healthDetails();
    assert.equal(h.vault.requestLog.length, vaultRequests, "health reads the check's result from storage, not Key Vault");
    assert.equal(secret.credential?.type, "secret");
    assert.equal(secret.credential?.daysLeft, 40);
    assert.ok(!Number.isNaN(Date.parse(String(secret.credential?.expiresOn))));
    for (const kind of ["managed-identity", "certificate"] as const) {
      await use(kind);
      resetHealthCache();
      assert.deepEqual((await healthDetails()).credential, { type: kind });
    }
    const anonymous = await h.http("health", { path: "health" });
    assert.deepEqual(anonymous.json, { status: "ok" }, "the anonymous route still says nothing more");
  });

  it("the daily expiry check reads nothing and logs nothing without a client secret", async () => {
    await use("managed-identity");
    await svc.secrets.setSecret("mssp-client-secret", "an-old-secret-value", { expiresOn: new Date(Date.now() + 2 * 24 * 3600_000) });
    const before = h.vault.requestLog.length;
    h.logs.length = 0;
    await h.trigger("pull-timer", { isPastDue: false, scheduleStatus: {} });
    assert.deepEqual(
      h.vault.requestLog.slice(before).filter((r) => r.path.includes("mssp-client-secret")),
      [],
    );
    assert.ok(!h.logs.some((l) => l.includes("app.credential.expiring")));
  });
});

describe("secrets never leak", () => {
  it("the leak check covers assertions, the certificate's private key, exchange tokens and client-credential tokens", async () => {
    await use("managed-identity");
    const fed = await appTenantWith();
    await use("certificate");
    const cert = await appTenantWith();
    const secrets = knownSecrets();
    const assertions = h.entra.assertionsSeen();
    assert.ok(assertions.length >= 2);
    for (const a of assertions) assert.ok(secrets.has(a), "every client_assertion is checked");
    const keys = h.vault.secretsSeen().filter((s) => s.includes("PRIVATE KEY"));
    assert.ok(keys.length > 0 && keys.every((k) => secrets.has(k)), "the certificate's private key is checked");
    assert.ok(h.identity.secretsSeen().length > 0 && h.identity.secretsSeen().every((t) => secrets.has(t)), "the exchange tokens are checked");
    for (const tenantId of [fed, cert]) {
      const issued = h.entra.appTokensIssued(tenantId);
      assert.ok(issued.length > 0 && issued.every((t) => secrets.has(t)), "client-credential tokens are checked");
    }
    // ... and one in a log line would be caught.
    assert.equal(findLeaks(secrets, [{ where: "log", text: `oops ${assertions[0]}` }]).length, 1);
    await use("secret");
  });
});
