import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ConfigError, endpointsFor, loadConfig } from "../shared/platform/config.js";

const valid = {
  MSSP_CLIENT_ID: "11111111-2222-3333-4444-555555555555",
  MSSP_CLIENT_SECRET: "s3cr3t-value",
  PUBLIC_BASE_URL: "https://collector.example.com/",
  KEY_VAULT_URL: "https://kv-example.vault.azure.net",
  ALERTS_STORAGE: "UseDevelopmentStorage=true",
  PULL_SCHEDULE: "0 */5 * * * *",
  OPERATOR_TENANT_ID: "3c9f1e52-7a41-4d2b-9e0f-5b6a7c8d9e01",
  OPERATOR_API_CLIENT_ID: "b8e4a2d1-0c3f-4e5a-8b7c-6d9e0f1a2b3c",
};

function problemsOf(env: Record<string, string | undefined>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems.map((p) => p.setting);
  }
  assert.fail("expected a ConfigError");
}

describe("config", () => {
  it("accepts a minimal valid set and applies defaults", () => {
    const c = loadConfig(valid);
    assert.equal(c.redirectUri, "https://collector.example.com/api/consent/callback");
    assert.equal(c.defaultCloud, "commercial");
    assert.equal(c.endpoints.apiBaseUrl, "https://api.security.microsoft.com");
    assert.equal(c.endpoints.apiScope, "https://api.securitycenter.microsoft.com/.default");
    assert.equal(c.pull.overlapMs, 10 * 60_000);
    assert.equal(c.consentLinkTtlMs, 7 * 24 * 3600_000);
    assert.deepEqual(c.storage, { kind: "connectionString", connectionString: "UseDevelopmentStorage=true" });
  });

  it("names every missing required setting in one error", () => {
    assert.deepEqual(problemsOf({}).sort(), [
      "ALERTS_STORAGE",
      "KEY_VAULT_URL",
      "MSSP_CLIENT_ID",
      "MSSP_CLIENT_SECRET",
      "OPERATOR_API_CLIENT_ID",
      "OPERATOR_TENANT_ID",
      "PUBLIC_BASE_URL",
      "PULL_SCHEDULE",
    ]);
  });

  it("derives the operator sign-in settings: issuer, JWKS, scope, and the lifecycle defaults", () => {
    const c = loadConfig({ ...valid, OPERATOR_TENANT_ID: valid.OPERATOR_TENANT_ID.toUpperCase() });
    assert.deepEqual(c.operator, {
      tenantId: "3c9f1e52-7a41-4d2b-9e0f-5b6a7c8d9e01",
      apiClientId: "b8e4a2d1-0c3f-4e5a-8b7c-6d9e0f1a2b3c",
      authority: "https://login.microsoftonline.com/3c9f1e52-7a41-4d2b-9e0f-5b6a7c8d9e01",
      issuer: "https://login.microsoftonline.com/3c9f1e52-7a41-4d2b-9e0f-5b6a7c8d9e01/v2.0",
      jwksUri: "https://login.microsoftonline.com/3c9f1e52-7a41-4d2b-9e0f-5b6a7c8d9e01/discovery/v2.0/keys",
      scope: "api://b8e4a2d1-0c3f-4e5a-8b7c-6d9e0f1a2b3c/Operator.Access",
    });
    assert.equal(loadConfig({ ...valid, DEFENDER_CLOUD: "gcc-high" }).operator.issuer.startsWith("https://login.microsoftonline.us/"), true);
    assert.equal(c.lifecycle.alertRetentionMs, 365 * 24 * 3600_000);
    assert.equal(c.lifecycle.auditRetentionMs, 400 * 24 * 3600_000);
    assert.equal(c.lifecycle.exportPageAlerts, 50_000);
    assert.deepEqual(problemsOf({ ...valid, OPERATOR_CONSOLE_CLIENT_ID: "console" }), ["OPERATOR_CONSOLE_CLIENT_ID"]);
  });

  it("refuses ALERT_RETENTION_DAYS up to the sweep's and the first pull's lookback, naming no value", () => {
    assert.deepEqual(problemsOf({ ...valid, ALERT_RETENTION_DAYS: "7" }), ["ALERT_RETENTION_DAYS"]);
    assert.deepEqual(problemsOf({ ...valid, ALERT_RETENTION_DAYS: "20", SWEEP_DAILY_LOOKBACK_DAYS: "30" }), ["ALERT_RETENTION_DAYS"]);
    assert.deepEqual(problemsOf({ ...valid, ALERT_RETENTION_DAYS: "20", PULL_INITIAL_LOOKBACK_DAYS: "20" }), ["ALERT_RETENTION_DAYS"]);
    assert.equal(loadConfig({ ...valid, ALERT_RETENTION_DAYS: "8" }).lifecycle.alertRetentionMs, 8 * 24 * 3600_000);
    // Named together with other problems, not instead of them.
    assert.deepEqual(problemsOf({ ...valid, ALERT_RETENTION_DAYS: "3", PULL_SCHEDULE: "x" }).sort(), ["ALERT_RETENTION_DAYS", "PULL_SCHEDULE"]);
    try {
      loadConfig({ ...valid, ALERT_RETENTION_DAYS: "3" });
    } catch (err) {
      assert.doesNotMatch(String((err as Error).message), /\b3\b|\b7\b/);
    }
  });

  it("refuses http: authority, API and vault URLs", () => {
    assert.deepEqual(
      problemsOf({
        ...valid,
        KEY_VAULT_URL: "http://kv.vault.azure.net",
        ENTRA_AUTHORITY_HOST: "http://login.example",
        DEFENDER_API_BASE_URL: "http://api.example",
      }).sort(),
      ["DEFENDER_API_BASE_URL", "ENTRA_AUTHORITY_HOST", "KEY_VAULT_URL"],
    );
  });

  it("names every bad setting and never echoes any value", () => {
    // Each bad value carries a marker; none may appear in the error, whatever the setting.
    const bad: Record<string, string> = {
      MSSP_CLIENT_ID: "MARKER-client-id-not-a-guid",
      PUBLIC_BASE_URL: "http://MARKER-public.example.com",
      KEY_VAULT_URL: "http://MARKER-vault.vault.azure.net",
      ALERTS_STORAGE: "AccountName=MARKERacct;AccountKey=MARKERsecretkey==;TableEndpoint=not a url",
      PULL_SCHEDULE: "MARKER */5",
      DEFENDER_CLOUD: "MARKER-mars",
      ENTRA_AUTHORITY_HOST: "ftp://MARKER-login.example",
      DEFENDER_API_BASE_URL: "MARKER not a url",
      AZURE_CLIENT_ID: "MARKER-azure-client-id",
      CONSENT_LINK_TTL_HOURS: "MARKER-hours",
      CONSENT_STATES_PER_LINK: "MARKER-1000",
      PULL_PAGE_SIZE: "20000MARKER",
    };
    let err: unknown;
    try {
      loadConfig({ ...valid, ...bad });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.problems.map((p) => p.setting).sort(), Object.keys(bad).sort());
    const everything = `${err.message}\n${err.stack}\n${JSON.stringify(err.problems)}`;
    assert.doesNotMatch(everything, /MARKER/);
    assert.ok(!everything.includes(valid.MSSP_CLIENT_SECRET));
  });

  it("refuses a storage connection string the Azure SDKs cannot parse, and a SAS on a service URI", () => {
    for (const value of ["garbage", "DefaultEndpointsProtocol=https;AccountName=x", "AccountName=a;AccountKey=b;TableEndpoint=not a url"]) {
      assert.deepEqual(problemsOf({ ...valid, ALERTS_STORAGE: value }), ["ALERTS_STORAGE"], value);
    }
    assert.deepEqual(
      problemsOf({
        ...valid,
        ALERTS_STORAGE: undefined,
        ALERTS_STORAGE__tableServiceUri: "https://acct.table.core.windows.net?sv=2024&sig=x",
        ALERTS_STORAGE__queueServiceUri: "https://acct.queue.core.windows.net",
      }),
      ["ALERTS_STORAGE__tableServiceUri"],
    );
  });

  it("needs https: for PUBLIC_BASE_URL, except on loopback hosts", () => {
    for (const url of ["http://collector.example.com", "ftp://collector.example.com", "https://collector.example.com/?x=1", "not a url"]) {
      assert.deepEqual(problemsOf({ ...valid, PUBLIC_BASE_URL: url }), ["PUBLIC_BASE_URL"], url);
    }
    for (const url of ["http://localhost:7071", "http://127.0.0.1:7071", "http://[::1]:7071", "http://collector.localhost", "https://collector.example.com/base"]) {
      assert.equal(loadConfig({ ...valid, PUBLIC_BASE_URL: url }).publicBaseUrl, url, url);
    }
  });

  it("caps consent states per link at CONSENT_STATES_PER_LINK, default 5", () => {
    assert.equal(loadConfig(valid).consentStatesPerLink, 5);
    assert.equal(loadConfig({ ...valid, CONSENT_STATES_PER_LINK: "" }).consentStatesPerLink, 5);
    assert.equal(loadConfig({ ...valid, CONSENT_STATES_PER_LINK: "2" }).consentStatesPerLink, 2);
    assert.deepEqual(problemsOf({ ...valid, CONSENT_STATES_PER_LINK: "0" }), ["CONSENT_STATES_PER_LINK"]);
  });

  it("accepts the identity-based storage connection and requires both service URIs", () => {
    const c = loadConfig({
      ...valid,
      ALERTS_STORAGE: undefined,
      ALERTS_STORAGE__tableServiceUri: "https://acct.table.core.windows.net",
      ALERTS_STORAGE__queueServiceUri: "https://acct.queue.core.windows.net",
      ALERTS_STORAGE__credential: "managedidentity",
      ALERTS_STORAGE__clientId: "99999999-2222-3333-4444-555555555555",
    });
    assert.equal(c.storage.kind, "identity");
    assert.deepEqual(
      problemsOf({ ...valid, ALERTS_STORAGE: undefined, ALERTS_STORAGE__tableServiceUri: "https://acct.table.core.windows.net" }),
      ["ALERTS_STORAGE__queueServiceUri"],
    );
  });

  it("needs MSSP_CLIENT_SECRET only with MSSP_CLIENT_CREDENTIAL=secret (the default), and the certificate's settings only with certificate", () => {
    const { MSSP_CLIENT_SECRET: _secret, ...noSecret } = valid;
    assert.deepEqual(problemsOf(noSecret), ["MSSP_CLIENT_SECRET"]);
    assert.deepEqual(problemsOf({ ...noSecret, MSSP_CLIENT_CREDENTIAL: "secret" }), ["MSSP_CLIENT_SECRET"]);
    const mi = loadConfig({ ...noSecret, MSSP_CLIENT_CREDENTIAL: "managed-identity", AZURE_CLIENT_ID: "AAAAAAAA-2222-3333-4444-555555555555" });
    assert.deepEqual(mi.credential, { kind: "managed-identity", audience: "api://AzureADTokenExchange", identityClientId: "aaaaaaaa-2222-3333-4444-555555555555" });
    assert.equal(
      (loadConfig({ ...noSecret, MSSP_CLIENT_CREDENTIAL: "managed-identity", MSSP_FIC_CLIENT_ID: "bbbbbbbb-2222-3333-4444-555555555555", AZURE_CLIENT_ID: "aaaaaaaa-2222-3333-4444-555555555555" }).credential as { identityClientId: string })
        .identityClientId,
      "bbbbbbbb-2222-3333-4444-555555555555",
      "a dedicated identity for customer tenants wins over the app's",
    );
    assert.deepEqual(problemsOf({ ...noSecret, MSSP_CLIENT_CREDENTIAL: "certificate" }).sort(), [
      "MSSP_CLIENT_CERTIFICATE_KEY_ID",
      "MSSP_CLIENT_CERTIFICATE_THUMBPRINT",
    ]);
    const keyId = "https://kv-example.vault.azure.net/keys/mssp-client-certificate/0123456789abcdef0123456789abcdef";
    const thumbprint = "q".repeat(43);
    assert.deepEqual(loadConfig({ ...noSecret, MSSP_CLIENT_CREDENTIAL: "certificate", MSSP_CLIENT_CERTIFICATE_KEY_ID: keyId, MSSP_CLIENT_CERTIFICATE_THUMBPRINT: thumbprint }).credential, {
      kind: "certificate",
      keyId,
      thumbprint,
    });
    assert.deepEqual(
      problemsOf({
        ...valid,
        MSSP_CLIENT_CREDENTIAL: "password",
        MSSP_CLIENT_CERTIFICATE_KEY_ID: "https://kv-example.vault.azure.net/secrets/x",
        MSSP_CLIENT_CERTIFICATE_THUMBPRINT: "ABCDEF",
        MSSP_FIC_AUDIENCE: "api://SomethingElse",
      }).sort(),
      ["MSSP_CLIENT_CERTIFICATE_KEY_ID", "MSSP_CLIENT_CERTIFICATE_THUMBPRINT", "MSSP_CLIENT_CREDENTIAL", "MSSP_FIC_AUDIENCE"],
    );
  });

  it("takes the token-exchange audience from the app registration's cloud, and lets MSSP_FIC_AUDIENCE override it", () => {
    const mi = { ...valid, MSSP_CLIENT_CREDENTIAL: "managed-identity" };
    const audience = (env: Record<string, string>) => (loadConfig(env).credential as { audience: string }).audience;
    assert.equal(audience(mi), "api://AzureADTokenExchange");
    assert.equal(audience({ ...mi, DEFENDER_CLOUD: "gcc" }), "api://AzureADTokenExchange");
    assert.equal(audience({ ...mi, DEFENDER_CLOUD: "gcc-high" }), "api://AzureADTokenExchangeUSGov");
    assert.equal(audience({ ...mi, DEFENDER_CLOUD: "dod" }), "api://AzureADTokenExchangeUSGov");
    assert.equal(audience({ ...mi, ENTRA_AUTHORITY_HOST: "https://login.chinacloudapi.cn" }), "api://AzureADTokenExchangeChina");
    assert.equal(audience({ ...mi, MSSP_FIC_AUDIENCE: "api://AzureADTokenExchangeUSGov" }), "api://AzureADTokenExchangeUSGov");
  });

  it("reads the onboarding settings: default mode, callback retry and verification window", () => {
    assert.deepEqual(loadConfig(valid).onboarding, { defaultMode: "delegated", consentRetryMs: 60_000, consentVerifyMs: 24 * 3600_000 });
    assert.deepEqual(
      loadConfig({ ...valid, ONBOARDING_DEFAULT_MODE: "application", APP_CONSENT_RETRY_SECONDS: "0", APP_CONSENT_VERIFY_HOURS: "0" }).onboarding,
      { defaultMode: "application", consentRetryMs: 0, consentVerifyMs: 0 },
    );
    assert.deepEqual(
      problemsOf({ ...valid, ONBOARDING_DEFAULT_MODE: "app", APP_CONSENT_RETRY_SECONDS: "600", APP_CONSENT_VERIFY_HOURS: "-1" }).sort(),
      ["APP_CONSENT_RETRY_SECONDS", "APP_CONSENT_VERIFY_HOURS", "ONBOARDING_DEFAULT_MODE"],
    );
  });

  it("rejects a PULL_SCHEDULE that is not six-field NCRONTAB", () => {
    assert.deepEqual(problemsOf({ ...valid, PULL_SCHEDULE: "*/5 * * * *" }), ["PULL_SCHEDULE"]);
  });

  it("uses a tenant's own cloud preset, and the overrides only for the default cloud", () => {
    const c = loadConfig({ ...valid, DEFENDER_API_BASE_URL: "https://api.localhost:8443" });
    assert.equal(endpointsFor(c, undefined).apiBaseUrl, "https://api.localhost:8443");
    assert.equal(endpointsFor(c, "commercial").apiBaseUrl, "https://api.localhost:8443");
    assert.equal(endpointsFor(c, "gcc-high").authorityHost, "https://login.microsoftonline.us");
  });
});

const DEAD_STORAGE =
  "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
  "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;";

/** Runs `body` with these app settings in process.env (undefined removes one), then restores them. */
async function withSettings(settings: Record<string, string | undefined>, body: (logs: string[]) => Promise<void>): Promise<void> {
  const { resetServices } = await import("../shared/platform/services.js");
  const { resetHealthCache } = await import("../shared/platform/health.js");
  const saved = { ...process.env };
  for (const [name, value] of Object.entries({ ...valid, ...identity?.settings, ...settings })) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  resetServices();
  resetHealthCache();
  try {
    await body([]);
  } finally {
    process.env = saved;
    resetServices();
    resetHealthCache();
  }
}

/** Operator routes need an operator token: a fake Entra with the MSSP tenant, for the tests below. */
let identity: Awaited<ReturnType<typeof import("./support/operators.js").startOperatorIdentity>> | undefined;

describe("config errors at invocation", () => {
  before(async () => {
    const { startOperatorIdentity } = await import("./support/operators.js");
    identity = await startOperatorIdentity();
  });
  after(async () => {
    await identity?.stop();
  });

  it("fail the first invocation with the names of the bad settings in the log", async () => {
    const { callHttp } = await import("./support/functions.js");
    await withSettings(
      { MSSP_CLIENT_ID: undefined, MSSP_CLIENT_SECRET: undefined, PUBLIC_BASE_URL: undefined, ALERTS_STORAGE: undefined, KEY_VAULT_URL: "http://insecure.vault.azure.net" },
      async (logs) => {
        const result = await callHttp("tenants-list", { path: "tenants" }, logs);
        assert.equal(result.status, 500);
        assert.match(logs.join("\n"), /MSSP_CLIENT_ID is required.*KEY_VAULT_URL is invalid: must use https:/s);
      },
    );
  });

  it("name a malformed ALERTS_STORAGE connection string, never its value", async () => {
    const { callHttp } = await import("./support/functions.js");
    await withSettings({ ALERTS_STORAGE: "AccountName=acct;AccountKey=TOPSECRETKEY==;TableEndpoint=not a url" }, async (logs) => {
      const result = await callHttp("tenants-list", { path: "tenants" }, logs);
      assert.equal(result.status, 500);
      const log = logs.join("\n");
      assert.match(log, /api\.failed error=ConfigError: Invalid app settings: ALERTS_STORAGE is invalid: is not a valid storage connection string/);
      assert.doesNotMatch(log, /TOPSECRETKEY|not a url/);
    });
  });

  it("show in health: anonymous 503 unhealthy, the missing settings in the details, logged once each", async () => {
    const { callHttp } = await import("./support/functions.js");
    await withSettings({ KEY_VAULT_URL: undefined, MSSP_CLIENT_SECRET: undefined }, async (logs) => {
      const health = await callHttp("health", { path: "health" }, logs);
      assert.equal(health.status, 503);
      assert.deepEqual(health.json, { status: "unhealthy" });
      const details = await callHttp("health-details", { path: "health/details" }, logs);
      assert.equal(details.status, 503);
      const report = details.json as { failing: string[]; causes: { part: string; code: string; since: string }[] };
      assert.deepEqual(report.failing, ["config"]);
      assert.deepEqual(report.causes.map((c) => `${c.part} ${c.code}`).sort(), [
        "config MissingSetting:KEY_VAULT_URL",
        "config MissingSetting:MSSP_CLIENT_SECRET",
      ]);
      const lines = logs.filter((l) => l.includes("health.failing"));
      assert.deepEqual(lines.map((l) => l.replace(/^\[\w+\] /, "")).sort(), [
        "health.failing part=config code=MissingSetting:KEY_VAULT_URL",
        "health.failing part=config code=MissingSetting:MSSP_CLIENT_SECRET",
      ]);
    });
  });

  it("do not hide bad input: a bad body or id is a 400 even when storage is unreachable", async () => {
    const { callHttp } = await import("./support/functions.js");
    await withSettings({ ALERTS_STORAGE: DEAD_STORAGE }, async (logs) => {
      const body = async (text: string) =>
        callHttp("tenants-create", { method: "POST", path: "tenants", body: text }, logs);
      for (const [text, code] of [
        ["{}", "InvalidTenantId"],
        [JSON.stringify({ tenantId: "6b1f5c3e-0000-4000-8000-000000000001", cloud: "mars" }), "InvalidCloud"],
        ["{not json", "InvalidJson"],
      ] as const) {
        const result = await body(text);
        assert.equal(result.status, 400, result.text);
        assert.equal((result.json as { error: { code: string } }).error.code, code);
      }
      const deleted = await callHttp("tenants-delete", { method: "DELETE", path: "tenants/nope", params: { tenantId: "nope" } }, logs);
      assert.equal(deleted.status, 400);
      const start = await callHttp("consent-start", { path: "consent/start?tenant=x" }, logs);
      assert.equal(start.status, 400);
      const callback = await callHttp("consent-callback", { path: "consent/callback?code=x" }, logs);
      assert.equal(callback.status, 400);
      assert.deepEqual(logs, []);
    });
  });
});
