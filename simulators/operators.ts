import { createHash, randomBytes } from "node:crypto";
import type { EntraUser, FakeEntra } from "./entra.js";

/**
 * The MSSP's own tenant in the fake Entra, as infra/scripts/register-app.sh sets it up in a
 * real one: the operator API registration (scope `Operator.Access`, app roles Reader,
 * Operator and Admin, access tokens v2), the console's single-page app registration (its
 * redirect URI `${PUBLIC_BASE_URL}/api/console/`), one user per role, and one automation
 * application (service principal) per role. Used by the tests and the sandbox alike.
 */

export const OPERATOR_ROLES = ["Reader", "Operator", "Admin"] as const;
export type Role = (typeof OPERATOR_ROLES)[number];

export interface OperatorSetup {
  tenantId: string;
  apiClientId: string;
  consoleClientId: string;
  /** The console's redirect URI. */
  redirectUri: string;
  /** One signed-in user per role. */
  users: Record<Role, EntraUser>;
  /** One application per role (client credentials). */
  automation: Record<Role, { clientId: string; clientSecret: string; servicePrincipalId: string }>;
  /** The app settings that point the app at this setup. */
  settings: Record<string, string>;
}

export interface OperatorSetupOptions {
  tenantId: string;
  apiClientId: string;
  consoleClientId: string;
  publicBaseUrl: string;
  /** Users (default: reader@, operator@ and admin@ the MSSP's domain). */
  users?: Partial<Record<Role, EntraUser>>;
  /** Automation client IDs and secrets (default: derived from the role). */
  automation?: Partial<Record<Role, { clientId: string; clientSecret: string }>>;
  domain?: string;
}

/** Stable GUID-shaped IDs from a seed, so the sandbox's settings stay the same across runs. */
export function seededGuid(seed: string): string {
  const h = createHash("sha256").update(seed).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The automation application of a role, as setupOperators registers it by default (stable across runs). */
export function defaultAutomation(tenantId: string, role: Role): { clientId: string; clientSecret: string } {
  return {
    clientId: seededGuid(`${tenantId}:automation:${role}`),
    clientSecret: `automation-${role.toLowerCase()}-secret-${createHash("sha256").update(`${tenantId}:${role}`).digest("base64url").slice(0, 24)}`,
  };
}

export function setupOperators(entra: FakeEntra, options: OperatorSetupOptions): OperatorSetup {
  const { tenantId, apiClientId, consoleClientId } = options;
  const domain = options.domain ?? "mssp.example";
  const users = {} as Record<Role, EntraUser>;
  for (const role of OPERATOR_ROLES) {
    users[role] = options.users?.[role] ?? {
      oid: seededGuid(`${tenantId}:user:${role}`),
      upn: `${role.toLowerCase()}@${domain}`,
      name: `${role} (MSSP)`,
    };
  }
  entra.addTenant(tenantId, { name: "MSSP (operators)", users: OPERATOR_ROLES.map((role) => users[role]) });
  const identifierUri = `api://${apiClientId}`;
  entra.registerApi({
    clientId: apiClientId,
    identifierUri,
    tenantId,
    scopes: ["Operator.Access"],
    appRoles: [...OPERATOR_ROLES],
    name: "MSSP Defender collector operator API",
  });
  const redirectUri = `${options.publicBaseUrl}/api/console/`;
  entra.registerSpa({
    clientId: consoleClientId,
    redirectUris: [redirectUri],
    name: "MSSP Defender collector console",
    permissions: { [identifierUri]: ["Operator.Access"] },
  });
  const automation = {} as OperatorSetup["automation"];
  for (const role of OPERATOR_ROLES) {
    entra.assignRole(apiClientId, users[role].oid, role);
    const app = options.automation?.[role] ?? defaultAutomation(tenantId, role);
    entra.registerApp({ ...app, redirectUris: [], name: `Automation (${role})`, permissions: {} });
    entra.assignRole(apiClientId, app.clientId, role);
    automation[role] = { ...app, servicePrincipalId: entra.servicePrincipalId(app.clientId) };
  }
  return {
    tenantId,
    apiClientId,
    consoleClientId,
    redirectUri,
    users,
    automation,
    settings: {
      OPERATOR_TENANT_ID: tenantId,
      OPERATOR_API_CLIENT_ID: apiClientId,
      OPERATOR_CONSOLE_CLIENT_ID: consoleClientId,
    },
  };
}

interface TokenAnswer {
  access_token?: string;
  error?: string;
  error_description?: string;
}

type FetchLike = (url: string, init: { method: string; headers: Record<string, string>; body: URLSearchParams }) => Promise<{
  ok: boolean;
  status: number;
  json(): Promise<unknown>;
}>;

async function postToken(url: string, form: URLSearchParams, headers: Record<string, string> = {}, fetchImpl: FetchLike = fetch): Promise<string> {
  const response = await fetchImpl(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: form,
  });
  const body = (await response.json()) as TokenAnswer;
  if (!response.ok || !body.access_token) throw new Error(`token request failed: ${response.status} ${body.error ?? ""}`);
  return body.access_token;
}

/** An app-only token for the operator API (client credentials), as automation gets one. */
export function automationToken(
  entraUrl: string,
  setup: Pick<OperatorSetup, "tenantId" | "apiClientId"> & { automation: Record<Role, { clientId: string; clientSecret: string }> },
  role: Role,
  fetchImpl?: FetchLike,
): Promise<string> {
  const app = setup.automation[role];
  return postToken(
    `${entraUrl}/${setup.tenantId}/oauth2/v2.0/token`,
    new URLSearchParams({
      grant_type: "client_credentials",
      client_id: app.clientId,
      client_secret: app.clientSecret,
      scope: `api://${setup.apiClientId}/.default`,
    }),
    {},
    fetchImpl,
  );
}

/**
 * A user's token for the operator API the way the console gets it: authorization code with
 * PKCE, response in the fragment, redeemed cross-origin from the console's origin.
 */
export async function consoleUserToken(entra: FakeEntra, setup: OperatorSetup, user: EntraUser): Promise<string> {
  const verifier = randomBytes(32).toString("base64url");
  const authorize = new URL(`${entra.url}/${setup.tenantId}/oauth2/v2.0/authorize`);
  const scope = `api://${setup.apiClientId}/Operator.Access openid profile offline_access`;
  authorize.search = new URLSearchParams({
    client_id: setup.consoleClientId,
    response_type: "code",
    response_mode: "fragment",
    redirect_uri: setup.redirectUri,
    scope,
    state: randomBytes(16).toString("base64url"),
    nonce: randomBytes(16).toString("base64url"),
    code_challenge: createHash("sha256").update(verifier).digest("base64url"),
    code_challenge_method: "S256",
  }).toString();
  const location = await entra.consent(authorize.href, { user });
  const code = new URLSearchParams(new URL(location).hash.slice(1)).get("code");
  if (!code) throw new Error("sign-in gave no code");
  return postToken(
    `${entra.url}/${setup.tenantId}/oauth2/v2.0/token`,
    new URLSearchParams({
      grant_type: "authorization_code",
      client_id: setup.consoleClientId,
      code,
      code_verifier: verifier,
      redirect_uri: setup.redirectUri,
      scope,
      client_info: "1",
    }),
    { Origin: new URL(setup.redirectUri).origin },
  );
}
