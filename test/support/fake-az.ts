/**
 * A stand-in for the Azure CLI, for test/register-app.test.ts: it runs
 * infra/scripts/register-app.sh without Azure. `startFakeAz` listens on a loopback port;
 * `azWrapper` is the `az` the test puts first on PATH, a few lines of bash that send the
 * arguments (and stdin, for `keyvault secret set`) over /dev/tcp and replay the answer.
 * The fake keeps a small model of Entra ID app registrations, one Key Vault (firewall,
 * secret, RBAC) and role assignments, answers the commands and `--query` forms the script
 * uses, enforces the vault's firewall and RBAC on data-plane calls as Key Vault does, and
 * records every call (never stdin's content). Any other command exits 2, so a new call in
 * the script is noticed. For the operator registrations it also models identifier URIs,
 * app roles, the `api` property (scopes, token version, pre-authorized apps), SPA redirect
 * URIs, service principals and app role assignments, changed through `az rest` as the
 * script does (Microsoft Graph PATCH/GET/POST). Certificates: `keyvault certificate create` makes a version
 * with a made-up DER body (`cer`, base64) and key id, and keeps the policy's `exportable`.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server } from "node:net";

export interface FakeApp {
  appId: string;
  displayName: string;
  tags: string[];
  signInAudience: string;
  redirectUris: string[];
  /** Ids of requested permissions (delegated scopes and app roles) on the Defender API. */
  scopes: string[];
  /** Ids of requested permissions on Microsoft Graph (absent: none). */
  graphScopes?: string[];
  credentials: { keyId: string; displayName: string; endDateTime: string; type?: "password" | "certificate"; certificate?: string }[];
  identifierUris?: string[];
  appRoles?: { id: string; value: string; allowedMemberTypes: string[]; isEnabled: boolean; [k: string]: unknown }[];
  api?: {
    requestedAccessTokenVersion?: number | null;
    oauth2PermissionScopes?: { id: string; value: string; [k: string]: unknown }[];
    preAuthorizedApplications?: { appId: string; delegatedPermissionIds: string[] }[];
  };
  spa?: { redirectUris: string[] };
  /** Delegated permissions on APIs other than WindowsDefenderATP (that one is `scopes`). */
  permissions?: { api: string; id: string }[];
  federatedCredentials?: { name: string; issuer: string; subject: string; audiences: string[] }[];
}

export interface FakeAzState {
  loggedIn: boolean;
  userType: "user" | "servicePrincipal";
  /** Object id of the signed-in principal. */
  objectId: string;
  callerIp: string;
  /** The signed-in tenant, and the cloud `az cloud show` names. */
  tenantId?: string;
  cloud?: "AzureCloud" | "AzureUSGovernment" | "AzureChinaCloud";
  defenderScopeId: string;
  /** Id of the Defender API's app role Alert.Read.All. */
  defenderRoleId?: string;
  /** Ids of Microsoft Graph's delegated scope and app role SecurityAlert.Read.All (Graph's service principal is in every tenant). */
  graphScopeId?: string;
  graphRoleId?: string;
  apps: FakeApp[];
  servicePrincipals: string[];
  vault: { name: string; id: string; publicNetworkAccess: "Enabled" | "Disabled"; defaultAction: "Allow" | "Deny"; ipRules: string[] };
  /** The deployer already holds a data role on the vault (grantDeployerDataAccess). */
  standingAccess: boolean;
  secret?: { name: string; tags: Record<string, string>; expires?: string; contentType?: string; valueLength: number; versions: number };
  certificate?: { name: string; versions: { kid: string; cer: string; exportable: boolean }[] };
  roleAssignments: { id: string; principalId: string; scope: string; role: string }[];
  counter: number;
  /** Service principal object ids and settings, by appId. */
  spDetails?: Record<string, { id: string; appRoleAssignmentRequired: boolean }>;
  appRoleAssignments?: { principalId: string; resourceId: string; appRoleId: string }[];
}

export const DEFENDER_APP_ID = "fc780465-2017-40d4-a0c5-307022471b92";
export const GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000";

/** x5t#S256 of a fake certificate: base64url SHA-256 of its DER (what the script must compute). */
export function thumbprintOf(cerBase64: string): string {
  return createHash("sha256").update(Buffer.from(cerBase64, "base64")).digest("base64url");
}

class AzError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

function parseArgs(argv: string[]): { command: string[]; options: Map<string, string[]> } {
  const command: string[] = [];
  const options = new Map<string, string[]>();
  let i = 0;
  while (i < argv.length && !(argv[i] ?? "").startsWith("-")) command.push(argv[i++] ?? "");
  while (i < argv.length) {
    const name = argv[i++] ?? "";
    const values: string[] = [];
    while (i < argv.length && !(argv[i] ?? "").startsWith("--")) values.push(argv[i++] ?? "");
    options.set(name === "-o" ? "--output" : name, [...(options.get(name) ?? []), ...values]);
  }
  return { command, options };
}

function run(state: FakeAzState, argv: string[], stdin: () => string): string {
  const { command, options } = parseArgs(argv);
  const opt = (name: string) => options.get(name)?.[0] ?? "";
  const has = (name: string) => options.has(name);
  const query = opt("--query");
  const cmd = command.join(" ");
  const newId = (): string => `${(++state.counter).toString(16).padStart(8, "0")}-0000-4000-8000-${state.counter.toString().padStart(12, "0")}`;
  const app = (id: string) => {
    const found = state.apps.find((a) => a.appId === id);
    if (!found) throw new AzError(`Resource '${id}' does not exist or one of its queried reference-property objects are not present.`);
    return found;
  };
  const vault = (name: string) => {
    if (name !== state.vault.name) throw new AzError(`(ResourceNotFound) The Resource 'Microsoft.KeyVault/vaults/${name}' was not found.`);
    return state.vault;
  };
  /** Key Vault data plane: firewall first, then RBAC (scope: vault or the object). */
  const dataPlane = (secretName: string, collection = "secrets") => {
    vault(opt("--vault-name") || state.vault.name);
    if (state.vault.publicNetworkAccess === "Disabled")
      throw new AzError("(Forbidden) Public network access is disabled and request is not from a trusted service nor via an approved private link.\nCode: Forbidden\nInner error: {'code': 'ForbiddenByConnection'}");
    if (state.vault.defaultAction === "Deny" && !state.vault.ipRules.includes(`${state.callerIp}/32`))
      throw new AzError(`(Forbidden) Client address is not authorized and caller is not a trusted service.\nClient address: ${state.callerIp}\nInner error: {'code': 'ForbiddenByFirewall'}`);
    const scopes = [state.vault.id, `${state.vault.id}/${collection}/${secretName}`];
    const allowed = state.standingAccess || state.roleAssignments.some((r) => r.principalId === state.objectId && scopes.includes(r.scope));
    if (!allowed)
      throw new AzError(`(Forbidden) Caller is not authorized to perform action on resource.\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\nInner error: {'code': 'ForbiddenByRbac'}`);
  };
  const spDetails = (appId: string) => {
    state.spDetails ??= {};
    state.spDetails[appId] ??= { id: newId(), appRoleAssignmentRequired: false };
    return state.spDetails[appId];
  };
  const secret = (name: string) => {
    if (!state.secret || state.secret.name !== name) throw new AzError(`(SecretNotFound) A secret with (name/id) ${name} was not found in this key vault.`);
    return state.secret;
  };

  switch (cmd) {
    case "account show":
      if (!state.loggedIn) throw new AzError("Please run 'az login' to setup account.");
      if (query === "user.type") return state.userType;
      if (query === "user.name") return "deployer-app-id";
      if (query === "tenantId") return state.tenantId ?? "72f988bf-86f1-41af-91ab-2d7cd011db47";
      return "";
    case "cloud show": {
      const cloud = state.cloud ?? "AzureCloud";
      if (query === "name") return cloud;
      if (query === "endpoints.activeDirectory") {
        return { AzureCloud: "https://login.microsoftonline.com", AzureUSGovernment: "https://login.microsoftonline.us", AzureChinaCloud: "https://login.chinacloudapi.cn" }[cloud];
      }
      throw new AzError(`fake az: unsupported query for cloud show: ${query}`, 2);
    }
    case "ad signed-in-user show":
      return state.objectId;
    case "ad sp show": {
      const id = opt("--id");
      if (id === DEFENDER_APP_ID) {
        if (query.includes("oauth2PermissionScopes[?value=='Alert.Read']")) return state.defenderScopeId;
        if (query.includes("appRoles[?value=='Alert.Read.All']")) return state.defenderRoleId ?? "";
        throw new AzError(`fake az: unsupported query for the Defender service principal: ${query}`, 2);
      }
      if (id === GRAPH_APP_ID) {
        if (query.includes("oauth2PermissionScopes[?value=='SecurityAlert.Read.All']")) return state.graphScopeId ?? "";
        if (query.includes("appRoles[?value=='SecurityAlert.Read.All']")) return state.graphRoleId ?? "";
        throw new AzError(`fake az: unsupported query for the Microsoft Graph service principal: ${query}`, 2);
      }
      if (id === "deployer-app-id") return state.objectId;
      if (!state.servicePrincipals.includes(id)) throw new AzError(`Service principal '${id}' doesn't exist`);
      const details = spDetails(id);
      if (query === "id") return details.id;
      if (query === "appRoleAssignmentRequired") return String(details.appRoleAssignmentRequired);
      if (!query) return "";
      throw new AzError(`fake az: unsupported query for ad sp show: ${query}`, 2);
    }
    case "ad sp create":
      state.servicePrincipals.push(opt("--id"));
      return "";
    case "ad sp update": {
      const id = opt("--id");
      if (!state.servicePrincipals.includes(id)) throw new AzError(`Service principal '${id}' doesn't exist`);
      if (opt("--set") !== "appRoleAssignmentRequired=true") throw new AzError(`fake az: unsupported --set ${opt("--set")}`, 2);
      spDetails(id).appRoleAssignmentRequired = true;
      return "";
    }
    case "rest":
      return rest(state, opt("--method").toUpperCase(), opt("--url"), opt("--body"), query);
    case "ad app show": {
      const a = app(opt("--id"));
      if (query === "signInAudience") return a.signInAudience;
      if (query === "web.redirectUris[]") return a.redirectUris.join("\n");
      if (query === "join(',', tags)") return a.tags.join(",");
      if (query.startsWith("requiredResourceAccess")) {
        const m = /resourceAppId=='([^']*)'.*id=='([^']*)'/.exec(query);
        if (!m) throw new AzError(`fake az: unsupported query ${query}`, 2);
        // Defender's and Graph's permissions, and another API's (the console's Operator.Access).
        const held =
          m[1] === DEFENDER_APP_ID
            ? a.scopes
            : m[1] === GRAPH_APP_ID
              ? (a.graphScopes ?? [])
              : (a.permissions ?? []).filter((p) => p.api === m[1]).map((p) => p.id);
        return held.includes(m[2] ?? "") ? (m[2] ?? "") : "";
      }
      if (query === "identifierUris[]") return (a.identifierUris ?? []).join("\n");
      if (query === "spa.redirectUris[]") return (a.spa?.redirectUris ?? []).join("\n");
      if (query === "api.requestedAccessTokenVersion") return a.api?.requestedAccessTokenVersion == null ? "None" : String(a.api.requestedAccessTokenVersion);
      const role = /^appRoles\[\?value=='([^']*)'\] \| \[0\]\.\[id, join\(',', sort\(allowedMemberTypes\)\), to_string\(isEnabled\)\]$/.exec(query);
      if (role) {
        const r = (a.appRoles ?? []).find((x) => x.value === role[1]);
        return r ? `${r.id}\t${[...r.allowedMemberTypes].sort().join(",")}\t${String(r.isEnabled)}` : "";
      }
      if (query === "appRoles[?value!='Reader' && value!='Operator' && value!='Admin']") {
        return JSON.stringify((a.appRoles ?? []).filter((r) => !["Reader", "Operator", "Admin"].includes(r.value)), null, 2);
      }
      const scope = /^api\.oauth2PermissionScopes\[\?value([!=]=)'([^']*)'\](\.id \| \[0\])?$/.exec(query);
      if (scope) {
        const list = (a.api?.oauth2PermissionScopes ?? []).filter((x) => (scope[1] === "==" ? x.value === scope[2] : x.value !== scope[2]));
        return scope[3] ? (list[0]?.id ?? "") : JSON.stringify(list, null, 2);
      }
      const preOthers = /^api\.preAuthorizedApplications\[\?appId!='([^']*)'\]$/.exec(query);
      if (preOthers) return JSON.stringify((a.api?.preAuthorizedApplications ?? []).filter((p) => p.appId !== preOthers[1]), null, 2);
      const pre = /^api\.preAuthorizedApplications\[\?appId=='([^']*)'\]\.delegatedPermissionIds\[\] \| \[\?@=='([^']*)'\] \| \[0\]$/.exec(query);
      if (pre) {
        const ids = (a.api?.preAuthorizedApplications ?? []).filter((p) => p.appId === pre[1]).flatMap((p) => p.delegatedPermissionIds);
        return ids.includes(pre[2] ?? "") ? (pre[2] ?? "") : "";
      }
      if (!query) return "";
      throw new AzError(`fake az: unsupported query for ad app show: ${query}`, 2);
    }
    case "ad app list": {
      const m = /^displayName eq '((?:[^']|'')*)'$/.exec(opt("--filter"));
      if (!m) throw new AzError(`fake az: unsupported filter: ${opt("--filter")}`, 2);
      const name = (m[1] ?? "").replace(/''/g, "'");
      if (query !== "[].[appId, join(',', tags)]") throw new AzError(`fake az: unsupported query for ad app list: ${query}`, 2);
      return state.apps
        .filter((a) => a.displayName === name)
        .map((a) => `${a.appId}\t${a.tags.join(",")}`)
        .join("\n");
    }
    case "ad app create": {
      const a: FakeApp = {
        appId: newId(),
        displayName: opt("--display-name"),
        tags: [],
        signInAudience: opt("--sign-in-audience"),
        redirectUris: options.get("--web-redirect-uris") ?? [],
        scopes: [],
        credentials: [],
      };
      state.apps.push(a);
      return a.appId;
    }
    case "ad app update": {
      const a = app(opt("--id"));
      if (has("--add")) {
        const [field, value] = options.get("--add") ?? [];
        if (field !== "tags" || !value) throw new AzError(`fake az: unsupported --add ${field}`, 2);
        if (!a.tags.includes(value)) a.tags.push(value);
      }
      if (has("--sign-in-audience")) a.signInAudience = opt("--sign-in-audience");
      if (has("--web-redirect-uris")) a.redirectUris = options.get("--web-redirect-uris") ?? [];
      if (has("--identifier-uris")) a.identifierUris = options.get("--identifier-uris") ?? [];
      return "";
    }
    case "ad app permission add": {
      const a = app(opt("--id"));
      const api = opt("--api");
      if (api === GRAPH_APP_ID) a.graphScopes ??= [];
      for (const permission of options.get("--api-permissions") ?? []) {
        const m = /^([0-9a-f-]{36})=(Scope|Role)$/.exec(permission);
        if (!m) throw new AzError(`fake az: bad --api-permissions ${permission}`, 2);
        // Defender's are `scopes`, Graph's `graphScopes`; another API's (the console's Operator.Access) `permissions`.
        if (api === DEFENDER_APP_ID) a.scopes.push(m[1] ?? "");
        else if (api === GRAPH_APP_ID) a.graphScopes!.push(m[1] ?? "");
        else a.permissions = [...(a.permissions ?? []), { api, id: m[1] ?? "" }];
      }
      return "";
    }
    case "ad app federated-credential list": {
      const a = app(opt("--id"));
      const fics = a.federatedCredentials ?? [];
      const byName = /^\[\?name=='([^']*)'\]/.exec(query)?.[1];
      const found = fics.find((f) => f.name === byName);
      if (query.endsWith("].name | [0]")) return found?.name ?? "";
      if (query.endsWith("| [0].[issuer, subject, join(',', audiences)]")) return found ? `${found.issuer}\t${found.subject}\t${found.audiences.join(",")}` : "";
      throw new AzError(`fake az: unsupported query for federated-credential list: ${query}`, 2);
    }
    case "ad app federated-credential create":
    case "ad app federated-credential update": {
      const a = app(opt("--id"));
      const p = JSON.parse(opt("--parameters")) as { name: string; issuer: string; subject: string; audiences: string[] };
      const list = a.federatedCredentials ?? [];
      if (cmd.endsWith("create") && list.some((f) => f.name === p.name)) throw new AzError(`FederatedIdentityCredential with name ${p.name} already exists.`);
      if (cmd.endsWith("update") && !list.some((f) => f.name === opt("--federated-credential-id"))) throw new AzError("federated credential not found");
      if (list.length >= 20) throw new AzError("At most 20 federated identity credentials per application.");
      a.federatedCredentials = [...list.filter((f) => f.name !== p.name), { name: p.name, issuer: p.issuer, subject: p.subject, audiences: p.audiences }];
      return "";
    }
    case "ad app credential reset": {
      const a = app(opt("--id"));
      if (!has("--append")) throw new AzError("fake az: reset without --append would delete the other credentials", 2);
      const keyId = newId();
      if (has("--cert")) {
        // The public part of a Key Vault certificate (az reads it with the caller's vault access).
        const certificate = state.certificate;
        dataPlane(opt("--cert"), "certificates");
        if (opt("--keyvault") !== state.vault.name || certificate?.name !== opt("--cert")) throw new AzError(`certificate ${opt("--cert")} not found in ${opt("--keyvault")}`);
        a.credentials.push({ keyId, displayName: opt("--display-name"), endDateTime: "", type: "certificate", certificate: certificate.versions.at(-1)?.cer ?? "" });
        return "";
      }
      a.credentials.push({ keyId, displayName: opt("--display-name"), endDateTime: opt("--end-date") });
      if (query !== "password") throw new AzError("fake az: the password must be queried alone", 2);
      return `FAKE-CLIENT-SECRET-${keyId}`;
    }
    case "ad app credential list": {
      const a = app(opt("--id"));
      if (has("--cert")) {
        const name = /displayName=='([^']*)'/.exec(query)?.[1];
        return a.credentials.find((c) => c.type === "certificate" && c.displayName === name)?.keyId ?? "";
      }
      const byName = /displayName=='([^']*)'\]\.keyId \| \[0\]$/.exec(query);
      if (byName) return a.credentials.find((c) => c.displayName === byName[1])?.keyId ?? "";
      const keep = /displayName != '([^']*)'/.exec(query)?.[1];
      return a.credentials
        .filter((c) => c.displayName.startsWith("mssp-collector ") && c.displayName !== keep)
        .map((c) => `${c.keyId}\t${c.displayName}`)
        .join("\n");
    }
    case "ad app credential delete": {
      const a = app(opt("--id"));
      a.credentials = a.credentials.filter((c) => c.keyId !== opt("--key-id"));
      return "";
    }
    case "keyvault show": {
      const v = vault(opt("--name"));
      if (query !== "[id, properties.publicNetworkAccess, properties.networkAcls.defaultAction]") throw new AzError(`fake az: unsupported query ${query}`, 2);
      return `${v.id}\t${v.publicNetworkAccess}\t${v.defaultAction}`;
    }
    case "keyvault update": {
      const v = vault(opt("--name"));
      if (has("--public-network-access")) v.publicNetworkAccess = opt("--public-network-access") as "Enabled" | "Disabled";
      if (has("--default-action")) v.defaultAction = opt("--default-action") as "Allow" | "Deny";
      return "";
    }
    case "keyvault network-rule add": {
      const v = vault(opt("--name"));
      if (!v.ipRules.includes(opt("--ip-address"))) v.ipRules.push(opt("--ip-address"));
      return "";
    }
    case "keyvault network-rule remove": {
      const v = vault(opt("--name"));
      v.ipRules = v.ipRules.filter((ip) => ip !== opt("--ip-address"));
      return "";
    }
    case "keyvault secret show": {
      const name = opt("--name");
      dataPlane(name);
      const s = secret(name);
      if (query === "id") return `${state.vault.id}/secrets/${name}/v${s.versions}`;
      if (query === "tags.clientId") return s.tags.clientId ?? "";
      if (query === "tags.credential") return s.tags.credential ?? "";
      throw new AzError(`fake az: unsupported query for secret show: ${query}`, 2);
    }
    case "keyvault secret set": {
      const name = opt("--name");
      dataPlane(name);
      if (opt("--file") !== "/dev/stdin") throw new AzError("fake az: the secret must come on stdin", 2);
      if (has("--value")) throw new AzError("fake az: --value puts the secret on the command line", 2);
      const value = stdin();
      const tags = Object.fromEntries((options.get("--tags") ?? []).map((t) => t.split("=", 2) as [string, string]));
      const expires = opt("--expires");
      state.secret = {
        name,
        tags,
        ...(expires ? { expires } : {}),
        contentType: opt("--content-type"),
        valueLength: value.length,
        versions: (state.secret?.name === name ? state.secret.versions : 0) + 1,
      };
      return "";
    }
    case "keyvault certificate show": {
      const name = opt("--name");
      dataPlane(name, "certificates");
      const c = state.certificate;
      if (!c || c.name !== name) throw new AzError(`(CertificateNotFound) A certificate with (name/id) ${name} was not found in this key vault.`);
      const latest = c.versions.at(-1)!;
      if (query === "id") return `${state.vault.id}/certificates/${name}/${latest.kid.split("/").pop()}`;
      if (query === "kid") return latest.kid;
      if (query === "cer") return latest.cer;
      throw new AzError(`fake az: unsupported query for certificate show: ${query}`, 2);
    }
    case "keyvault certificate create": {
      const name = opt("--name");
      dataPlane(name, "certificates");
      const policy = JSON.parse(opt("--policy")) as { keyProperties?: { exportable?: boolean } };
      const version = randomBytes(16).toString("hex");
      const c = state.certificate?.name === name ? state.certificate : { name, versions: [] };
      c.versions.push({ kid: `https://${state.vault.name}.vault.azure.net/keys/${name}/${version}`, cer: randomBytes(600).toString("base64"), exportable: policy.keyProperties?.exportable !== false });
      state.certificate = c;
      return "";
    }
    case "role assignment list": {
      const found = state.roleAssignments.find((r) => r.principalId === opt("--assignee") && r.scope === opt("--scope") && r.role === opt("--role"));
      if (query !== "[0].id") throw new AzError(`fake az: unsupported query for role assignment list: ${query}`, 2);
      return found?.id ?? "";
    }
    case "resource show": {
      const id = opt("--ids");
      if (state.secret && id === `${state.vault.id}/secrets/${state.secret.name}`) return "";
      if (state.certificate && id === `${state.vault.id}/certificates/${state.certificate.name}`) return "";
      throw new AzError(`(ResourceNotFound) The Resource '${id}' was not found.`);
    }
    case "role assignment create": {
      const assignment = { id: `/role-assignments/${newId()}`, principalId: opt("--assignee-object-id"), scope: opt("--scope"), role: opt("--role") };
      state.roleAssignments.push(assignment);
      return assignment.id;
    }
    case "role assignment delete": {
      const before = state.roleAssignments.length;
      state.roleAssignments = state.roleAssignments.filter((r) => r.id !== opt("--ids"));
      if (state.roleAssignments.length === before) throw new AzError("role assignment not found");
      return "";
    }
    default:
      throw new AzError(`fake az: unsupported command: ${cmd}`, 2);
  }
}

const GRAPH = "https://graph.microsoft.com/v1.0";

/** `az rest` against Microsoft Graph: the application PATCHes and app role assignments the script makes. */
function rest(state: FakeAzState, method: string, url: string, body: string, query: string): string {
  const patch = new RegExp(`^${GRAPH.replace(/\./g, "\\.")}/applications\\(appId='([^']*)'\\)$`).exec(url);
  if (method === "PATCH" && patch) {
    const a = state.apps.find((x) => x.appId === patch[1]);
    if (!a) throw new AzError("(Request_ResourceNotFound) Resource does not exist.");
    const change = JSON.parse(body) as Partial<FakeApp>;
    if (change.appRoles) {
      // Graph refuses to drop an enabled role.
      for (const old of a.appRoles ?? []) {
        if (old.isEnabled && !change.appRoles.some((r) => r.id === old.id)) {
          throw new AzError("(CannotDeleteOrUpdateEnabledEntitlement) Property value cannot be deleted or updated unless it is disabled first.");
        }
      }
      a.appRoles = change.appRoles;
    }
    if (change.api) {
      for (const old of a.api?.oauth2PermissionScopes ?? []) {
        if (!(change.api.oauth2PermissionScopes ?? []).some((x) => x.id === old.id)) {
          throw new AzError("(CannotDeleteOrUpdateEnabledEntitlement) Property value cannot be deleted or updated unless it is disabled first.");
        }
      }
      a.api = { ...a.api, ...change.api };
    }
    if (change.spa) a.spa = change.spa;
    return "";
  }
  const assigned = new RegExp(`^${GRAPH.replace(/\./g, "\\.")}/servicePrincipals/([^/]+)/appRoleAssignedTo$`).exec(url);
  if (assigned && method === "GET") {
    const m = /^value\[\?principalId=='([^']*)'\]\.appRoleId \| \[0\]$/.exec(query);
    if (!m) throw new AzError(`fake az: unsupported query ${query}`, 2);
    return (state.appRoleAssignments ?? []).find((r) => r.resourceId === assigned[1] && r.principalId === m[1])?.appRoleId ?? "";
  }
  if (assigned && method === "POST") {
    const input = JSON.parse(body) as { principalId: string; resourceId: string; appRoleId: string };
    state.appRoleAssignments = [...(state.appRoleAssignments ?? []), input];
    return "";
  }
  throw new AzError(`fake az: unsupported az rest ${method} ${url}`, 2);
}

export interface FakeAzCall {
  argv: string[];
  code: number;
  /** Whether the command read stdin (its content is not kept). */
  stdin: boolean;
}

export interface FakeAz {
  port: number;
  state: FakeAzState;
  calls: FakeAzCall[];
  close(): Promise<void>;
}

const quote = (text: string) => `'${text.replace(/'/g, "'\\''")}'`;

/** Serves the fake az on 127.0.0.1; `state` may be replaced between runs. */
export async function startFakeAz(state: FakeAzState): Promise<FakeAz> {
  const fake: FakeAz = { port: 0, state, calls: [], close: async () => {} };
  const server: Server = createServer((socket) => {
    let buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (buffer[buffer.length - 1] !== 1) return;
      const parts = buffer.subarray(0, buffer.length - 1).toString("utf8").split("\0");
      parts.pop(); // after the last NUL
      const input = (parts.pop() ?? "").replace(/^--fake-stdin=/, "");
      const argv = parts;
      let stdinRead = false;
      let code = 0;
      let out = "";
      let err = "";
      const before = JSON.stringify(fake.state);
      try {
        out = run(fake.state, argv, () => {
          stdinRead = true;
          return input;
        });
        const output = argv.includes("--output") ? argv[argv.indexOf("--output") + 1] : argv.includes("-o") ? argv[argv.indexOf("-o") + 1] : "json";
        if (output === "none") out = "";
      } catch (e) {
        fake.state = JSON.parse(before) as FakeAzState; // a failed command changes nothing
        const azError = e instanceof AzError ? e : new AzError(String(e), 2);
        err = `ERROR: ${azError.message}\n`;
        code = azError.exitCode;
      }
      fake.calls.push({ argv, code, stdin: stdinRead });
      const reply = `${out ? `printf '%s\\n' ${quote(out)}\n` : ""}${err ? `printf '%s' ${quote(err)} >&2\n` : ""}exit ${code}\n`;
      socket.end(reply);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  fake.port = (server.address() as { port: number }).port;
  fake.close = () => new Promise((resolve) => server.close(() => resolve()));
  return fake;
}

/** The `az` executable: bash that forwards to the fake on `port`. */
export function azWrapper(port: number): string {
  return [
    "#!/usr/bin/env bash",
    "input=''",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: bash parameter expansion, not a template
    'if [ "${1:-} ${2:-} ${3:-}" = "keyvault secret set" ]; then input="$(cat)"; fi',
    `exec 3<>/dev/tcp/127.0.0.1/${port}`,
    "{ printf '%s\\0' \"$@\" \"--fake-stdin=$input\"; printf '\\001'; } >&3",
    'eval "$(cat <&3)"',
    "",
  ].join("\n");
}
