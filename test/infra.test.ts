/**
 * Drift and safety tests for the deployment (infra/, azure.yaml). Bicep cannot be compiled
 * here, so the checks read the files as text (test/support/infra-checks.ts). Every check
 * is also run on mutated copies, to prove it fails when the thing it guards is removed.
 * The real validation is `az bicep build --file infra/main.bicep` / `azd provision --preview`
 * (docs/deploy.md).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { REQUIRED_SETTINGS, SETTING_NAMES } from "../shared/platform/config.js";
import {
  ALERT_LOG_LINES,
  appSettings,
  checkAlertRules,
  checkAzureYaml,
  checkIdentitySettings,
  checkKnownAppSettings,
  checkNoStorageKeys,
  checkOutputs,
  checkParameters,
  checkRequiredSettings,
  checkRoleAssignmentPrincipals,
  checkRoleDefinitions,
  checkSecurityProperties,
  DOCUMENTED_ROLES,
  IDENTITY_SETTINGS,
  type InfraFiles,
} from "./support/infra-checks.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const APP = "infra/modules/app.bicep";
const RBAC = "infra/modules/rbac.bicep";
const STORAGE = "infra/modules/storage.bicep";
const VAULT = "infra/modules/keyvault.bicep";
const MAIN = "infra/main.bicep";
const ALERTS = "infra/modules/alerts.bicep";
const PARAMS = "infra/main.parameters.json";

function readTree(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !/\.(bicep|json|sh|bicepparam)$/.test(entry.name)) continue;
    const full = join(entry.parentPath, entry.name);
    files[relative(root, full).split("\\").join("/")] = readFileSync(full, "utf8");
  }
  return files;
}

const files: InfraFiles = readTree("infra");
const azureYaml = readFileSync(join(root, "azure.yaml"), "utf8");
const deployDoc = readFileSync(join(root, "docs", "deploy.md"), "utf8");
const requiredNames = [...REQUIRED_SETTINGS, "PULL_SCHEDULE"];

/** A copy of the files with one replacement made; fails when `from` does not occur. */
function mutate(path: string, from: string | RegExp, to: string, base: InfraFiles = files): InfraFiles {
  const text = base[path];
  assert.ok(text !== undefined, `${path} exists`);
  const changed = text.replace(from, to);
  assert.notEqual(changed, text, `mutation of ${path} must change something (${String(from)})`);
  return { ...base, [path]: changed };
}

/** A copy with the line that sets `key:` in `path` removed (or commented out). */
function withoutLine(path: string, key: string, comment = false): InfraFiles {
  return mutate(path, new RegExp(`^([ \\t]*)(${key}\\s*:.*)$`, "m"), comment ? "$1// $2" : "");
}

/** A Bicep / azd interpolation, "${expr}" (kept out of string literals for the linter). */
const interp = (expr: string) => "$" + "{" + expr + "}";

const has = (problems: string[], fragment: string) =>
  assert.ok(
    problems.some((p) => p.includes(fragment)),
    `expected a problem mentioning "${fragment}", got ${JSON.stringify(problems)}`,
  );

describe("infra: the real files pass every check", () => {
  it("finds the infra files", () => {
    for (const path of [MAIN, PARAMS, APP, RBAC, STORAGE, VAULT, ALERTS, "infra/modules/monitoring.bicep"]) {
      assert.ok(path in files, `${path} exists`);
    }
  });

  it("passes all checks", () => {
    assert.deepEqual(checkRequiredSettings(files, REQUIRED_SETTINGS), []);
    assert.deepEqual(checkKnownAppSettings(files, SETTING_NAMES), []);
    assert.deepEqual(checkNoStorageKeys({ ...files, "azure.yaml": azureYaml }), []);
    assert.deepEqual(checkIdentitySettings(files), []);
    assert.deepEqual(checkRoleAssignmentPrincipals(files), []);
    assert.deepEqual(checkRoleDefinitions(files), []);
    assert.deepEqual(checkSecurityProperties(files), []);
    assert.deepEqual(checkAzureYaml(azureYaml, files), []);
    assert.deepEqual(checkParameters(files[MAIN] ?? "", files[PARAMS] ?? ""), []);
    assert.deepEqual(checkOutputs(files[MAIN] ?? ""), []);
    assert.deepEqual(checkAlertRules(files), []);
  });

  it("sets every required setting of shared/platform/config.ts, and PULL_SCHEDULE every five minutes", () => {
    const settings = appSettings(files);
    for (const name of requiredNames) assert.ok(settings.has(name), `${name} is set`);
    assert.equal(settings.get("PULL_SCHEDULE"), "pullSchedule");
    assert.match(files[MAIN] ?? "", /param pullSchedule string = '0 \*\/5 \* \* \* \*'/);
    assert.match(settings.get("MSSP_CLIENT_SECRET") ?? "", /@Microsoft\.KeyVault\(VaultName=\$\{keyVaultName\};SecretName=mssp-client-secret\)/);
    assert.equal(settings.get("PUBLIC_BASE_URL"), `'https://${interp("functionApp.properties.defaultHostName")}'`);
    assert.equal(
      settings.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING"),
      `'ClientId=${interp("identityClientId")};Authorization=AAD'`,
    );
  });
});

describe("infra (a): required app settings", () => {
  for (const name of requiredNames) {
    it(`fails when ${name} is removed or commented out`, () => {
      has(checkRequiredSettings(withoutLine(APP, name), REQUIRED_SETTINGS), `app setting ${name} is missing`);
      has(checkRequiredSettings(withoutLine(APP, name, true), REQUIRED_SETTINGS), `app setting ${name} is missing`);
    });
  }

  it("fails on an app-owned setting the app does not read (typo)", () => {
    has(checkKnownAppSettings(mutate(APP, "PULL_SCHEDULE:", "PULL_SCHEDUEL:"), SETTING_NAMES), "PULL_SCHEDUEL");
  });
});

describe("infra (b): no storage keys", () => {
  for (const leak of [
    "'DefaultEndpointsProtocol=https;AccountName=x;EndpointSuffix=core.windows.net'",
    "'AccountName=x;AccountKey=abc'",
    "storage.listKeys().keys[0].value",
  ]) {
    it(`fails on ${leak}`, () => {
      const leaked = mutate(APP, "  PULL_SCHEDULE: pullSchedule", `  PULL_SCHEDULE: pullSchedule\n  LEAK: ${leak}`);
      assert.ok(checkNoStorageKeys(leaked).length > 0);
    });
  }

  it("fails on a key in azure.yaml or the parameters file too", () => {
    has(checkNoStorageKeys({ "azure.yaml": `${azureYaml}\n# AccountKey=abc` }), "azure.yaml");
    has(checkNoStorageKeys(mutate(PARAMS, `"${interp("AZURE_ENV_NAME")}"`, '"AccountKey=abc"')), PARAMS);
  });

  it("ignores Bicep comments", () => {
    assert.deepEqual(checkNoStorageKeys(mutate(APP, "// Functions host storage", "// no AccountKey= here. Functions host storage")), []);
  });
});

describe("infra (c): identity-based connections", () => {
  for (const name of IDENTITY_SETTINGS) {
    it(`fails when ${name} is removed`, () => {
      has(checkIdentitySettings(withoutLine(APP, name)), `app setting ${name} is missing`);
    });
  }

  it("fails when keyVaultReferenceIdentity is removed or not the user-assigned identity", () => {
    has(checkIdentitySettings(withoutLine(APP, "keyVaultReferenceIdentity")), "keyVaultReferenceIdentity is missing");
    has(
      checkIdentitySettings(mutate(APP, "keyVaultReferenceIdentity: identityId", "keyVaultReferenceIdentity: 'SystemAssigned'")),
      "keyVaultReferenceIdentity must be",
    );
  });

  it("fails when a credential is not managedidentity or a client id is a literal", () => {
    has(
      checkIdentitySettings(mutate(APP, "ALERTS_STORAGE__credential: 'managedidentity'", "ALERTS_STORAGE__credential: 'connectionstring'")),
      "ALERTS_STORAGE__credential must be 'managedidentity'",
    );
    has(
      checkIdentitySettings(mutate(APP, "AZURE_CLIENT_ID: identityClientId", "AZURE_CLIENT_ID: '00000000-0000-0000-0000-000000000000'")),
      "AZURE_CLIENT_ID must come from the identity",
    );
  });

  it("fails on key-based or Flex-refused settings", () => {
    for (const name of ["AzureWebJobsStorage", "ALERTS_STORAGE", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"]) {
      const added = mutate(APP, "  PULL_SCHEDULE: pullSchedule", `  PULL_SCHEDULE: pullSchedule\n  ${name}: 'x'`);
      has(checkIdentitySettings(added), `app setting ${name} must not be set`);
    }
  });

  it("fails when MSSP_CLIENT_SECRET is not a Key Vault reference", () => {
    has(checkIdentitySettings(mutate(APP, /MSSP_CLIENT_SECRET: .*$/m, "MSSP_CLIENT_SECRET: 'hunter2'")), "Key Vault reference");
  });
});

describe("infra (d): role assignments are bound to the identity or the deploying user", () => {
  it("fails when an assignment's principalId is something else", () => {
    const other = mutate(RBAC, /principalId: identityPrincipalId\n(\s*)principalType: 'ServicePrincipal'/, "principalId: someoneElse\n$1principalType: 'ServicePrincipal'");
    has(checkRoleAssignmentPrincipals(other), "principalId must be identityPrincipalId or principalId");
  });

  it("fails when principalType is wrong or missing", () => {
    has(checkRoleAssignmentPrincipals(mutate(RBAC, "principalType: 'ServicePrincipal'", "principalType: 'User'")), "principalType must be 'ServicePrincipal'");
    has(checkRoleAssignmentPrincipals(mutate(RBAC, /\n\s*principalType: principalType/, "")), "principalType is missing");
  });

  it("fails when a name is not guid(scope.id, principalId, roleDefinitionId)", () => {
    has(
      checkRoleAssignmentPrincipals(mutate(RBAC, "name: guid(vault.id, identityPrincipalId,", "name: guid(vault.id, 'fixed',")),
      "name must be guid(vault.id, identityPrincipalId",
    );
  });

  it("fails when the deploying user's assignment is unconditional", () => {
    has(
      checkRoleAssignmentPrincipals(mutate(RBAC, "= if (!empty(principalId)) {", "= {")),
      "conditional on !empty(principalId)",
    );
  });

  it("fails when the role is not a subscriptionResourceId of a role definition", () => {
    has(
      checkRoleAssignmentPrincipals(
        mutate(RBAC, "roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)", "roleDefinitionId: someRole"),
      ),
      "roleDefinitionId must be",
    );
  });
});

describe("infra (e): role definition ids and least privilege", () => {
  it("uses the documented ids", () => {
    const rbac = files[RBAC] ?? "";
    for (const id of Object.values(DOCUMENTED_ROLES)) assert.ok(rbac.includes(id), `${id} is used`);
  });

  it("fails when an id differs from the documented one", () => {
    const contributor = "b24988ac-6180-42a0-ab88-20f7382dd24c";
    has(checkRoleDefinitions(mutate(RBAC, DOCUMENTED_ROLES["Storage Blob Data Owner"], contributor)), "documented id is b7e6dc6d");
  });

  it("fails when a required grant is missing", () => {
    const noMetrics = mutate(RBAC, /resource identityMetricsRole [\s\S]*?\n}\n/, "");
    has(checkRoleDefinitions(noMetrics), "missing grant: Monitoring Metrics Publisher for the identity on Microsoft.Insights/components");
    const noQueue = mutate(RBAC, /\n\s*roles\.storageQueueDataContributor(?=\n)/, "");
    has(checkRoleDefinitions(noQueue), "missing grant: Storage Queue Data Contributor for the identity");
  });

  it("fails on a grant beyond least privilege", () => {
    const extra = mutate(
      RBAC,
      "var storageDataRoles = [",
      "var storageDataRoles = [\n  roles.keyVaultSecretsOfficer",
    );
    has(checkRoleDefinitions(extra), "unexpected grant (least privilege): Key Vault Secrets Officer for the identity on Microsoft.Storage/storageAccounts");
  });
});

describe("infra (f): security properties", () => {
  const cases: [string, string, string | RegExp, string, string][] = [
    ["shared key access", STORAGE, "allowSharedKeyAccess: false", "allowSharedKeyAccess: true", "allowSharedKeyAccess must be false"],
    ["storage TLS", STORAGE, "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'", "minimumTlsVersion must be 'TLS1_2'"],
    ["public blobs", STORAGE, "allowBlobPublicAccess: false", "allowBlobPublicAccess: true", "allowBlobPublicAccess must be false"],
    ["HTTPS only", APP, /\n\s*httpsOnly: true/, "", "httpsOnly is missing"],
    ["site TLS", APP, "      minTlsVersion: '1.2'", "      minTlsVersion: '1.0'", "minTlsVersion must be '1.2'"],
    ["FTPS", APP, "ftpsState: 'Disabled'", "ftpsState: 'FtpsOnly'", "ftpsState must be 'Disabled'"],
    ["basic auth (scm)", APP, /name: 'scm'\n(\s*)properties: \{\n(\s*)allow: false/, "name: 'scm'\n$1properties: {\n$2allow: true", "allow must be false"],
    ["deployment identity", APP, "type: 'UserAssignedIdentity'", "type: 'StorageAccountConnectionString'", "user-assigned identity"],
    ["Flex plan", APP, "name: 'FC1'", "name: 'Y1'", "Flex Consumption (FC1)"],
    ["vault RBAC", VAULT, "enableRbacAuthorization: true", "enableRbacAuthorization: false", "enableRbacAuthorization must be true"],
    ["vault soft delete", VAULT, "enableSoftDelete: true", "enableSoftDelete: false", "enableSoftDelete must be true"],
    ["App Insights local auth", "infra/modules/monitoring.bicep", "DisableLocalAuth: true", "DisableLocalAuth: false", "DisableLocalAuth must be true"],
  ];
  for (const [what, path, from, to, expected] of cases) {
    it(`fails on ${what}`, () => {
      has(checkSecurityProperties(mutate(path, from, to)), expected);
    });
  }

  it("passes Flex Consumption runtime node with the version parameter (22 default, 24 allowed)", () => {
    const app = files[APP] ?? "";
    assert.match(app, /runtime: \{\s*name: 'node'\s*version: nodeVersion\s*\}/);
    assert.match(files[MAIN] ?? "", /@allowed\(\[\s*'22'\s*'24'\s*\]\)\s*param nodeVersion string = '22'/);
  });
});

describe("infra (g): azure.yaml points at the app", () => {
  it("fails when the host, language, project or service name change", () => {
    has(checkAzureYaml(azureYaml.replace("host: function", "host: appservice"), files), "host must be function");
    has(checkAzureYaml(azureYaml.replace("language: ts", "language: python"), files), "language must be ts or js");
    has(checkAzureYaml(azureYaml.replace("project: .", "project: ./src"), files), "project must be .");
    has(checkAzureYaml(azureYaml.replace("  api:", "  web:"), files), "no service 'api'");
  });

  it("fails when the app's azd-service-name tag no longer matches", () => {
    has(checkAzureYaml(azureYaml, mutate(MAIN, "serviceName: 'api'", "serviceName: 'web'")), "is not always 'api'");
    has(checkAzureYaml(azureYaml, mutate(APP, "'azd-service-name': serviceName", "'azd-service-name': 'web'")), "is 'web'");
  });

  it("fails when remote build is switched on", () => {
    has(checkAzureYaml(azureYaml.replace("remoteBuild: false", "remoteBuild: true"), files), "remoteBuild");
  });
});

describe("infra: parameters and outputs", () => {
  it("fails on a parameter main.bicep does not declare, or a missing required one", () => {
    has(checkParameters(files[MAIN] ?? "", (files[PARAMS] ?? "").replace('"msspClientId"', '"clientId"')), "clientId is not a parameter");
    has(checkParameters(files[MAIN] ?? "", (files[PARAMS] ?? "").replace('"environmentName"', '"envName"')), "required parameter environmentName");
  });

  it("outputs the app URL, the exact redirect URI and the vault name", () => {
    assert.match(files[MAIN] ?? "", /output CONSENT_REDIRECT_URI string = '\$\{app\.outputs\.url\}\/api\/consent\/callback'/);
    has(checkOutputs((files[MAIN] ?? "").replace(/output AZURE_KEY_VAULT_NAME .*\n/, "")), "AZURE_KEY_VAULT_NAME is missing");
    has(checkOutputs((files[MAIN] ?? "").replace("/api/consent/callback'", "/callback'")), "must end with /api/consent/callback");
  });
});

// The rules against the lines the app really writes: test/alert-rules.test.ts.
describe("infra: alert rules match the app's log lines", () => {
  it("fails when a rule no longer looks for the log line", () => {
    has(checkAlertRules(mutate(ALERTS, 'status == "reconsent-required"', 'status == "expired"')), "reconsent-required");
    has(checkAlertRules(mutate(ALERTS, /"pull\.succeeded "/g, '"pull.ok "')), "pull.succeeded");
  });

  it("documents the log lines the rules rely on", () => {
    for (const line of Object.values(ALERT_LOG_LINES)) assert.ok(deployDoc.includes(line), `docs/deploy.md names: ${line}`);
  });
});

describe("infra/scripts/register-app.sh", () => {
  const path = "infra/scripts/register-app.sh";
  const script = files[path] ?? "";

  it("is strict bash and parses", () => {
    assert.match(script, /^#!\/usr\/bin\/env bash\n/);
    assert.match(script, /^set -euo pipefail$/m);
    const bash = spawnSync("bash", ["-n", join(root, path)], { encoding: "utf8" });
    if (bash.error) return; // no bash on this machine
    assert.equal(bash.status, 0, bash.stderr);
  });

  it("registers a multi-tenant app with the Defender Alert.Read delegated permission", () => {
    assert.ok(script.includes("--sign-in-audience AzureADMultipleOrgs"));
    assert.ok(script.includes('DEFENDER_APP_ID="fc780465-2017-40d4-a0c5-307022471b92"'));
    assert.ok(script.includes('DEFENDER_SCOPE="Alert.Read"'));
    assert.ok(script.includes("oauth2PermissionScopes[?value=='$DEFENDER_SCOPE'].id"));
    assert.ok(script.includes('"$scope_id=Scope"'));
    assert.ok(script.includes("/api/consent/callback"));
    assert.ok(script.includes("azd env set MSSP_CLIENT_ID"));
    assert.ok(script.includes("--rotate"));
  });

  it("pipes the client secret into Key Vault without exposing it", () => {
    assert.ok(script.includes('SECRET_NAME="mssp-client-secret"'));
    assert.match(script, /--query password --output tsv \| store_secret/);
    assert.match(script, /az keyvault secret set [^\n]*--file \/dev\/stdin/);
    assert.doesNotMatch(script, /secret set[^\n]*--value/);
    assert.doesNotMatch(script, /echo[^\n]*\$password|set -x/);
  });
});
