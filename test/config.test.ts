import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, endpointsFor, loadConfig } from "../shared/platform/config.js";

const valid = {
  MSSP_CLIENT_ID: "11111111-2222-3333-4444-555555555555",
  MSSP_CLIENT_SECRET: "s3cr3t-value",
  PUBLIC_BASE_URL: "https://collector.example.com/",
  KEY_VAULT_URL: "https://kv-example.vault.azure.net",
  ALERTS_STORAGE: "UseDevelopmentStorage=true",
  PULL_SCHEDULE: "0 */5 * * * *",
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
      "PUBLIC_BASE_URL",
      "PULL_SCHEDULE",
    ]);
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

  it("rejects bad values with the setting's name and never echoes the secret", () => {
    try {
      loadConfig({ ...valid, MSSP_CLIENT_ID: "not-a-guid", DEFENDER_CLOUD: "mars", PULL_PAGE_SIZE: "20000" });
      assert.fail("expected a ConfigError");
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems.map((p) => p.setting).sort(), ["DEFENDER_CLOUD", "MSSP_CLIENT_ID", "PULL_PAGE_SIZE"]);
      assert.ok(!err.message.includes(valid.MSSP_CLIENT_SECRET));
    }
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

describe("config errors at invocation", () => {
  it("fail the first invocation with the names of the bad settings in the log", async () => {
    const { resetServices } = await import("../shared/platform/services.js");
    const { callHttp } = await import("./support/functions.js");
    const saved = { ...process.env };
    for (const name of ["MSSP_CLIENT_ID", "MSSP_CLIENT_SECRET", "KEY_VAULT_URL", "PUBLIC_BASE_URL", "ALERTS_STORAGE"]) {
      delete process.env[name];
    }
    process.env.PULL_SCHEDULE = "0 */5 * * * *";
    process.env.KEY_VAULT_URL = "http://insecure.vault.azure.net";
    resetServices();
    const logs: string[] = [];
    try {
      const result = await callHttp("tenants-list", { path: "tenants" }, logs);
      assert.equal(result.status, 500);
      assert.match(logs.join("\n"), /MSSP_CLIENT_ID is required.*KEY_VAULT_URL is invalid: must use https:/s);
    } finally {
      process.env = saved;
      resetServices();
    }
  });
});
