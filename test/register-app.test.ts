/**
 * infra/scripts/register-app.sh against a fake `az` (test/support/fake-az.ts): which app
 * registration it adopts, what it refuses, the temporary vault access it grants and always
 * takes back, the secret's expiry, and that it says what it did.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { after, describe, it } from "node:test";
import { ROOT } from "../dev/package.js";
import { azWrapper, DEFENDER_APP_ID, type FakeApp, type FakeAzCall, type FakeAzState, startFakeAz, thumbprintOf } from "./support/fake-az.js";

const SCRIPT = join(ROOT, "infra", "scripts", "register-app.sh");
const REDIRECT = "https://func-abc.azurewebsites.net/api/consent/callback";
const VAULT_ID = "/subscriptions/s/resourceGroups/rg-prod/providers/Microsoft.KeyVault/vaults/kv-abc";
const ME = "99999999-9999-4999-8999-999999999999";
const SCOPE_ID = "a1b2c3d4-0000-4000-8000-000000000001";
const ROLE_ID = "a1b2c3d4-0000-4000-8000-000000000002";
const GRAPH_SCOPE_ID = "b1b2c3d4-0000-4000-8000-000000000005";
const GRAPH_ROLE_ID = "b1b2c3d4-0000-4000-8000-000000000006";
const FIC_PRINCIPAL = "f1c0f1c0-0000-4000-8000-000000000003";
const APP_PRINCIPAL = "a9900000-0000-4000-8000-000000000004";
const TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424";
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function initialState(change: (s: FakeAzState) => void = () => {}): FakeAzState {
  const state: FakeAzState = {
    loggedIn: true,
    userType: "user",
    objectId: ME,
    callerIp: "203.0.113.7",
    defenderScopeId: SCOPE_ID,
    defenderRoleId: ROLE_ID,
    graphScopeId: GRAPH_SCOPE_ID,
    graphRoleId: GRAPH_ROLE_ID,
    tenantId: TENANT,
    apps: [],
    servicePrincipals: [DEFENDER_APP_ID],
    vault: { name: "kv-abc", id: VAULT_ID, publicNetworkAccess: "Enabled", defaultAction: "Allow", ipRules: [] },
    standingAccess: false,
    roleAssignments: [],
    counter: 0,
  };
  change(state);
  return state;
}

function app(displayName: string, tags: string[], appId = "aaaaaaaa-1111-4111-8111-111111111111"): FakeApp {
  return { appId, displayName, tags, signInAudience: "AzureADMultipleOrgs", redirectUris: [REDIRECT], scopes: [], credentials: [] };
}

interface Run {
  status: number | null;
  stderr: string;
  stdout: string;
  state: FakeAzState;
  calls: FakeAzCall[];
}

/**
 * Runs the script (asynchronously: the fake az answers from this process). Without
 * `--credential` in `args` it runs with `--credential secret` (the tests of the secret's
 * handling), unless `credential` is null (the script's own default).
 */
async function runScript(state: FakeAzState, args: string[] = [], env: Record<string, string> = {}, credential: string | null = "secret"): Promise<Run> {
  if (credential !== null && !args.includes("--credential")) args = ["--credential", credential, ...args];
  const dir = mkdtempSync(join(tmpdir(), "register-app-"));
  dirs.push(dir);
  const fake = await startFakeAz(state);
  try {
    writeFileSync(join(dir, "az"), azWrapper(fake.port));
    chmodSync(join(dir, "az"), 0o755);
    const child = spawn("bash", [SCRIPT, "--no-azd", "--redirect-uri", REDIRECT, "--vault-name", "kv-abc", "--env-name", "prod", ...args], {
      env: { PATH: `${dir}${delimiter}${process.env.PATH ?? ""}`, HOME: dir, REGISTER_APP_RETRY_SECONDS: "0", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString("utf8");
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString("utf8");
    });
    const status = await new Promise<number | null>((resolve) => child.on("close", resolve));
    return { status, stdout, stderr, state: fake.state, calls: fake.calls };
  } finally {
    await fake.close();
  }
}

const called = (run: Run, ...words: string[]) => run.calls.filter((c) => words.every((w, i) => c.argv[i] === w));
const noSecretLeaked = (run: Run) => assert.doesNotMatch(run.stdout + run.stderr, /FAKE-CLIENT-SECRET/, "the client secret never appears in the output");

describe("register-app.sh", { skip: spawnSync("bash", ["--version"]).error ? "no bash on this machine" : false }, () => {
  it("first run: creates a registration tagged azd-env:<env>, stores the secret with its expiry, takes back the temporary role, and says so", async () => {
    const run = await runScript(initialState());
    assert.equal(run.status, 0, run.stderr);
    noSecretLeaked(run);
    const [created] = run.state.apps;
    assert.ok(created);
    assert.deepEqual(
      run.state.apps.map((a) => a.displayName),
      ["MSSP Defender collector (prod)", "MSSP Defender collector operator API (prod)", "MSSP Defender collector console (prod)"],
    );
    assert.equal(created.displayName, "MSSP Defender collector (prod)");
    assert.deepEqual(created.tags, ["azd-env:prod"]);
    assert.deepEqual(created.scopes, [SCOPE_ID, ROLE_ID], "delegated Alert.Read and application Alert.Read.All, ids from the service principal");
    assert.deepEqual(created.graphScopes, [GRAPH_SCOPE_ID, GRAPH_ROLE_ID], "Graph SecurityAlert.Read.All, delegated and application, for tenants on source graph");
    const [list] = called(run, "ad", "app", "list");
    assert.ok(list, "looked for an existing registration");
    assert.equal(list.argv[list.argv.indexOf("--filter") + 1], "displayName eq 'MSSP Defender collector (prod)'", "exact name, not a prefix");

    const secret = run.state.secret;
    assert.ok(secret, "the secret is stored");
    assert.equal(secret.tags.clientId, created.appId);
    assert.ok(secret.valueLength > 0);
    const expires = Date.parse(secret.expires ?? "");
    const inAYear = Date.now() + 365 * 24 * 3600 * 1000;
    assert.ok(Math.abs(expires - inAYear) < 3 * 24 * 3600 * 1000, `expires ${secret.expires} is about a year away`);
    assert.equal(created.credentials[0]?.endDateTime, secret.expires, "the vault expiry is the client secret's own");
    assert.ok(called(run, "keyvault", "secret", "set").every((c) => c.stdin), "the value came on stdin");

    const grants = called(run, "role", "assignment", "create");
    assert.equal(grants.length, 1);
    assert.equal(grants[0]?.argv[grants[0].argv.indexOf("--scope") + 1], VAULT_ID, "the first secret needs the vault scope");
    assert.deepEqual(run.state.roleAssignments, [], "the temporary role is gone");
    assert.match(run.stderr, /summary of what this run did:/);
    assert.match(run.stderr, /- created the app registration 'MSSP Defender collector \(prod\)'/);
    assert.match(run.stderr, /- added a client secret .* expires /);
    assert.match(run.stderr, /- removed the temporary Key Vault Secrets Officer assignment/);
  });

  it("second run changes nothing but the temporary access, which is scoped to the secret", async () => {
    const first = await runScript(initialState());
    assert.equal(first.status, 0, first.stderr);
    const again = await runScript(first.state);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.state.apps.length, 3);
    assert.deepEqual(again.state.apps, first.state.apps, "no registration changed");
    assert.deepEqual(
      called(again, "rest").filter((c) => !c.argv.includes("GET")),
      [],
      "no Graph change",
    );
    assert.equal(again.state.secret?.versions, 1, "the secret is kept");
    assert.equal(again.state.apps[0]?.credentials.length, 1, "no new client secret");
    assert.equal(called(again, "ad", "app", "create").length, 0);
    const grant = called(again, "role", "assignment", "create")[0];
    assert.equal(grant?.argv[grant.argv.indexOf("--scope") + 1], `${VAULT_ID}/secrets/mssp-client-secret`);
    assert.deepEqual(again.state.roleAssignments, []);
    assert.match(again.stderr, /exists for .*; keeping it/);
  });

  it("adds Graph SecurityAlert.Read.All to a registration that has only the Defender permissions, and stops when Graph does not publish it", async () => {
    const older = (): FakeApp => ({ ...app("MSSP Defender collector (prod)", ["azd-env:prod"]), scopes: [SCOPE_ID, ROLE_ID] });
    const run = await runScript(initialState((s) => s.apps.push(older())), ["--fic-principal-id", FIC_PRINCIPAL], {}, null);
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(run.state.apps[0]?.scopes, [SCOPE_ID, ROLE_ID], "the Defender permissions are not requested twice");
    assert.deepEqual(run.state.apps[0]?.graphScopes, [GRAPH_SCOPE_ID, GRAPH_ROLE_ID]);
    assert.match(run.stderr, /- requested the delegated permission Microsoft Graph SecurityAlert\.Read\.All/);
    assert.match(run.stderr, /- requested the application permission Microsoft Graph SecurityAlert\.Read\.All/);
    assert.doesNotMatch(run.stderr, /permission WindowsDefenderATP/);

    const missing = await runScript(initialState((s) => {
        s.apps.push(older());
        delete s.graphRoleId;
      }), ["--fic-principal-id", FIC_PRINCIPAL], {}, null);
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /Microsoft Graph publishes no application permission named SecurityAlert\.Read\.All/);
  });

  it("uses standing data access when the deployer has it, without granting anything", async () => {
    const run = await runScript(initialState((s) => (s.standingAccess = true)));
    assert.equal(run.status, 0, run.stderr);
    assert.equal(called(run, "role", "assignment", "create").length, 0);
  });

  it("refuses to adopt a registration of the same name without its tag, unless --client-id names it", async () => {
    const foreign = app("MSSP Defender collector (prod)", []);
    const refused = await runScript(initialState((s) => s.apps.push(foreign)));
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /lacks the tag azd-env:prod.*refusing to adopt it/);
    assert.equal(refused.state.apps.length, 1, "nothing created");
    assert.deepEqual(refused.state.apps[0]?.redirectUris, [REDIRECT]);
    assert.equal(refused.state.secret, undefined, "no secret added to someone else's app");

    const adopted = await runScript(initialState((s) => s.apps.push(foreign)), ["--client-id", foreign.appId]);
    assert.equal(adopted.status, 0, adopted.stderr);
    assert.deepEqual(adopted.state.apps[0]?.tags, ["azd-env:prod"]);
    assert.match(adopted.stderr, /- adopted the app registration/);
  });

  it("uses the registration carrying its tag, and ignores another environment's", async () => {
    const mine = app("MSSP Defender collector (prod)", ["azd-env:prod"], "bbbbbbbb-2222-4222-8222-222222222222");
    const other = app("MSSP Defender collector (prod)", ["azd-env:test"], "cccccccc-3333-4333-8333-333333333333");
    const run = await runScript(initialState((s) => s.apps.push(other, mine)));
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.state.secret?.tags.clientId, mine.appId);
    assert.equal(run.state.apps.find((a) => a.appId === other.appId)?.credentials.length, 0);
  });

  it("refuses to overwrite a vault secret of another client ID (or one without a clientId tag)", async () => {
    const mine = app("MSSP Defender collector (prod)", ["azd-env:prod"]);
    const foreignSecret = (tags: Record<string, string>) =>
      initialState((s) => {
        s.apps.push(mine);
        s.secret = { name: "mssp-client-secret", tags, valueLength: 10, versions: 3 };
      });
    for (const [state, message] of [
      [foreignSecret({ clientId: "dddddddd-4444-4444-8444-444444444444" }), /holds the client secret of app dddddddd-.*refusing to overwrite it/],
      [foreignSecret({}), /without a clientId tag.*refusing to replace it/],
    ] as const) {
      const run = await runScript(state, ["--rotate"]);
      assert.notEqual(run.status, 0);
      assert.match(run.stderr, message);
      assert.equal(run.state.secret?.versions, 3, "the secret is untouched");
      assert.equal(run.state.apps[0]?.credentials.length, 0, "no client secret was created");
      assert.deepEqual(run.state.roleAssignments, [], "temporary access is taken back after a failure too");
      assert.match(run.stderr, /stopped with an error/);
    }
  });

  it("with a private vault: opens it to the deployer's IP only while it runs, and closes it again", async () => {
    const privateVault = (s: FakeAzState) => {
      s.vault.publicNetworkAccess = "Disabled";
      s.vault.defaultAction = "Deny";
    };
    const run = await runScript(initialState(privateVault), ["--deployer-ip", "203.0.113.7"]);
    assert.equal(run.status, 0, run.stderr);
    assert.ok(run.state.secret, "the secret is stored through the temporary opening");
    assert.deepEqual(run.state.vault, { name: "kv-abc", id: VAULT_ID, publicNetworkAccess: "Disabled", defaultAction: "Deny", ipRules: [] });
    assert.equal(called(run, "keyvault", "network-rule", "add")[0]?.argv.includes("203.0.113.7/32"), true);
    assert.match(run.stderr, /- opened the vault firewall to 203\.0\.113\.7/);
    assert.match(run.stderr, /- closed the vault firewall to 203\.0\.113\.7\/32 again/);
    assert.match(run.stderr, /- turned public network access of kv-abc off again/);

    const failing = await runScript(
      initialState((s) => {
        privateVault(s);
        s.apps.push(app("MSSP Defender collector (prod)", ["azd-env:prod"]));
        s.secret = { name: "mssp-client-secret", tags: { clientId: "dddddddd-4444-4444-8444-444444444444" }, valueLength: 10, versions: 1 };
      }),
      ["--deployer-ip", "203.0.113.7"],
    );
    assert.notEqual(failing.status, 0);
    assert.equal(failing.state.vault.publicNetworkAccess, "Disabled", "closed again after a failure");
    assert.deepEqual(failing.state.vault.ipRules, []);
    assert.deepEqual(failing.state.roleAssignments, []);
  });

  it("creates the operator API (v2 tokens, Operator.Access, roles for users and apps) and the console (SPA, pre-authorized), and gives the deployer Admin", async () => {
    const run = await runScript(initialState());
    assert.equal(run.status, 0, run.stderr);
    const api = run.state.apps.find((a) => a.displayName === "MSSP Defender collector operator API (prod)");
    const console = run.state.apps.find((a) => a.displayName === "MSSP Defender collector console (prod)");
    assert.ok(api && console);
    for (const a of [api, console]) {
      assert.equal(a.signInAudience, "AzureADMyOrg", "single tenant");
      assert.deepEqual(a.tags, ["azd-env:prod"]);
      assert.deepEqual(a.credentials, [], "no secret: the console is a public client, the API signs in nobody");
    }
    assert.deepEqual(api.identifierUris, [`api://${api.appId}`]);
    assert.equal(api.api?.requestedAccessTokenVersion, 2);
    const scope = api.api?.oauth2PermissionScopes?.find((x) => x.value === "Operator.Access");
    assert.ok(scope);
    assert.deepEqual(
      (api.appRoles ?? []).map((r) => `${r.value} ${[...r.allowedMemberTypes].sort().join(",")} ${r.isEnabled}`),
      ["Reader Application,User true", "Operator Application,User true", "Admin Application,User true"],
    );
    assert.deepEqual(api.api?.preAuthorizedApplications, [{ appId: console.appId, delegatedPermissionIds: [scope.id] }]);
    assert.deepEqual(console.spa?.redirectUris, ["https://func-abc.azurewebsites.net/api/console/"]);
    assert.deepEqual(console.redirectUris, [], "no Web redirect URI on the console");
    assert.deepEqual(console.permissions, [{ api: api.appId, id: scope.id }]);
    assert.ok(run.state.servicePrincipals.includes(api.appId) && run.state.servicePrincipals.includes(console.appId));
    const apiSp = run.state.spDetails?.[api.appId];
    assert.equal(apiSp?.appRoleAssignmentRequired, true);
    const admin = api.appRoles?.find((r) => r.value === "Admin");
    assert.deepEqual(run.state.appRoleAssignments, [{ principalId: ME, resourceId: apiSp?.id, appRoleId: admin?.id }]);
    assert.match(run.stderr, /- gave you the operator API's Admin role/);
    assert.match(run.stderr, /operators: API .*, console .* \(tenant 72f988bf-/);

    // Again, after someone added a role of their own: the IDs stay, the extra role stays, nothing is re-created.
    const custom = { id: "eeeeeeee-0000-4000-8000-000000000001", value: "Auditor", allowedMemberTypes: ["User"], isEnabled: true };
    const state = structuredClone(run.state);
    const apiAgain = state.apps.find((a) => a.appId === api.appId)!;
    apiAgain.appRoles = [...(apiAgain.appRoles ?? []).filter((r) => r.value !== "Operator"), custom];
    const again = await runScript(state);
    assert.equal(again.status, 0, again.stderr);
    const after = again.state.apps.find((a) => a.appId === api.appId)!;
    assert.deepEqual(
      (after.appRoles ?? []).map((r) => r.value).sort(),
      ["Admin", "Auditor", "Operator", "Reader"],
    );
    assert.equal(after.appRoles?.find((r) => r.value === "Reader")?.id, api.appRoles?.find((r) => r.value === "Reader")?.id, "role IDs are kept");
    assert.equal(again.state.appRoleAssignments?.length, 1, "Admin is given once");
    assert.match(again.stderr, /- set the app roles Reader Operator Admin/);
  });

  it("adopts operator registrations only when tagged or named, and skips the Admin assignment on request", async () => {
    const foreignApi = app("MSSP Defender collector operator API (prod)", [], "ffffffff-5555-4555-8555-555555555555");
    const refused = await runScript(initialState((s) => s.apps.push(foreignApi)));
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /'MSSP Defender collector operator API \(prod\)' exists .* lacks the tag azd-env:prod/);
    assert.equal(refused.state.apps.find((a) => a.appId === foreignApi.appId)?.appRoles, undefined, "someone else's registration is left alone");

    const adopted = await runScript(initialState((s) => s.apps.push(foreignApi)), ["--operator-api-client-id", foreignApi.appId, "--no-operator-admin"]);
    assert.equal(adopted.status, 0, adopted.stderr);
    assert.deepEqual(adopted.state.apps.find((a) => a.appId === foreignApi.appId)?.tags, ["azd-env:prod"]);
    assert.deepEqual(adopted.state.appRoleAssignments ?? [], []);
  });

  it("by default (managed-identity): both permissions, the federated credential, and no secret, vault access or role anywhere", async () => {
    const run = await runScript(initialState(), ["--fic-principal-id", FIC_PRINCIPAL], {}, null);
    assert.equal(run.status, 0, run.stderr);
    const [created] = run.state.apps;
    assert.ok(created);
    assert.deepEqual(created.scopes, [SCOPE_ID, ROLE_ID]);
    assert.deepEqual(created.graphScopes, [GRAPH_SCOPE_ID, GRAPH_ROLE_ID]);
    assert.deepEqual(created.federatedCredentials, [
      { name: "mssp-collector-managed-identity", issuer: `https://login.microsoftonline.com/${TENANT}/v2.0`, subject: FIC_PRINCIPAL, audiences: ["api://AzureADTokenExchange"] },
    ]);
    assert.equal(run.state.secret, undefined, "no client secret in the vault");
    assert.deepEqual(created.credentials, [], "no client secret on the app registration");
    assert.deepEqual(run.calls.filter((c) => c.argv[0] === "keyvault" || c.argv[0] === "role"), [], "the vault is never touched");
    assert.match(run.stderr, /- added the federated identity credential mssp-collector-managed-identity .*no client secret is needed/);
    assert.match(run.stderr, /Credential: managed-identity/);

    const again = await runScript(run.state, ["--fic-principal-id", FIC_PRINCIPAL], {}, null);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.state.apps[0]?.federatedCredentials?.length, 1);
    assert.match(again.stderr, /is in place/);
    assert.match(again.stderr, /summary: nothing changed/);

    const moved = await runScript(run.state, ["--fic-principal-id", APP_PRINCIPAL], {}, null);
    assert.equal(moved.state.apps[0]?.federatedCredentials?.[0]?.subject, APP_PRINCIPAL, "another identity: the credential follows it");
  });

  it("uses the US Government audience in that cloud, and refuses to run without the identity's principal ID", async () => {
    const gov = await runScript(initialState((s) => (s.cloud = "AzureUSGovernment")), ["--credential", "managed-identity", "--fic-principal-id", FIC_PRINCIPAL]);
    assert.equal(gov.status, 0, gov.stderr);
    assert.deepEqual(gov.state.apps[0]?.federatedCredentials?.[0]?.audiences, ["api://AzureADTokenExchangeUSGov"]);
    assert.equal(gov.state.apps[0]?.federatedCredentials?.[0]?.issuer, `https://login.microsoftonline.us/${TENANT}/v2.0`);
    const missing = await runScript(initialState(), ["--credential", "managed-identity"]);
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /no principal ID of the managed identity/);
    assert.deepEqual(missing.calls, [], "nothing was asked or changed");
  });

  it("certificate: a non-exportable key in Key Vault, its public part on the app, Crypto User on that key only; no secret", async () => {
    const run = await runScript(initialState(), ["--credential", "certificate", "--app-principal-id", APP_PRINCIPAL]);
    assert.equal(run.status, 0, run.stderr);
    const cert = run.state.certificate;
    assert.ok(cert && cert.name === "mssp-client-certificate" && cert.versions.length === 1);
    assert.equal(cert.versions[0]?.exportable, false, "the private key never leaves the vault");
    const [created] = run.state.apps;
    assert.deepEqual(
      created?.credentials.map((c) => [c.type, c.certificate]),
      [["certificate", cert.versions[0]?.cer]],
      "only the public part, no client secret",
    );
    assert.equal(run.state.secret, undefined);
    assert.deepEqual(run.state.roleAssignments.map((r) => [r.principalId, r.scope, r.role]), [[APP_PRINCIPAL, `${VAULT_ID}/keys/mssp-client-certificate`, CRYPTO_USER]], "a standing grant on that key alone; the temporary one is gone");
    const thumbprint = thumbprintOf(cert.versions[0]?.cer ?? "");
    assert.ok(run.stderr.includes(`x5t#S256 ${thumbprint}`), "the SHA-256 thumbprint the app sends");
    assert.ok(run.stderr.includes(cert.versions[0]?.kid ?? "?"));
    assert.match(run.stderr, /- removed the temporary Key Vault Certificates Officer assignment/);

    const again = await runScript(run.state, ["--credential", "certificate", "--app-principal-id", APP_PRINCIPAL]);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.state.certificate?.versions.length, 1, "kept");
    assert.equal(again.state.apps[0]?.credentials.length, 1, "not uploaded twice");
    assert.equal(again.state.roleAssignments.length, 1, "not granted twice");
  });

  it("without an environment name it creates nothing, and the hook can be skipped", () => {
    const dir = mkdtempSync(join(tmpdir(), "register-app-"));
    dirs.push(dir);
    const noEnv = spawnSync("bash", [SCRIPT, "--no-azd", "--redirect-uri", REDIRECT, "--vault-name", "kv-abc"], {
      encoding: "utf8",
      env: { PATH: `${dir}${delimiter}${process.env.PATH ?? ""}` },
    });
    writeFileSync(join(dir, "az"), "#!/bin/sh\nexit 0\n");
    chmodSync(join(dir, "az"), 0o755);
    const again = spawnSync("bash", [SCRIPT, "--no-azd", "--redirect-uri", REDIRECT, "--vault-name", "kv-abc"], {
      encoding: "utf8",
      env: { PATH: `${dir}${delimiter}${process.env.PATH ?? ""}` },
    });
    assert.notEqual(again.status, 0);
    assert.match(again.stderr, /no environment name to tag the app registration with/);
    assert.ok(noEnv.status !== 0);
    const skipped = spawnSync("bash", [SCRIPT, "--from-azd-hook"], { encoding: "utf8", env: { PATH: process.env.PATH ?? "", MSSP_SKIP_APP_REGISTRATION: "true" } });
    assert.equal(skipped.status, 0);
    assert.match(skipped.stderr, /skipping the app registration/);
  });
});
