/**
 * Pure checks over the text of infra/ (and the parsed azure.yaml) that relate the Bicep to
 * the rest of the project: the app settings shared/platform/config.ts reads, the roles the
 * app needs, the log lines the alert rules match, the tag azd deploys to. The Bicep
 * compiler (test/bicep.test.ts) covers syntax, types and references, and
 * test/infra.test.ts asserts the security properties on the compiled template; these
 * checks also run where no Bicep CLI is installed. Each takes the file texts and returns a
 * list of problems (empty = fine), so a test can run it on the real files and on mutated
 * copies to prove it notices what it is meant to notice.
 *
 * The Bicep "parser" is deliberately small: comments are stripped (a commented-out
 * setting does not count), strings and nested brackets are skipped correctly, and
 * resources / vars / object entries are found by structure rather than by grep.
 */

/** Relative path (e.g. "infra/modules/app.bicep") to file text. */
export type InfraFiles = Readonly<Record<string, string>>;

/** Built-in role definition ids, from Microsoft Learn "Azure built-in roles". */
export const DOCUMENTED_ROLES = {
  "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
  "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
  "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
  "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
  "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
} as const;
type RoleName = keyof typeof DOCUMENTED_ROLES;

const STORAGE = "Microsoft.Storage/storageAccounts";
const VAULT = "Microsoft.KeyVault/vaults";
const COMPONENT = "Microsoft.Insights/components";
const DCR = "Microsoft.Insights/dataCollectionRules";

/** Every grant the app's identity must have, and nothing more (least privilege). */
export const IDENTITY_GRANTS: readonly (readonly [RoleName, string])[] = [
  ["Key Vault Secrets Officer", VAULT],
  ["Storage Blob Data Owner", STORAGE],
  ["Storage Queue Data Contributor", STORAGE],
  ["Storage Table Data Contributor", STORAGE],
  ["Monitoring Metrics Publisher", COMPONENT],
  // Logs Ingestion into the Sentinel workspace (infra/modules/sentinel.bicep, when deployed).
  ["Monitoring Metrics Publisher", DCR],
];
/** The deploying user's optional grants (local runs against the cloud resources). */
export const USER_GRANTS: readonly (readonly [RoleName, string])[] = [
  ["Key Vault Secrets Officer", VAULT],
  ["Storage Blob Data Owner", STORAGE],
  ["Storage Queue Data Contributor", STORAGE],
  ["Storage Table Data Contributor", STORAGE],
];

/** App settings that make the storage, Key Vault and telemetry clients use the identity. */
export const IDENTITY_SETTINGS = [
  "AzureWebJobsStorage__credential",
  "AzureWebJobsStorage__clientId",
  "ALERTS_STORAGE__credential",
  "ALERTS_STORAGE__clientId",
  "ALERTS_STORAGE__tableServiceUri",
  "ALERTS_STORAGE__queueServiceUri",
  "AZURE_CLIENT_ID",
] as const;

/** Settings that must not exist: key-based connections, and ones Flex Consumption refuses. */
export const FORBIDDEN_SETTINGS = [
  "AzureWebJobsStorage",
  "ALERTS_STORAGE",
  "FUNCTIONS_WORKER_RUNTIME",
  "FUNCTIONS_EXTENSION_VERSION",
  "WEBSITE_RUN_FROM_PACKAGE",
  "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
  "WEBSITE_CONTENTSHARE",
  "WEBSITE_NODE_DEFAULT_VERSION",
  "APPINSIGHTS_INSTRUMENTATIONKEY",
] as const;

/** Text that only appears when a storage account key leaks into configuration. */
export const KEY_PATTERNS = ["AccountKey=", "listKeys(", "DefaultEndpointsProtocol"] as const;

// ---------------------------------------------------------------------------------------
// A small Bicep reader
// ---------------------------------------------------------------------------------------

const CLOSERS: Record<string, string> = { "{": "}", "[": "]", "(": ")" };

/** Index just past the string that starts at i (t[i] is a quote). Handles ''' and ${...}. */
function skipString(t: string, i: number): number {
  if (t.startsWith("'''", i)) {
    const end = t.indexOf("'''", i + 3);
    return end < 0 ? t.length : end + 3;
  }
  let p = i + 1;
  while (p < t.length) {
    const c = t[p];
    if (c === "\\") p += 2;
    else if (c === "'") return p + 1;
    else if (c === "$" && t[p + 1] === "{") p = skipBalanced(t, p + 1);
    else p++;
  }
  return p;
}

/** Index just past the bracket that closes the one at i (t[i] is one of { [ ( ). */
function skipBalanced(t: string, i: number): number {
  const stack = [CLOSERS[t[i] ?? ""] ?? ""];
  let p = i + 1;
  while (p < t.length && stack.length > 0) {
    const c = t[p] ?? "";
    if (c === "'") {
      p = skipString(t, p);
      continue;
    }
    if (c === "/" && t[p + 1] === "/") {
      const nl = t.indexOf("\n", p);
      p = nl < 0 ? t.length : nl;
      continue;
    }
    if (c === "/" && t[p + 1] === "*") {
      const end = t.indexOf("*/", p + 2);
      p = end < 0 ? t.length : end + 2;
      continue;
    }
    const closer = CLOSERS[c];
    if (closer) stack.push(closer);
    else if (c === stack[stack.length - 1]) stack.pop();
    p++;
  }
  return p;
}

/** The text with // and /* *\/ comments blanked out (strings kept, offsets and lines kept). */
export function stripBicepComments(t: string): string {
  let out = "";
  let p = 0;
  while (p < t.length) {
    const c = t[p];
    if (c === "'") {
      const end = skipString(t, p);
      out += t.slice(p, end);
      p = end;
    } else if (c === "/" && t[p + 1] === "/") {
      const nl = t.indexOf("\n", p);
      const end = nl < 0 ? t.length : nl;
      out += " ".repeat(end - p);
      p = end;
    } else if (c === "/" && t[p + 1] === "*") {
      const close = t.indexOf("*/", p + 2);
      const end = close < 0 ? t.length : close + 2;
      out += t.slice(p, end).replace(/[^\n]/g, " ");
      p = end;
    } else {
      out += c;
      p++;
    }
  }
  return out;
}

/** The inside of the bracketed block that starts at i. */
function blockAt(t: string, i: number): string {
  return t.slice(i + 1, skipBalanced(t, i) - 1);
}

/**
 * Top-level entries of an object body (the text between { and }): key -> raw value text.
 * Entries are separated by new lines or commas; values may span lines inside brackets.
 */
export function objectEntries(body: string): Map<string, string> {
  const entries = new Map<string, string>();
  let p = 0;
  const skipSeparators = () => {
    while (p < body.length && /[\s,]/.test(body[p] ?? "")) p++;
  };
  skipSeparators();
  while (p < body.length) {
    let key: string;
    if (body[p] === "'") {
      const end = skipString(body, p);
      key = body.slice(p + 1, end - 1);
      p = end;
    } else {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(body.slice(p));
      if (!m) break;
      key = m[0];
      p += key.length;
    }
    while (body[p] === " " || body[p] === "\t") p++;
    if (body[p] !== ":") break;
    p++;
    const start = p;
    while (p < body.length && body[p] !== "\n" && body[p] !== ",") {
      const c = body[p] ?? "";
      if (c === "'") p = skipString(body, p);
      else if (CLOSERS[c]) p = skipBalanced(body, p);
      else p++;
    }
    entries.set(key, body.slice(start, p).trim());
    skipSeparators();
  }
  return entries;
}

/** Inside of an object or array value text ("{ ... }" -> " ... "), or undefined. */
function inner(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (!(v.startsWith("{") || v.startsWith("["))) return undefined;
  return blockAt(v, 0);
}

export interface BicepResource {
  symbol: string;
  type: string;
  apiVersion: string;
  existing: boolean;
  /** `[for <item> in <source>: ...]` */
  loop?: { item: string; source: string };
  /** `if (<condition>)` */
  condition?: string;
  /** Object body (between the braces). */
  body: string;
  entries: Map<string, string>;
  file: string;
}

/** Resource declarations of a (comment-stripped) Bicep file. */
export function parseResources(text: string, file = ""): BicepResource[] {
  const t = stripBicepComments(text);
  const found: BicepResource[] = [];
  const re = /\bresource\s+(\w+)\s+'([^'@]+)@([^']+)'\s*(existing\s*)?=\s*/g;
  for (let m = re.exec(t); m; m = re.exec(t)) {
    let p = re.lastIndex;
    let loop: BicepResource["loop"];
    let condition: string | undefined;
    if (t[p] === "[") {
      const header = /^\[\s*for\s+(\w+)\s+in\s+(\w+)\s*:\s*/.exec(t.slice(p));
      if (header) {
        loop = { item: header[1] ?? "", source: header[2] ?? "" };
        p += header[0].length;
      }
    }
    const cond = /^if\s*/.exec(t.slice(p));
    if (cond) {
      p += cond[0].length;
      const end = skipBalanced(t, p);
      condition = t.slice(p + 1, end - 1).trim();
      p = end;
      while (/\s/.test(t[p] ?? "")) p++;
    }
    if (t[p] !== "{") continue;
    const body = blockAt(t, p);
    found.push({
      symbol: m[1] ?? "",
      type: m[2] ?? "",
      apiVersion: m[3] ?? "",
      existing: Boolean(m[4]),
      ...(loop ? { loop } : {}),
      ...(condition !== undefined ? { condition } : {}),
      body,
      entries: objectEntries(body),
      file,
    });
  }
  return found;
}

/** `var` declarations of a (comment-stripped) Bicep file: name -> raw value text. */
export function parseVars(text: string): Map<string, string> {
  const t = stripBicepComments(text);
  const vars = new Map<string, string>();
  const re = /^\s*var\s+(\w+)\s*=\s*/gm;
  for (let m = re.exec(t); m; m = re.exec(t)) {
    const p = re.lastIndex;
    const c = t[p] ?? "";
    let end: number;
    if (c === "'") end = skipString(t, p);
    else if (CLOSERS[c]) end = skipBalanced(t, p);
    else {
      const nl = t.indexOf("\n", p);
      end = nl < 0 ? t.length : nl;
    }
    vars.set(m[1] ?? "", t.slice(p, end).trim());
  }
  return vars;
}

/** A property anywhere inside a resource body, e.g. deep("minTlsVersion") -> "'1.2'". */
function deepValues(body: string, key: string): string[] {
  const values: string[] = [];
  const re = new RegExp(`(?:^|[\\s{,])${key}\\s*:\\s*([^\\n,]*)`, "g");
  for (let m = re.exec(body); m; m = re.exec(body)) values.push((m[1] ?? "").trim());
  return values;
}

function bicepFiles(files: InfraFiles): [string, string][] {
  return Object.entries(files).filter(([path]) => path.endsWith(".bicep"));
}

function allResources(files: InfraFiles): BicepResource[] {
  return bicepFiles(files).flatMap(([path, text]) => parseResources(text, path));
}

const norm = (s: string) => s.replace(/\s+/g, "");

// ---------------------------------------------------------------------------------------
// App settings
// ---------------------------------------------------------------------------------------

/**
 * App settings the Bicep sets on the function app: name -> raw value expression. Reads
 * Microsoft.Web/sites/config 'appsettings' resources (object literal, or vars combined
 * with union()) and siteConfig.appSettings arrays of Microsoft.Web/sites.
 */
export function appSettings(files: InfraFiles): Map<string, string> {
  const settings = new Map<string, string>();
  for (const [path, text] of bicepFiles(files)) {
    const vars = parseVars(text);
    const addObject = (expr: string, seen: Set<string>) => {
      const body = inner(expr);
      if (body !== undefined) {
        for (const [k, v] of objectEntries(body)) settings.set(k, v);
        return;
      }
      for (const id of expr.match(/\b[A-Za-z_]\w*\b/g) ?? []) {
        const value = vars.get(id);
        if (value !== undefined && !seen.has(id)) addObject(value, new Set([...seen, id]));
      }
    };
    for (const res of parseResources(text, path)) {
      if (res.type === "Microsoft.Web/sites/config" && res.entries.get("name") === "'appsettings'") {
        addObject(res.entries.get("properties") ?? "", new Set());
      }
      if (res.type === "Microsoft.Web/sites") {
        const siteConfig = inner(objectEntries(inner(res.entries.get("properties")) ?? "").get("siteConfig"));
        const list = inner(objectEntries(siteConfig ?? "").get("appSettings"));
        for (const m of (list ?? "").matchAll(/\{([^{}]*)\}/g)) {
          const entry = objectEntries(m[1] ?? "");
          const name = /^'([^']*)'$/.exec(entry.get("name") ?? "")?.[1];
          if (name) settings.set(name, entry.get("value") ?? "");
        }
      }
    }
  }
  return settings;
}

/** (a) Every required setting of shared/platform/config.ts (and PULL_SCHEDULE) is set. */
export function checkRequiredSettings(files: InfraFiles, required: readonly string[]): string[] {
  const settings = appSettings(files);
  if (settings.size === 0) return ["no app settings found (Microsoft.Web/sites/config 'appsettings')"];
  return [...new Set([...required, "PULL_SCHEDULE"])]
    .filter((name) => !settings.has(name))
    .map((name) => `app setting ${name} is missing`);
}

/** App settings named like the app's own (MSSP_*, PULL_*, ...) must be ones shared/platform/config.ts reads. */
export function checkKnownAppSettings(files: InfraFiles, known: readonly string[]): string[] {
  const appOwned = /^(MSSP_|PULL_|DEFENDER_|KEY_VAULT_|PUBLIC_|ALERTS_STORAGE|CONSENT_|REFRESH_TOKEN_|ENTRA_|AZURE_CLIENT_ID|OPERATOR_|AUDIT_|ALERT_RETENTION|RETENTION_|EXPORT_)/;
  return [...appSettings(files).keys()]
    .filter((name) => appOwned.test(name) && !known.includes(name))
    .map((name) => `app setting ${name} is not read by the app (shared/platform/config.ts SETTING_NAMES)`);
}

/** (b) No storage account key or key-based connection string anywhere. */
export function checkNoStorageKeys(files: InfraFiles): string[] {
  const problems: string[] = [];
  for (const [path, raw] of Object.entries(files)) {
    const text = path.endsWith(".bicep") ? stripBicepComments(raw) : raw;
    for (const pattern of KEY_PATTERNS) {
      if (text.includes(pattern)) problems.push(`${path} contains ${pattern}`);
    }
  }
  return problems;
}

/** (c) Identity-based connections, AZURE_CLIENT_ID and keyVaultReferenceIdentity. */
export function checkIdentitySettings(files: InfraFiles): string[] {
  const problems: string[] = [];
  const settings = appSettings(files);
  for (const name of IDENTITY_SETTINGS) {
    const value = settings.get(name);
    if (value === undefined) problems.push(`app setting ${name} is missing`);
    else if (name.endsWith("__credential") && value !== "'managedidentity'")
      problems.push(`app setting ${name} must be 'managedidentity', not ${value}`);
    else if ((name.endsWith("__clientId") || name === "AZURE_CLIENT_ID") && /^'.*'$/.test(value))
      problems.push(`app setting ${name} must come from the identity's client id, not the literal ${value}`);
  }
  const clientIds = ["AzureWebJobsStorage__clientId", "ALERTS_STORAGE__clientId", "AZURE_CLIENT_ID"].map((n) =>
    settings.get(n),
  );
  if (new Set(clientIds).size > 1) problems.push("the storage and AZURE_CLIENT_ID client ids differ: use one identity");
  for (const name of FORBIDDEN_SETTINGS) {
    if (settings.has(name)) problems.push(`app setting ${name} must not be set`);
  }
  const secret = settings.get("MSSP_CLIENT_SECRET") ?? "";
  if (secret && !secret.includes("@Microsoft.KeyVault(")) problems.push("MSSP_CLIENT_SECRET must be a Key Vault reference");
  const sites = allResources(files).filter((r) => r.type === "Microsoft.Web/sites" && !r.existing);
  if (sites.length === 0) problems.push("no Microsoft.Web/sites resource");
  for (const site of sites) {
    const props = objectEntries(inner(site.entries.get("properties")) ?? "");
    const kvIdentity = props.get("keyVaultReferenceIdentity");
    if (!kvIdentity) problems.push(`${site.symbol}: keyVaultReferenceIdentity is missing`);
    else if (kvIdentity === "'SystemAssigned'" || /^'.*'$/.test(kvIdentity))
      problems.push(`${site.symbol}: keyVaultReferenceIdentity must be the user-assigned identity's resource id`);
    if (!/UserAssigned/.test(site.entries.get("identity") ?? ""))
      problems.push(`${site.symbol}: the site must use the user-assigned identity`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------
// Role assignments
// ---------------------------------------------------------------------------------------

export interface Grant {
  file: string;
  symbol: string;
  principal: "identity" | "user";
  scopeType: string;
  roleId: string;
}

export interface PrincipalParams {
  /** Parameter holding the app identity's principal id. */
  identity: string;
  /** Parameter holding the deploying user's object id. */
  user: string;
}

export const PRINCIPAL_PARAMS: PrincipalParams = { identity: "identityPrincipalId", user: "principalId" };

/** Role assignments with their principal, scope and role resolved; problems on the way. */
export function roleAssignments(
  files: InfraFiles,
  params: PrincipalParams = PRINCIPAL_PARAMS,
): { grants: Grant[]; problems: string[] } {
  const grants: Grant[] = [];
  const problems: string[] = [];
  for (const [path, text] of bicepFiles(files)) {
    const resources = parseResources(text, path);
    const vars = parseVars(text);
    const roleMap = objectEntries(inner(vars.get("roles")) ?? "");
    const resolveRole = (expr: string): string[] => {
      const literal = /^'([0-9a-fA-F-]{36})'$/.exec(expr.trim());
      if (literal) return [literal[1]?.toLowerCase() ?? ""];
      const ref = /^roles\.(\w+)$/.exec(expr.trim());
      if (ref) {
        const guid = /^'([0-9a-fA-F-]{36})'$/.exec(roleMap.get(ref[1] ?? "") ?? "");
        return guid ? [guid[1]?.toLowerCase() ?? ""] : [];
      }
      return [];
    };
    for (const res of resources) {
      if (res.type !== "Microsoft.Authorization/roleAssignments" || res.existing) continue;
      const where = `${path} ${res.symbol}`;
      const props = objectEntries(inner(res.entries.get("properties")) ?? "");
      const principalExpr = props.get("principalId") ?? "";
      const principal =
        principalExpr === params.identity ? "identity" : principalExpr === params.user ? "user" : undefined;
      if (!principal) {
        problems.push(`${where}: principalId must be ${params.identity} or ${params.user}, not '${principalExpr}'`);
        continue;
      }
      const principalType = props.get("principalType");
      if (principal === "identity" && principalType !== "'ServicePrincipal'")
        problems.push(`${where}: principalType must be 'ServicePrincipal' for the managed identity`);
      if (principal === "user") {
        if (!principalType) problems.push(`${where}: principalType is missing`);
        if (!norm(res.condition ?? "").includes(`!empty(${params.user})`))
          problems.push(`${where}: the deploying user's assignment must be conditional on !empty(${params.user})`);
      }
      const roleDefExpr = props.get("roleDefinitionId") ?? "";
      const roleArg = /^subscriptionResourceId\('Microsoft\.Authorization\/roleDefinitions',\s*(.+)\)$/.exec(
        roleDefExpr,
      )?.[1];
      if (!roleArg) {
        problems.push(`${where}: roleDefinitionId must be subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ...)`);
        continue;
      }
      let roleIds: string[];
      if (res.loop && roleArg.trim() === res.loop.item) {
        const source = inner(vars.get(res.loop.source));
        roleIds = (source ?? "")
          .split(/[\n,]/)
          .map((s) => s.trim())
          .filter(Boolean)
          .flatMap(resolveRole);
      } else roleIds = resolveRole(roleArg);
      if (roleIds.length === 0) problems.push(`${where}: cannot resolve the role definition '${roleArg}'`);
      const scope = res.entries.get("scope") ?? "";
      const scopeType = resources.find((r) => r.symbol === scope)?.type;
      if (!scopeType) problems.push(`${where}: scope must be a resource of this file, not '${scope}'`);
      const name = norm(res.entries.get("name") ?? "");
      if (!name.startsWith(`guid(${scope}.id,${principalExpr},${norm(roleDefExpr)}`))
        problems.push(`${where}: name must be guid(${scope}.id, ${principalExpr}, <roleDefinitionId>)`);
      for (const roleId of roleIds) grants.push({ file: path, symbol: res.symbol, principal, scopeType: scopeType ?? "?", roleId });
    }
  }
  return { grants, problems };
}

/** (d) Every role assignment is bound to the identity (or the deploying user parameter). */
export function checkRoleAssignmentPrincipals(files: InfraFiles, params: PrincipalParams = PRINCIPAL_PARAMS): string[] {
  const { grants, problems } = roleAssignments(files, params);
  if (grants.length === 0 && problems.length === 0) return ["no role assignments found"];
  return problems;
}

/** (e) Role definition ids are the documented ones, and grants match least privilege. */
export function checkRoleDefinitions(files: InfraFiles): string[] {
  const { grants } = roleAssignments(files);
  const problems: string[] = [];
  const documented = new Map<string, string>(Object.entries(DOCUMENTED_ROLES).map(([name, id]) => [id, name]));
  for (const g of grants) {
    if (!documented.has(g.roleId)) problems.push(`${g.file} ${g.symbol}: role ${g.roleId} is not one of the documented roles`);
  }
  for (const path of Object.keys(files).filter((p) => p.endsWith(".bicep"))) {
    const roles = objectEntries(inner(parseVars(files[path] ?? "").get("roles")) ?? "");
    for (const [key, value] of roles) {
      const id = /^'([^']*)'$/.exec(value)?.[1]?.toLowerCase() ?? value;
      const expected = Object.entries(DOCUMENTED_ROLES).find(
        ([name]) => name.replace(/\s+/g, "").toLowerCase() === key.toLowerCase(),
      );
      if (!expected) problems.push(`${path}: roles.${key} is not a documented role name`);
      else if (expected[1] !== id) problems.push(`${path}: roles.${key} is ${id}, documented id is ${expected[1]}`);
    }
  }
  const grantKey = (principal: string, role: string, scope: string) => `${principal}|${role}|${scope}`;
  const have = new Set(grants.map((g) => grantKey(g.principal, g.roleId, g.scopeType)));
  const want = new Set<string>();
  for (const [role, scope] of IDENTITY_GRANTS) want.add(grantKey("identity", DOCUMENTED_ROLES[role], scope));
  for (const [role, scope] of USER_GRANTS) want.add(grantKey("user", DOCUMENTED_ROLES[role], scope));
  for (const w of want) {
    if (!have.has(w)) {
      const [principal, roleId, scope] = w.split("|");
      problems.push(`missing grant: ${documented.get(roleId ?? "")} for the ${principal} on ${scope}`);
    }
  }
  for (const h of have) {
    if (!want.has(h)) {
      const [principal, roleId, scope] = h.split("|");
      problems.push(`unexpected grant (least privilege): ${documented.get(roleId ?? "") ?? roleId} for the ${principal} on ${scope}`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------
// Security properties
// ---------------------------------------------------------------------------------------

function expectProperty(res: BicepResource, key: string, value: string, problems: string[]): void {
  const values = deepValues(res.body, key);
  if (values.length === 0) problems.push(`${res.file} ${res.symbol}: ${key} is missing (expected ${value})`);
  else if (values.some((v) => v !== value)) problems.push(`${res.file} ${res.symbol}: ${key} must be ${value}, not ${values.join(", ")}`);
}

/** (f) Storage without shared keys, HTTPS-only TLS 1.2 site, RBAC vault, no basic auth. */
export function checkSecurityProperties(files: InfraFiles): string[] {
  const problems: string[] = [];
  const resources = allResources(files).filter((r) => !r.existing);
  const ofType = (type: string) => resources.filter((r) => r.type === type);
  const accounts = ofType(STORAGE);
  if (accounts.length === 0) problems.push("no storage account");
  for (const r of accounts) {
    expectProperty(r, "allowSharedKeyAccess", "false", problems);
    expectProperty(r, "minimumTlsVersion", "'TLS1_2'", problems);
    expectProperty(r, "allowBlobPublicAccess", "false", problems);
  }
  const sites = ofType("Microsoft.Web/sites");
  for (const r of sites) {
    expectProperty(r, "httpsOnly", "true", problems);
    expectProperty(r, "minTlsVersion", "'1.2'", problems);
    expectProperty(r, "ftpsState", "'Disabled'", problems);
    if (!/'functionapp,linux'/.test(r.entries.get("kind") ?? "")) problems.push(`${r.symbol}: kind must be 'functionapp,linux'`);
    const config = deepValues(r.body, "functionAppConfig");
    if (config.length === 0) problems.push(`${r.symbol}: functionAppConfig (Flex Consumption) is missing`);
    if (!/authentication\s*:\s*\{[^}]*type\s*:\s*'UserAssignedIdentity'/.test(r.body))
      problems.push(`${r.symbol}: the deployment container must be read with the user-assigned identity`);
    if (!/runtime\s*:\s*\{[^}]*name\s*:\s*'node'/.test(r.body)) problems.push(`${r.symbol}: runtime must be node`);
  }
  const plans = ofType("Microsoft.Web/serverfarms");
  for (const r of plans) {
    if (!/name\s*:\s*'FC1'/.test(r.entries.get("sku") ?? "")) problems.push(`${r.symbol}: the plan must be Flex Consumption (FC1)`);
  }
  const policies = ofType("Microsoft.Web/sites/basicPublishingCredentialsPolicies");
  for (const name of ["ftp", "scm"]) {
    const policy = policies.find((p) => p.entries.get("name") === `'${name}'`);
    if (!policy) problems.push(`basic publishing credentials policy '${name}' is missing`);
    else expectProperty(policy, "allow", "false", problems);
  }
  const vaults = ofType(VAULT);
  if (vaults.length === 0) problems.push("no Key Vault");
  for (const r of vaults) {
    expectProperty(r, "enableRbacAuthorization", "true", problems);
    expectProperty(r, "enableSoftDelete", "true", problems);
    if (deepValues(r.body, "enablePurgeProtection").length === 0) problems.push(`${r.symbol}: enablePurgeProtection is missing`);
  }
  const components = ofType(COMPONENT);
  for (const r of components) expectProperty(r, "DisableLocalAuth", "true", problems);
  if (sites.length === 0) problems.push("no function app (Microsoft.Web/sites)");
  return problems;
}

// ---------------------------------------------------------------------------------------
// azure.yaml, parameters, outputs, alert rules
// ---------------------------------------------------------------------------------------

/** azure.yaml as the `yaml` package parses it (only the fields the checks read). */
export interface AzureYaml {
  name?: unknown;
  requiredVersions?: { azd?: unknown };
  infra?: { provider?: unknown; path?: unknown; module?: unknown };
  services?: Record<
    string,
    Record<string, unknown> & { hooks?: Record<string, Record<string, { run?: unknown; shell?: unknown }>> }
  >;
}

/**
 * (g) azure.yaml deploys service `api` (project ., ts, host function) from the staged
 * `.deploy/` folder (dist, prepackage `npm run package`, no remote build) to the app that
 * carries the azd-service-name tag.
 */
export function checkAzureYaml(doc: AzureYaml, files: InfraFiles, service = "api"): string[] {
  const problems: string[] = [];
  if (typeof doc.name !== "string" || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(doc.name))
    problems.push("azure.yaml: name is missing or invalid");
  const svc = doc.services?.[service];
  if (!svc) return [...problems, `azure.yaml has no service '${service}'`];
  if (svc.host !== "function") problems.push(`azure.yaml: services.${service}.host must be function`);
  if (!["ts", "js", "typescript", "javascript"].includes(String(svc.language)))
    problems.push(`azure.yaml: services.${service}.language must be ts or js`);
  if (svc.project !== ".") problems.push(`azure.yaml: services.${service}.project must be .`);
  if (svc.dist !== ".deploy") problems.push(`azure.yaml: services.${service}.dist must be .deploy (the folder npm run package stages)`);
  if (svc.remoteBuild !== false)
    problems.push("azure.yaml: remoteBuild must be false (a remote build would rebuild without tsconfig.json and dev dependencies)");
  for (const os of ["posix", "windows"]) {
    const run = svc.hooks?.prepackage?.[os]?.run;
    if (typeof run !== "string" || !/\bnpm run package\b/.test(run))
      problems.push(`azure.yaml: services.${service}.hooks.prepackage.${os} must run npm run package`);
  }
  const infraPath = String(doc.infra?.path ?? "infra");
  const module = String(doc.infra?.module ?? "main");
  if (!(`${infraPath}/${module}.bicep` in files)) problems.push(`azure.yaml: infra ${infraPath}/${module}.bicep does not exist`);
  const tagged = allResources(files).filter(
    (r) => r.type === "Microsoft.Web/sites" && /'azd-service-name'\s*:\s*(\w+|'[^']*')/.test(r.entries.get("tags") ?? ""),
  );
  if (tagged.length === 0) problems.push("no Microsoft.Web/sites carries the azd-service-name tag");
  for (const site of tagged) {
    const value = /'azd-service-name'\s*:\s*(\w+|'[^']*')/.exec(site.entries.get("tags") ?? "")?.[1] ?? "";
    const literal = /^'(.*)'$/.exec(value)?.[1];
    if (literal !== undefined && literal !== service) problems.push(`${site.symbol}: azd-service-name is '${literal}', not '${service}'`);
    if (literal === undefined) {
      // Only the files that deploy this module pass its parameter.
      const modulePath = site.file.replace(/^infra\//, "");
      const passed = bicepFiles(files)
        .filter(([, text]) => text.includes(`'${modulePath}'`))
        .flatMap(([, text]) => [...stripBicepComments(text).matchAll(new RegExp(`\\b${value}\\s*:\\s*'([^']*)'`, "g"))])
        .map((m) => m[1]);
      const declared = new RegExp(`param\\s+${value}\\s+string\\s*=\\s*'([^']*)'`).exec(files[site.file] ?? "")?.[1];
      // Values passed to the module win over the parameter's default.
      const effective = passed.length > 0 ? passed : [declared];
      if (!effective.every((v) => v === service))
        problems.push(`${site.symbol}: azd-service-name (${value}) is not always '${service}'`);
    }
  }
  return problems;
}

/** The exact log lines the alert rules depend on (docs/deploy.md names each). */
export const ALERT_LOG_LINES = {
  state: "tenant.state tenantId=<guid> status=<status>",
  reconsent: "tenant.status tenantId=<guid> status=reconsent-required code=<AADSTS code>",
  succeeded: "pull.succeeded tenantId=<guid> alerts=<n> watermark=<iso>",
  failed: "pull.failed tenantId=<guid> code=<code>",
  expiring: "app.credential.expiring days=<n>",
} as const;

/** KQL queries of the scheduled query rules (resolving vars and replace() templates). */
export function alertQueries(files: InfraFiles): string[] {
  const queries: string[] = [];
  for (const [path, text] of bicepFiles(files)) {
    const vars = parseVars(text);
    const resolve = (expr: string, depth = 0): string => {
      const e = expr.trim();
      // Like Bicep, drop the line break that follows the opening quotes.
      if (e.startsWith("'''")) return e.slice(3, -3).replace(/^\r?\n/, "");
      if (depth > 5) return "";
      const replaced = /^replace\((\w+),/.exec(e);
      if (replaced) return resolve(vars.get(replaced[1] ?? "") ?? "", depth + 1);
      const v = vars.get(e);
      return v === undefined ? e : resolve(v, depth + 1);
    };
    for (const res of parseResources(text, path)) {
      if (res.type !== "Microsoft.Insights/scheduledQueryRules") continue;
      for (const q of deepValues(res.body, "query")) queries.push(resolve(q));
    }
  }
  return queries;
}

/**
 * The rules: re-consent on each tenant's latest tenant.state / tenant.status line, missing
 * pull.succeeded lines, the workspace's daily cap, and the expiring client secret.
 */
export function checkAlertRules(files: InfraFiles): string[] {
  const queries = alertQueries(files);
  const problems: string[] = [];
  const reconsent = queries.find((q) => q.includes('"tenant.state "'));
  if (!reconsent) problems.push("no alert rule on 'tenant.state' lines");
  else {
    if (!reconsent.includes('"tenant.status "'))
      problems.push("the re-consent rule must also read 'tenant.status' lines (consenting again resolves it)");
    if (!/arg_max\(timestamp, status\) by tenantId/.test(reconsent)) problems.push("the re-consent rule must take each tenant's latest line");
    if (!reconsent.includes('status == "reconsent-required"')) problems.push("the re-consent rule must fire on status reconsent-required");
    if (!/ago\(30m\)/.test(reconsent)) problems.push("the re-consent rule must look at the last 30 minutes");
  }
  if (!queries.some((q) => q.includes('"pull.succeeded ') && /ago\(/.test(q))) problems.push("no alert rule on missing 'pull.succeeded' lines");
  if (!queries.some((q) => /_LogOperation/.test(q) && q.includes("OverQuota")))
    problems.push("no alert rule on the workspace's daily cap (_LogOperation OverQuota)");
  if (!queries.some((q) => q.includes('"app.credential.expiring "'))) problems.push("no alert rule on 'app.credential.expiring' lines");
  for (const q of queries.filter((x) => x.includes('"tenant.') || x.includes('"pull.'))) {
    if (!/\btraces\b/.test(q)) problems.push("tenant alert queries must read the traces table");
    if (!q.includes("tenantId")) problems.push("tenant alert queries must split by tenantId");
  }
  return problems;
}

/** The `extract(@"...", 1, message)` regexes of a KQL query, as JavaScript RegExps. */
export function kqlExtracts(query: string): Map<string, RegExp> {
  const found = new Map<string, RegExp>();
  for (const m of query.matchAll(/(\w+)\s*=\s*(?:\w+\()?extract\(@"((?:[^"]|"")*)",\s*1,\s*message\)/g)) {
    found.set(m[1] ?? "", new RegExp((m[2] ?? "").replace(/""/g, '"')));
  }
  return found;
}
