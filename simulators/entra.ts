import { createHash, type KeyObject, randomBytes, randomUUID, type webcrypto, X509Certificate } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, exportJWK, generateKeyPair, type JWK, jwtVerify, SignJWT } from "jose";
import type { TestCerts } from "./tls.js";
import { escapeHtml, HttpsFake, readBody, sendJson } from "./https.js";

/**
 * Fake Microsoft Entra ID (v2.0 endpoints) for many tenants, served at `{url}/{tenant}/...`:
 *
 *   GET  /{tenant}/v2.0/.well-known/openid-configuration    discovery (issuer `{url}/{tenant}/v2.0`)
 *   GET  /{tenant}/discovery/v2.0/keys                      JWKS (one RS256 key)
 *   GET  /{tenant}/oauth2/v2.0/authorize                    HTML sign-in + consent page
 *   POST /{tenant}/oauth2/v2.0/authorize/decision           the page's form: Accept / Cancel
 *   POST /{tenant}/oauth2/v2.0/token                        authorization_code, refresh_token and client_credentials grants
 *   GET  /{tenant}/oauth2/v2.0/logout                       sign-out: back to a registered post_logout_redirect_uri
 *   GET  /{tenant}/v2.0/adminconsent                        HTML admin consent page (application permissions)
 *   POST /{tenant}/v2.0/adminconsent/decision               the page's form: Accept / Cancel
 *
 * `{tenant}` is a tenant GUID registered with `addTenant`, or `organizations` / `common`
 * (the user picked on the page decides the tenant; discovery then has the literal issuer
 * `{url}/{tenantid}/v2.0` like Entra's).
 *
 * Behaviour copied from Entra: errors before the redirect URI is trusted (unknown tenant,
 * client or redirect URI) are an HTML page, later ones are redirected with `error`,
 * `error_description` and `state`; token errors are JSON `{error, error_description
 * ("AADSTSn: ...\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ..."), error_codes,
 * timestamp, trace_id, correlation_id, error_uri}`; a refresh token comes only with the
 * `offline_access` scope, an id_token only with `openid`, `name`/`preferred_username` only
 * with `profile`; one token request may name one resource only (AADSTS28000); refresh tokens
 * rotate on every use and the old ones stay valid (90 days of inactivity, AADSTS700082);
 * codes live 10 minutes and are single use. Access tokens look like v1 tokens of Microsoft
 * APIs (`iss` https://sts.windows.net/{tid}/, `aud` the resource, `scp`, `appid`).
 *
 * Stricter than Entra, to catch client bugs: PKCE with S256 is required, and so are `state`
 * and `nonce` (turn off with `requireStateAndNonce: false`); `response_mode` is `query`, or
 * `fragment` for single-page apps.
 *
 * Operators (the MSSP's own tenant): `registerApi` registers an API that exposes scopes and
 * app roles and gets access tokens v2 (`iss` `{url}/{tid}/v2.0`, `aud` its client ID, `scp`,
 * `roles`, `azp`, `preferred_username`); `assignRole` gives a user or an application one of
 * its roles. `registerSpa` registers a single-page app (a public client, no secret): its
 * codes and refresh tokens are redeemed only cross-origin (an `Origin` header, as browsers
 * send), and the token endpoint answers CORS for the origins of its redirect URIs, as Entra
 * does for SPA redirect URIs. `client_credentials` gives an application an app-only token
 * with the roles assigned to it and no `scp`. `client_info=1` adds `client_info` (MSAL's
 * account key) to the token response.
 *
 * Application access: admin consent creates the app's service principal in the tenant with
 * the registration's application permissions (`roles` in client-credentials tokens, which
 * carry `idtyp: app`). `delayAppAccess` makes the next client-credentials requests fail as
 * consent propagates (AADSTS65001, AADSTS7000229, or a token without roles). Admin consent
 * refuses `common` and `organizations`, the client-credentials grant refuses them with
 * AADSTS9001023.
 *
 * Client authentication: `client_secret` (post or basic), or a `client_assertion` of type
 * jwt-bearer: a certificate assertion (header `x5t#S256` or `x5t`, PS256 or RS256, `aud` the
 * token endpoint, `iss` = `sub` = client id) against the certificates added with
 * `addCertificate`, or a federated one (a managed identity's token) against the federated
 * identity credentials added with `addFederatedCredential` and the issuers' keys given to
 * `trustIssuer`, with Entra's codes: AADSTS700211 unknown issuer, 700212 audience, 700213
 * subject, 700024 expired, 700027 bad signature or unknown certificate, 70021 a credential
 * that is not active yet.
 */

export const DEFENDER_RESOURCE = "https://api.securitycenter.microsoft.com";
export const GRAPH_RESOURCE = "https://graph.microsoft.com";
const OIDC_SCOPES = new Set(["openid", "profile", "email", "offline_access"]);
const ALIASES = new Set(["organizations", "common"]);
const CODE_LIFETIME_MS = 10 * 60_000;
const REFRESH_INACTIVITY_MS = 90 * 24 * 3600_000;
const PENDING_LIFETIME_MS = 3600_000;
const MIN_SECRET_LENGTH = 8;

export interface EntraUser {
  oid: string;
  upn: string;
  name?: string;
  email?: string;
}

export interface AppRegistration {
  clientId: string;
  clientSecret: string;
  redirectUris: string[];
  /** Display name on the consent page and in errors. */
  name?: string;
  /**
   * Delegated permissions per resource, what `{resource}/.default` expands to. Default:
   * Defender API `Alert.Read` + `Incident.Read`, Graph `User.Read`.
   */
  permissions?: Record<string, string[]>;
  /**
   * Application permissions (app roles) per resource, granted by admin consent. Default:
   * Defender API `Alert.Read.All`.
   */
  applicationPermissions?: Record<string, string[]>;
}

/** An API that exposes scopes and app roles (an "Expose an API" registration). */
export interface ApiRegistration {
  clientId: string;
  /** The App ID URI, e.g. `api://<clientId>`: scopes are requested as `<identifierUri>/<scope>`. */
  identifierUri: string;
  /** The tenant the registration lives in; tokens for it are issued there only. */
  tenantId: string;
  /** Delegated scopes it exposes (e.g. `Operator.Access`). */
  scopes: string[];
  /** App roles (member types User and Application). */
  appRoles: string[];
  name?: string;
}

/** A single-page app: a public client whose tokens are redeemed cross-origin. */
export interface SpaRegistration {
  clientId: string;
  redirectUris: string[];
  name?: string;
  /** Delegated permissions per resource (App ID URI), as in AppRegistration. */
  permissions: Record<string, string[]>;
}

export interface FederatedCredential {
  name: string;
  issuer: string;
  subject: string;
  audiences: string[];
}

export interface AdminConsentOptions {
  decision?: "accept" | "cancel";
  /** The admin who consents (default: the tenant's first user). */
  user?: EntraUser;
}

/** What the next client-credentials request of a tenant gets while consent propagates. */
export type PropagationFailure = 65001 | 7000229 | "no-roles";

export interface FakeEntraOptions {
  certs: TestCerts;
  port?: number;
  /** Host in `url` (default 127.0.0.1; the server always binds 127.0.0.1). */
  host?: string;
  /** Clock in milliseconds, for code, token and refresh token lifetimes. */
  now?: () => number;
  /** Access and id token lifetime (default 3600). */
  accessTokenLifetimeSec?: number;
  /** Require `state` and `nonce` on authorize requests (default true; Entra itself does not). */
  requireStateAndNonce?: boolean;
}

export interface ConsentOptions {
  /** The user who signs in (default: the tenant's first user). */
  user?: EntraUser;
  /** Tenant that the issued tokens (id_token `tid`/`iss`, access token, grant) belong to. */
  idTokenTenant?: string;
  decision?: "accept" | "cancel";
  /** The token response for this code carries no refresh_token. */
  omitRefreshToken?: boolean;
  /**
   * The permissions this consent grants on the API resources (not Graph), instead of all
   * the app registration lists: e.g. `["Incident.Read"]` grants no `Alert.Read`.
   */
  grantedPermissions?: string[];
  /** The id_token of this code is signed with a key that is not in the tenant's JWKS (same `kid`). */
  badIdTokenSignature?: boolean;
}

export interface FailureOptions {
  /** HTTP status (default 503). */
  status?: number;
  /** OAuth `error` (default temporarily_unavailable for 503, server_error otherwise). */
  error?: string;
  /** AADSTS code in the description (default 90033 "A transient error has occurred"). */
  aadsts?: number;
  /** Answer with an HTML page instead of JSON, like a proxy or an ESTS outage page. */
  html?: boolean;
  retryAfterSec?: number;
  /** Which endpoint fails (default the token endpoint). */
  endpoint?: "token" | "discovery" | "jwks" | "all";
}

export interface TokenCounters {
  /** Successful authorization_code redemptions. */
  authorizationCode: number;
  /** Successful refresh_token redemptions. */
  refreshToken: number;
  /** Successful client_credentials requests. */
  clientCredentials: number;
  /** Token requests answered with an error. */
  errors: number;
  /** All token requests. */
  total: number;
}

export interface VerifiedAccessToken {
  tenantId: string;
  oid: string;
  aud: string;
  scp: string;
  appid: string;
  upn: string;
  /** Application permissions of an app-only token. */
  roles: string[];
  /** `app` for an app-only (client credentials) token, `user` otherwise. */
  idtyp: "app" | "user";
}

export interface EntraRequest {
  method: string;
  path: string;
  grantType?: string;
  /** How the client authenticated at the token endpoint (once it did). */
  clientAuth?: "secret" | "certificate" | "federated";
  status: number;
  error?: string;
}

interface Tenant {
  id: string;
  name: string;
  users: EntraUser[];
  revoked?: number;
  missingResources: Set<string>;
}

interface App extends Required<Omit<AppRegistration, "permissions" | "applicationPermissions">> {
  permissions: Map<string, string[]>;
  applicationPermissions: Map<string, string[]>;
  secretExpired: boolean;
  /** A single-page app (public client, no secret, cross-origin redemption only). */
  spa?: boolean;
  /** The object ID of its service principal (app-only tokens' `oid`). */
  servicePrincipalId: string;
}

interface Api extends Required<ApiRegistration> {
  /** principal (user oid or application client ID, lower case) -> assigned roles */
  assignments: Map<string, Set<string>>;
}

/** The app's service principal in a customer tenant (enterprise application). */
interface ServicePrincipal {
  objectId: string;
  /** Granted application permissions per resource (admin consent). */
  roles: Map<string, string[]>;
  /** Failures the next client-credentials requests get (consent propagating). */
  pending: PropagationFailure[];
}

interface AppCredentials {
  federated: FederatedCredential[];
  /** x5t#S256 (and x5t) of registered certificates -> public key. */
  certificates: Map<string, KeyObject>;
  /** Requests with a federated assertion that still get AADSTS70021 (a credential not active yet). */
  inactiveFor: number;
}

interface AdminConsentRequest {
  id: string;
  tenantId: string;
  clientId: string;
  redirectUri: string;
  scope: string;
  state: string | null;
  created: number;
}

interface AuthRequest {
  id: string;
  responseMode: "query" | "fragment";
  pathTenant: string;
  clientId: string;
  redirectUri: string;
  scopes: string[];
  state: string | null;
  nonce: string | null;
  codeChallenge: string;
  loginHint: string | null;
  created: number;
}

interface Grant {
  tenantId: string;
  clientId: string;
  user: EntraUser;
  /** Everything consented at authorize, OIDC scopes included. */
  scopes: string[];
  /** ConsentOptions.grantedPermissions: what `.default` of an API resource expands to. */
  permissions?: string[];
}

interface CodeRecord {
  request: AuthRequest;
  grant: Grant;
  issuedAt: number;
  redeemed: boolean;
  omitRefreshToken: boolean;
  badIdTokenSignature: boolean;
}

interface RefreshRecord {
  grant: Grant;
  issuedAt: number;
  lastUsedAt: number;
}

type AuthorizeOutcome =
  | { kind: "page"; request: AuthRequest; users: Array<{ tenant: Tenant; user: EntraUser }> }
  | { kind: "error-page"; status: number; aadsts: number; message: string }
  | { kind: "redirect"; location: string };

class TokenError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly aadsts: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export class FakeEntra extends HttpsFake {
  now: () => number;
  accessTokenLifetimeSec: number;
  readonly requestLog: EntraRequest[] = [];
  private readonly options: FakeEntraOptions;
  private keys: { kid: string; privateKey: webcrypto.CryptoKey; publicKey: webcrypto.CryptoKey; jwk: JWK } | undefined;
  /** A key pair that is in no JWKS, for ConsentOptions.badIdTokenSignature. */
  private foreignKey: webcrypto.CryptoKey | undefined;
  private readonly tenants = new Map<string, Tenant>();
  private readonly apps = new Map<string, App>();
  /** Registered APIs by client ID and by App ID URI (both lower case). */
  private readonly apis = new Map<string, Api>();
  private readonly pending = new Map<string, AuthRequest>();
  private readonly codes = new Map<string, CodeRecord>();
  private readonly refreshTokens = new Map<string, RefreshRecord>();
  private readonly issuedRts = new Map<string, string[]>();
  private readonly counters = new Map<string, TokenCounters>();
  private readonly servicePrincipals = new Map<string, ServicePrincipal>();
  private readonly credentials = new Map<string, AppCredentials>();
  private readonly trustedIssuers = new Map<string, KeyObject | webcrypto.CryptoKey>();
  private readonly pendingAdminConsents = new Map<string, AdminConsentRequest>();
  private readonly assertions: string[] = [];
  private readonly appTokens = new Map<string, string[]>();
  private readonly seen = new Set<string>();
  private failures: { remaining: number; options: FailureOptions } = { remaining: 0, options: {} };

  constructor(options: FakeEntraOptions) {
    super("FakeEntra", options);
    this.options = options;
    this.now = options.now ?? Date.now;
    this.accessTokenLifetimeSec = options.accessTokenLifetimeSec ?? 3600;
  }

  /** Starts listening, with a signing key made once. */
  override async start(): Promise<void> {
    if (!this.keys) {
      const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
      const kid = randomBytes(20).toString("base64url");
      const jwk = { ...(await exportJWK(publicKey)), kid, use: "sig", alg: "RS256" };
      this.keys = { kid, privateKey, publicKey, jwk };
    }
    await super.start();
  }

  registerApp(app: AppRegistration): void {
    const permissions = new Map<string, string[]>();
    const source = app.permissions ?? { [DEFENDER_RESOURCE]: ["Alert.Read", "Incident.Read"], [GRAPH_RESOURCE]: ["User.Read"] };
    for (const [resource, perms] of Object.entries(source)) permissions.set(normResource(resource), perms);
    if (!permissions.has(normResource(GRAPH_RESOURCE))) permissions.set(normResource(GRAPH_RESOURCE), ["User.Read"]);
    const applicationPermissions = new Map<string, string[]>();
    for (const [resource, roles] of Object.entries(app.applicationPermissions ?? { [DEFENDER_RESOURCE]: ["Alert.Read.All"] })) {
      applicationPermissions.set(normResource(resource), roles);
    }
    this.apps.set(app.clientId.toLowerCase(), {
      clientId: app.clientId,
      clientSecret: app.clientSecret,
      redirectUris: [...app.redirectUris],
      name: app.name ?? "MSSP Defender Collector",
      permissions,
      applicationPermissions,
      secretExpired: false,
      servicePrincipalId: randomUUID(),
    });
    this.note(app.clientSecret);
  }

  /** Registers an API with scopes and app roles; its access tokens are v2. */
  registerApi(api: ApiRegistration): void {
    const entry: Api = { name: api.name ?? "API", ...api, assignments: new Map() };
    this.apis.set(api.clientId.toLowerCase(), entry);
    this.apis.set(normResource(api.identifierUri), entry);
  }

  /** Registers a single-page app (public client): no secret, cross-origin redemption, CORS for its redirect URIs' origins. */
  registerSpa(spa: SpaRegistration): void {
    const permissions = new Map<string, string[]>();
    for (const [resource, perms] of Object.entries(spa.permissions)) permissions.set(normResource(resource), perms);
    this.apps.set(spa.clientId.toLowerCase(), {
      clientId: spa.clientId,
      clientSecret: "",
      redirectUris: [...spa.redirectUris],
      name: spa.name ?? "Single-page app",
      permissions,
      applicationPermissions: new Map(),
      secretExpired: false,
      spa: true,
      servicePrincipalId: randomUUID(),
    });
  }

  /**
   * Assigns an app role of `apiClientId` to a user (by object ID) or to an application (by
   * its client ID: its service principal gets the role, as in "API permissions > Application").
   */
  assignRole(apiClientId: string, principal: string, role: string): void {
    const api = this.apis.get(apiClientId.toLowerCase());
    if (!api) throw new Error(`unknown API ${apiClientId}; call registerApi first`);
    if (!api.appRoles.includes(role)) throw new Error(`API ${apiClientId} has no app role ${role}`);
    const key = principal.toLowerCase();
    const roles = api.assignments.get(key) ?? new Set<string>();
    roles.add(role);
    api.assignments.set(key, roles);
  }

  /** Removes every role of `principal` on the API. */
  unassignRoles(apiClientId: string, principal: string): void {
    this.apis.get(apiClientId.toLowerCase())?.assignments.delete(principal.toLowerCase());
  }

  /** The object ID of an application's service principal (what app-only tokens carry as `oid`). */
  servicePrincipalId(clientId: string): string {
    const app = this.apps.get(clientId.toLowerCase());
    if (!app) throw new Error(`unknown app ${clientId}`);
    return app.servicePrincipalId;
  }

  /**
   * Signs arbitrary claims with this fake's key (for tests of token validation: wrong
   * audience, issuer or tenant, expired...). The token is recorded as a secret.
   */
  async issueToken(claims: Record<string, unknown>): Promise<string> {
    const token = await this.sign(claims);
    this.note(token);
    return token;
  }

  /** Registers a tenant; without users it gets one admin `admin@<first 8 hex>.onmicrosoft.com`. */
  addTenant(tenantId: string, options: { users?: EntraUser[]; name?: string } = {}): EntraUser[] {
    const id = tenantId.toLowerCase();
    const short = id.replace(/-/g, "").slice(0, 8);
    const users = options.users?.length
      ? options.users.map((u) => ({ ...u }))
      : [{ oid: randomUUID(), upn: `admin@contoso${short}.onmicrosoft.com`, name: "Tenant Admin" }];
    this.tenants.set(id, { id, name: options.name ?? `Contoso ${short}`, users, missingResources: new Set() });
    return users.map((u) => ({ ...u }));
  }

  users(tenantId: string): EntraUser[] {
    return (this.tenants.get(tenantId.toLowerCase())?.users ?? []).map((u) => ({ ...u }));
  }

  /**
   * Every refresh-token redemption for the tenant fails with this AADSTS code from now on:
   * 70043 / 700082 / 50173 / 70008 / 65001 (invalid_grant), 50076 / 53003
   * (interaction_required), 700016 (unauthorized_client), anything else invalid_grant.
   */
  revokeTenant(tenantId: string, aadsts = 70043): void {
    this.tenant(tenantId).revoked = aadsts;
  }

  restoreTenant(tenantId: string): void {
    const t = this.tenant(tenantId);
    delete t.revoked;
    t.missingResources.clear();
  }

  /** Token requests of the tenant for `resource` fail with 400 invalid_resource AADSTS500011. */
  missingServicePrincipal(tenantId: string, resource = DEFENDER_RESOURCE): void {
    this.tenant(tenantId).missingResources.add(normResource(resource));
  }

  /** The app's secret is past its end date: 401 invalid_client AADSTS7000222. */
  expireClientSecret(clientId?: string): void {
    for (const app of this.apps.values()) if (!clientId || app.clientId.toLowerCase() === clientId.toLowerCase()) app.secretExpired = true;
  }

  /** Adds a federated identity credential to the app registration (replaces one of the same name). */
  addFederatedCredential(clientId: string, credential: FederatedCredential): void {
    const c = this.appCredentials(clientId);
    c.federated = [...c.federated.filter((f) => f.name !== credential.name), { ...credential, audiences: [...credential.audiences] }];
  }

  removeFederatedCredential(clientId: string, name: string): void {
    const c = this.appCredentials(clientId);
    c.federated = c.federated.filter((f) => f.name !== name);
  }

  /** The next `requests` federated assertions get AADSTS70021, as for a credential created moments ago. */
  federatedCredentialInactiveFor(clientId: string, requests: number): void {
    this.appCredentials(clientId).inactiveFor = requests;
  }

  /** Entra checks an issuer's tokens against its published keys; the fake is given the key. */
  trustIssuer(issuer: string, publicKey: KeyObject | webcrypto.CryptoKey): void {
    this.trustedIssuers.set(issuer, publicKey);
  }

  /** Uploads a certificate's public part (DER) to the app registration. */
  addCertificate(clientId: string, certificateDer: Buffer): void {
    const cert = new X509Certificate(certificateDer);
    const c = this.appCredentials(clientId);
    c.certificates.set(createHash("sha256").update(certificateDer).digest("base64url"), cert.publicKey);
    c.certificates.set(createHash("sha1").update(certificateDer).digest("base64url"), cert.publicKey);
  }

  removeCertificates(clientId: string): void {
    this.appCredentials(clientId).certificates.clear();
  }

  /**
   * What a browser admin would do on the admin consent page: returns the redirect back to
   * the app (`admin_consent=True&tenant&scope&state`, or `error=access_denied`). Throws when
   * Entra would show an error page instead.
   */
  adminConsent(adminConsentUrl: string, opts: AdminConsentOptions = {}): string {
    const url = new URL(adminConsentUrl);
    const match = /^\/([^/]+)\/v2\.0\/adminconsent$/.exec(url.pathname);
    if (!match) throw new Error(`not an admin consent URL: ${url.pathname}`);
    const outcome = this.adminConsentRequest(decodeURIComponent(match[1]!), url.searchParams);
    if (outcome.kind === "error-page") throw new Error(`AADSTS${outcome.aadsts}: ${outcome.message}`);
    if (outcome.kind === "redirect") return outcome.location;
    return this.adminConsentDecision(outcome.request, opts.decision ?? "accept");
  }

  /** Whether the app has a service principal (an enterprise application) in the tenant. */
  hasServicePrincipal(tenantId: string, clientId: string): boolean {
    return this.servicePrincipals.has(spKey(tenantId, clientId));
  }

  /** The customer deleted the enterprise application: client credentials get AADSTS7000229. */
  deleteServicePrincipal(tenantId: string, clientId: string): void {
    this.servicePrincipals.delete(spKey(tenantId, clientId));
  }

  /** An admin removed the app's application permissions: tokens come without `roles`. */
  withdrawApplicationPermissions(tenantId: string, clientId: string): void {
    const sp = this.servicePrincipals.get(spKey(tenantId, clientId));
    if (sp) sp.roles.clear();
  }

  /** Ends a `delayAppAccess`: the next client-credentials requests succeed again. */
  clearAppAccessDelay(tenantId: string, clientId: string): void {
    const sp = this.servicePrincipals.get(spKey(tenantId, clientId));
    if (sp) sp.pending.length = 0;
  }

  /** Every client_assertion received, oldest first (for leak checks). */
  assertionsSeen(): string[] {
    return [...this.assertions];
  }

  /** App-only (client credentials) access tokens handed out for the tenant, oldest first. */
  appTokensIssued(tenantId: string): string[] {
    return [...(this.appTokens.get(tenantId.toLowerCase()) ?? [])];
  }

  /** The next client-credentials requests of the tenant get these answers in turn (consent propagating). */
  delayAppAccess(tenantId: string, clientId: string, failures: PropagationFailure[]): void {
    const sp = this.servicePrincipals.get(spKey(tenantId, clientId));
    if (!sp) throw new Error(`no service principal of ${clientId} in ${tenantId}; admin consent first`);
    sp.pending.push(...failures);
  }

  /** The next `n` requests to the chosen endpoint (default: token) fail. */
  failNext(n: number, options: FailureOptions = {}): void {
    this.failures = { remaining: n, options };
  }

  tokenCount(tenantId: string): TokenCounters {
    return { ...this.counter(tenantId.toLowerCase()) };
  }

  /** Refresh tokens handed out for the tenant, oldest first. */
  issuedRefreshTokens(tenantId: string): string[] {
    return [...(this.issuedRts.get(tenantId.toLowerCase()) ?? [])];
  }

  /**
   * Every secret issued or received (8+ chars): codes, access, refresh and id tokens, PKCE
   * verifiers, client secrets, and the `state` and `nonce` of every authorize request.
   */
  secretsSeen(): string[] {
    return [...this.seen];
  }

  /** Public keys, as served at the jwks_uri. */
  jwks(): { keys: JWK[] } {
    if (!this.keys) throw new Error("FakeEntra is not started");
    return { keys: [{ ...this.keys.jwk }] };
  }

  /**
   * For fake resource servers: checks signature, lifetime and that `aud` begins with
   * `audience`; null when the token is not a valid access token of this fake.
   */
  async verifyAccessToken(token: string, audience: string = DEFENDER_RESOURCE): Promise<VerifiedAccessToken | null> {
    if (!this.keys) return null;
    try {
      const { payload } = await jwtVerify(token, this.keys.publicKey, {
        algorithms: ["RS256"],
        currentDate: new Date(this.now()),
      });
      const aud = typeof payload.aud === "string" ? payload.aud : undefined;
      if (!aud?.startsWith(audience)) return null;
      if (typeof payload.appid !== "string" || typeof payload.tid !== "string" || typeof payload.oid !== "string") return null;
      return {
        tenantId: payload.tid,
        oid: payload.oid,
        aud,
        scp: typeof payload.scp === "string" ? payload.scp : "",
        appid: payload.appid,
        upn: typeof payload.upn === "string" ? payload.upn : "",
        roles: Array.isArray(payload.roles) ? payload.roles.filter((r): r is string => typeof r === "string") : [],
        idtyp: payload.idtyp === "app" ? "app" : "user",
      };
    } catch {
      return null;
    }
  }

  /**
   * What a browser user would do: open the authorize URL, pick the user and click Accept
   * (or Cancel). Returns the redirect Location (`redirect_uri?code=...&state=...`, or an
   * error redirect). Throws when Entra would show an error page instead of redirecting.
   */
  async consent(authorizeUrl: string, opts: ConsentOptions = {}): Promise<string> {
    const url = new URL(authorizeUrl);
    const match = /^\/([^/]+)\/oauth2\/v2\.0\/authorize$/.exec(url.pathname);
    if (!match) throw new Error(`not an authorize URL: ${url.pathname}`);
    const outcome = this.authorize(decodeURIComponent(match[1]!), url.searchParams);
    if (outcome.kind === "error-page") throw new Error(`AADSTS${outcome.aadsts}: ${outcome.message}`);
    if (outcome.kind === "redirect") return outcome.location;
    this.pending.delete(outcome.request.id);
    if (opts.decision === "cancel") return this.declined(outcome.request);
    let chosen = opts.user ? outcome.users.find((c) => c.user.oid === opts.user!.oid) : outcome.users[0];
    if (!chosen && opts.user) {
      const t = this.tenants.get(outcome.request.pathTenant);
      if (!t) throw new Error(`user ${opts.user.oid} is in no tenant`);
      chosen = { tenant: t, user: opts.user };
    }
    if (!chosen) throw new Error("no user can sign in");
    return this.accepted(outcome.request, chosen.tenant, chosen.user, opts);
  }

  // ---------------------------------------------------------------------------------------
  // HTTP

  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://entra");
    const method = req.method ?? "GET";
    const log: EntraRequest = { method, path: url.pathname, status: 0 };
    this.requestLog.push(log);
    const correlationId = headerValue(req, "client-request-id") ?? randomUUID();
    try {
      const body = await readBody(req);
      const m = /^\/([^/]+)(\/.*)$/.exec(url.pathname);
      const tenantSegment = m ? decodeURIComponent(m[1]!).toLowerCase() : "";
      const rest = m?.[2] ?? "";
      if (rest === "/v2.0/.well-known/openid-configuration" && method === "GET") {
        if (this.injectFailure("discovery", res, log, correlationId)) return;
        return this.discovery(tenantSegment, res, log, correlationId);
      }
      if (rest === "/discovery/v2.0/keys" && method === "GET") {
        if (this.injectFailure("jwks", res, log, correlationId)) return;
        log.status = 200;
        return sendJson(res, 200, this.jwks(), { "Cache-Control": "max-age=86400, private", "Access-Control-Allow-Origin": "*" });
      }
      if (rest === "/oauth2/v2.0/authorize" && method === "GET") {
        return this.authorizePage(tenantSegment, url.searchParams, res, log);
      }
      if (rest === "/oauth2/v2.0/authorize/decision" && method === "POST") {
        return this.decision(tenantSegment, new URLSearchParams(body), res, log);
      }
      if (rest === "/oauth2/v2.0/token" && method === "OPTIONS") {
        return this.preflight(req, res, log);
      }
      if (rest === "/v2.0/adminconsent" && method === "GET") {
        return this.adminConsentPage(tenantSegment, url.searchParams, res, log);
      }
      if (rest === "/v2.0/adminconsent/decision" && method === "POST") {
        return this.adminConsentForm(tenantSegment, new URLSearchParams(body), res, log);
      }
      if (rest === "/oauth2/v2.0/token") {
        return await this.token(tenantSegment, method, req, body, res, log, correlationId);
      }
      if (rest === "/oauth2/v2.0/logout" && method === "GET") {
        return this.logout(url.searchParams, res, log);
      }
      log.status = 404;
      sendJson(res, 404, { error: "not_found", error_description: `The fake has no endpoint ${method} ${url.pathname}` });
    } catch (err) {
      log.status = 500;
      sendJson(res, 500, { error: "server_error", error_description: `Fake Entra failed: ${String(err)}` });
    }
  }

  private injectFailure(endpoint: "token" | "discovery" | "jwks", res: ServerResponse, log: EntraRequest, correlationId: string): boolean {
    const target = this.failures.options.endpoint ?? "token";
    if (this.failures.remaining <= 0 || (target !== "all" && target !== endpoint)) return false;
    this.failures.remaining--;
    const o = this.failures.options;
    const status = o.status ?? 503;
    const headers: Record<string, string> = o.retryAfterSec !== undefined ? { "Retry-After": String(o.retryAfterSec) } : {};
    log.status = status;
    log.error = "injected";
    if (o.html) {
      const html = `<!DOCTYPE html><html><head><title>Service unavailable</title></head><body><h1>${status}</h1><p>The service is temporarily unavailable.</p></body></html>`;
      res.writeHead(status, { "Content-Type": "text/html; charset=utf-8", ...headers });
      res.end(html);
      return true;
    }
    const error = o.error ?? (status === 503 ? "temporarily_unavailable" : "server_error");
    const aadsts = o.aadsts ?? 90033;
    const message = aadsts === 90033 ? "A transient error has occurred. Please try again." : "Injected failure.";
    sendJson(res, status, errorBody(error, aadsts, message, correlationId), { ...headers, "Cache-Control": "no-store, no-cache" });
    return true;
  }

  private discovery(tenantSegment: string, res: ServerResponse, log: EntraRequest, correlationId: string): void {
    const alias = ALIASES.has(tenantSegment);
    if (!alias && !this.tenants.has(tenantSegment)) {
      log.status = 400;
      log.error = "invalid_tenant";
      sendJson(res, 400, errorBody("invalid_tenant", 90002, tenantNotFound(tenantSegment), correlationId));
      return;
    }
    const base = `${this.url}/${tenantSegment}`;
    const issuerTenant = alias ? "{tenantid}" : tenantSegment;
    log.status = 200;
    sendJson(
      res,
      200,
      {
        token_endpoint: `${base}/oauth2/v2.0/token`,
        token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        jwks_uri: `${base}/discovery/v2.0/keys`,
        response_modes_supported: ["query", "fragment", "form_post"],
        subject_types_supported: ["pairwise"],
        id_token_signing_alg_values_supported: ["RS256"],
        response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
        scopes_supported: ["openid", "profile", "email", "offline_access"],
        issuer: `${this.url}/${issuerTenant}/v2.0`,
        request_uri_parameter_supported: false,
        userinfo_endpoint: "https://graph.microsoft.com/oidc/userinfo",
        authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
        device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
        http_logout_supported: true,
        frontchannel_logout_supported: true,
        end_session_endpoint: `${base}/oauth2/v2.0/logout`,
        claims_supported: [
          "sub",
          "iss",
          "cloud_instance_name",
          "cloud_instance_host_name",
          "cloud_graph_host_name",
          "msgraph_host",
          "aud",
          "exp",
          "iat",
          "auth_time",
          "acr",
          "nonce",
          "preferred_username",
          "name",
          "tid",
          "ver",
          "at_hash",
          "c_hash",
          "email",
        ],
        code_challenge_methods_supported: ["plain", "S256"],
        tenant_region_scope: "EU",
        cloud_instance_name: "microsoftonline.com",
        cloud_graph_host_name: "graph.windows.net",
        msgraph_host: "graph.microsoft.com",
        rbac_url: "https://pas.windows.net",
      },
      { "Cache-Control": "max-age=86400, private", "Access-Control-Allow-Origin": "*" },
    );
  }

  // ---------------------------------------------------------------------------------------
  // Authorize

  private authorize(tenantSegment: string, q: URLSearchParams): AuthorizeOutcome {
    const pathTenant = tenantSegment.toLowerCase();
    const page = (aadsts: number, message: string, status = 400): AuthorizeOutcome => ({ kind: "error-page", status, aadsts, message });
    if (pathTenant === "consumers") return page(50020, "The fake Entra has no personal Microsoft accounts.");
    if (!ALIASES.has(pathTenant) && !this.tenants.has(pathTenant)) return page(90002, tenantNotFound(pathTenant));
    const clientId = q.get("client_id");
    if (!clientId) return page(900144, "The request body must contain the following parameter: 'client_id'.");
    const app = this.apps.get(clientId.toLowerCase());
    if (!app) return page(700016, appNotFound(clientId, pathTenant));
    const redirectUri = q.get("redirect_uri");
    if (!redirectUri) return page(900144, "The request body must contain the following parameter: 'redirect_uri'.");
    if (!app.redirectUris.includes(redirectUri)) {
      return page(
        50011,
        `The redirect URI '${redirectUri}' specified in the request does not match the redirect URIs configured for the application '${app.clientId}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this.`,
      );
    }
    const state = q.get("state");
    const responseMode = q.get("response_mode");
    const mode = responseMode === "fragment" ? "fragment" : "query";
    const fail = (error: string, aadsts: number, message: string): AuthorizeOutcome => ({
      kind: "redirect",
      location: redirectError(redirectUri, error, aadsts, message, state, mode),
    });
    if (responseMode !== null && responseMode !== "query" && responseMode !== "fragment") {
      return fail("invalid_request", 900144, `The fake Entra supports response_mode=query and fragment, not '${responseMode}'.`);
    }
    const responseType = q.get("response_type");
    if (!responseType) return fail("invalid_request", 900144, "The request body must contain the following parameter: 'response_type'.");
    if (responseType !== "code") {
      return fail("unsupported_response_type", 700054, `response_type '${responseType}' is not enabled for the application.`);
    }
    const scope = q.get("scope");
    if (!scope?.trim()) return fail("invalid_request", 900144, "The request body must contain the following parameter: 'scope'.");
    const parsed = parseScopes(scope);
    if ("invalid" in parsed) {
      return fail("invalid_scope", 70011, `The provided value for the input parameter 'scope' is not valid. The scope '${parsed.invalid}' is not valid.`);
    }
    for (const resource of parsed.resources.keys()) {
      if (!app.permissions.has(resource)) {
        return fail("invalid_resource", 500011, resourceNotFound(resource, pathTenant));
      }
    }
    const codeChallenge = q.get("code_challenge");
    if (!codeChallenge) {
      return fail("invalid_request", 9002325, "Proof Key for Code Exchange is required for cross-origin authorization code redemption.");
    }
    if (q.get("code_challenge_method") !== "S256") {
      return fail("invalid_request", 501491, "The fake Entra requires code_challenge_method=S256.");
    }
    if (!/^[A-Za-z0-9_-]{43}$/.test(codeChallenge)) {
      return fail("invalid_request", 50148, "The code_challenge is not a base64url encoded SHA-256 hash.");
    }
    const nonce = q.get("nonce");
    this.note(state);
    this.note(nonce);
    if (this.options.requireStateAndNonce !== false) {
      if (!state) return fail("invalid_request", 900144, "The request body must contain the following parameter: 'state'.");
      if (!nonce) return fail("invalid_request", 900144, "The request body must contain the following parameter: 'nonce'.");
    }
    if (q.get("prompt") === "none") {
      return fail("login_required", 50058, "A silent sign-in request was sent but no user is signed in.");
    }
    const request: AuthRequest = {
      id: randomBytes(24).toString("base64url"),
      responseMode: mode,
      pathTenant,
      clientId: app.clientId,
      redirectUri,
      scopes: scope.split(/\s+/).filter(Boolean),
      state,
      nonce,
      codeChallenge,
      loginHint: q.get("login_hint"),
      created: this.now(),
    };
    const users = ALIASES.has(pathTenant)
      ? [...this.tenants.values()].flatMap((tenant) => tenant.users.map((user) => ({ tenant, user })))
      : this.tenants.get(pathTenant)!.users.map((user) => ({ tenant: this.tenants.get(pathTenant)!, user }));
    if (request.loginHint) {
      const hint = request.loginHint.toLowerCase();
      users.sort((a, b) => Number(b.user.upn.toLowerCase() === hint) - Number(a.user.upn.toLowerCase() === hint));
    }
    return { kind: "page", request, users };
  }

  private authorizePage(tenantSegment: string, q: URLSearchParams, res: ServerResponse, log: EntraRequest): void {
    const outcome = this.authorize(tenantSegment, q);
    if (outcome.kind === "error-page") {
      log.status = outcome.status;
      log.error = `AADSTS${outcome.aadsts}`;
      sendHtml(res, outcome.status, errorPage(outcome.aadsts, outcome.message));
      return;
    }
    if (outcome.kind === "redirect") {
      log.status = 302;
      redirect(res, outcome.location);
      return;
    }
    this.prunePending();
    this.pending.set(outcome.request.id, outcome.request);
    const app = this.apps.get(outcome.request.clientId.toLowerCase())!;
    log.status = 200;
    sendHtml(res, 200, this.consentPage(outcome.request, app, outcome.users));
  }

  private consentPage(request: AuthRequest, app: App, users: Array<{ tenant: Tenant; user: EntraUser }>): string {
    const e = escapeHtml;
    // Relative, so the page works under whatever host name the browser used.
    const action = `/${encodeURIComponent(request.pathTenant)}/oauth2/v2.0/authorize/decision`;
    const tenantLabel = ALIASES.has(request.pathTenant)
      ? `${request.pathTenant} (the user's home tenant)`
      : `${this.tenants.get(request.pathTenant)?.name ?? ""} (${request.pathTenant})`;
    const scopes = request.scopes.map((s) => `<li><code>${e(s)}</code></li>`).join("");
    const userOptions = users
      .map(
        ({ tenant, user }, i) =>
          `<label class="user"><input type="radio" name="user" value="${e(`${tenant.id}|${user.oid}`)}"${i === 0 ? " checked" : ""}> ` +
          `<strong>${e(user.name ?? user.upn)}</strong> ${e(user.upn)} <small>tenant ${e(tenant.id)}</small></label>`,
      )
      .join("\n");
    return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Permissions requested - Fake Microsoft Entra ID</title>
<style>
body{font-family:"Segoe UI",system-ui,sans-serif;background:#f2f2f2;margin:0}
main{max-width:480px;margin:48px auto;background:#fff;padding:36px 44px;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:24px;font-weight:600;margin:0 0 16px}
.user{display:block;padding:8px;border:1px solid #ddd;margin:6px 0;cursor:pointer}
small{color:#666;display:block}
.buttons{margin-top:24px;text-align:right}
button{min-width:108px;padding:6px 12px;font-size:15px;margin-left:8px;cursor:pointer}
button[value=accept]{background:#0067b8;color:#fff;border:1px solid #0067b8}
code{font-size:13px}
</style>
</head>
<body>
<main>
<p>Fake Microsoft Entra ID</p>
<h1>Permissions requested</h1>
<p><strong id="app-name">${e(app.name)}</strong> (<code>${e(app.clientId)}</code>) wants to sign in to
tenant <strong id="tenant">${e(tenantLabel)}</strong> and access:</p>
<ul id="scopes">${scopes}</ul>
<form method="post" action="${e(action)}">
<input type="hidden" name="request" value="${e(request.id)}">
<fieldset><legend>Sign in as</legend>
${userOptions}
</fieldset>
<p>Accepting grants these permissions on behalf of your organization.</p>
<div class="buttons">
<button type="submit" name="decision" value="cancel">Cancel</button>
<button type="submit" name="decision" value="accept">Accept</button>
</div>
</form>
</main>
</body>
</html>
`;
  }

  private decision(tenantSegment: string, form: URLSearchParams, res: ServerResponse, log: EntraRequest): void {
    const request = this.pending.get(form.get("request") ?? "");
    const fail = (message: string) => {
      log.status = 400;
      log.error = "AADSTS90014";
      sendHtml(res, 400, errorPage(90014, message));
    };
    if (!request || request.pathTenant !== tenantSegment || this.now() - request.created > PENDING_LIFETIME_MS) {
      fail("The sign-in request was not found, has expired or was already used. Start again from the application.");
      return;
    }
    this.pending.delete(request.id);
    const decision = form.get("decision");
    if (decision === "cancel") {
      log.status = 302;
      redirect(res, this.declined(request));
      return;
    }
    if (decision !== "accept") {
      fail("The form must contain decision=accept or decision=cancel.");
      return;
    }
    const [tid, oid] = (form.get("user") ?? "").split("|");
    const tenant = tid ? this.tenants.get(tid) : undefined;
    const allowed = ALIASES.has(request.pathTenant) || tid === request.pathTenant;
    const user = allowed ? tenant?.users.find((u) => u.oid === oid) : undefined;
    if (!tenant || !user) {
      fail("Pick one of the listed users.");
      return;
    }
    log.status = 302;
    redirect(res, this.accepted(request, tenant, user, {}));
  }

  private declined(request: AuthRequest): string {
    const params = new URLSearchParams();
    params.set("error", "access_denied");
    params.set("error_subcode", "cancel");
    params.set("error_description", describe(65004, "User declined to consent to access the app.", randomUUID()));
    if (request.state !== null) params.set("state", request.state);
    return withResponse(request.redirectUri, params, request.responseMode);
  }

  private accepted(request: AuthRequest, userTenant: Tenant, user: EntraUser, opts: ConsentOptions): string {
    const code = `1.A${randomBytes(96).toString("base64url")}`;
    this.note(code);
    const tenantId = (opts.idTokenTenant ?? userTenant.id).toLowerCase();
    // Consent creates the app's service principal (delegated grants only: no app roles).
    if (this.tenants.has(tenantId)) this.ensureServicePrincipal(tenantId, request.clientId);
    this.codes.set(code, {
      request,
      grant: {
        tenantId,
        clientId: request.clientId,
        user: { ...user },
        scopes: request.scopes,
        ...(opts.grantedPermissions ? { permissions: [...opts.grantedPermissions] } : {}),
      },
      issuedAt: this.now(),
      redeemed: false,
      omitRefreshToken: opts.omitRefreshToken ?? false,
      badIdTokenSignature: opts.badIdTokenSignature ?? false,
    });
    const params = new URLSearchParams();
    params.set("code", code);
    if (request.state !== null) params.set("state", request.state);
    params.set("session_state", randomUUID());
    // MSAL reads client_info from the authorize response too.
    if (this.apps.get(request.clientId.toLowerCase())?.spa) params.set("client_info", clientInfo(user.oid, tenantId));
    return withResponse(request.redirectUri, params, request.responseMode);
  }

  private prunePending(): void {
    const now = this.now();
    for (const [id, r] of this.pending) if (now - r.created > PENDING_LIFETIME_MS) this.pending.delete(id);
  }

  // ---------------------------------------------------------------------------------------
  // Admin consent (application permissions)

  private adminConsentRequest(
    tenantSegment: string,
    q: URLSearchParams,
  ): { kind: "page"; request: AdminConsentRequest } | { kind: "error-page"; status: number; aadsts: number; message: string } | { kind: "redirect"; location: string } {
    const page = (aadsts: number, message: string) => ({ kind: "error-page" as const, status: 400, aadsts, message });
    const tenantId = tenantSegment.toLowerCase();
    if (ALIASES.has(tenantId) || tenantId === "consumers") {
      return page(90002, "The fake Entra needs a tenant-specific admin consent URL (never common or organizations).");
    }
    if (!this.tenants.has(tenantId)) return page(90002, tenantNotFound(tenantId));
    const clientId = q.get("client_id");
    if (!clientId) return page(900144, "The request body must contain the following parameter: 'client_id'.");
    const app = this.apps.get(clientId.toLowerCase());
    if (!app) return page(700016, appNotFound(clientId, tenantId));
    const redirectUri = q.get("redirect_uri");
    if (!redirectUri || !app.redirectUris.includes(redirectUri)) {
      return page(50011, `The redirect URI '${redirectUri ?? ""}' specified in the request does not match the redirect URIs configured for the application '${app.clientId}'.`);
    }
    const state = q.get("state");
    this.note(state);
    const scope = q.get("scope") ?? "";
    const parsed = parseScopes(scope);
    const fail = (error: string, aadsts: number, message: string) => ({
      kind: "redirect" as const,
      location: redirectError(redirectUri, error, aadsts, message, state),
    });
    if ("invalid" in parsed || parsed.resources.size === 0) {
      return fail("invalid_request", 70011, `The provided value for the input parameter 'scope' is not valid. The scope '${scope}' is not valid.`);
    }
    for (const [resource, perms] of parsed.resources) {
      if (!(perms.length === 1 && perms[0] === ".default")) {
        return fail("invalid_request", 70011, `The provided value for the input parameter 'scope' is not valid. Admin consent for application permissions needs '${resource}/.default'.`);
      }
      if (!app.permissions.has(resource) && !app.applicationPermissions.has(resource)) {
        return fail("invalid_resource", 500011, resourceNotFound(resource, tenantId));
      }
    }
    const request: AdminConsentRequest = {
      id: randomBytes(24).toString("base64url"),
      tenantId,
      clientId: app.clientId,
      redirectUri,
      scope,
      state,
      created: this.now(),
    };
    return { kind: "page", request };
  }

  private adminConsentPage(tenantSegment: string, q: URLSearchParams, res: ServerResponse, log: EntraRequest): void {
    const outcome = this.adminConsentRequest(tenantSegment, q);
    if (outcome.kind === "error-page") {
      log.status = outcome.status;
      log.error = `AADSTS${outcome.aadsts}`;
      sendHtml(res, outcome.status, errorPage(outcome.aadsts, outcome.message));
      return;
    }
    if (outcome.kind === "redirect") {
      log.status = 302;
      redirect(res, outcome.location);
      return;
    }
    const now = this.now();
    for (const [id, r] of this.pendingAdminConsents) if (now - r.created > PENDING_LIFETIME_MS) this.pendingAdminConsents.delete(id);
    this.pendingAdminConsents.set(outcome.request.id, outcome.request);
    const request = outcome.request;
    const app = this.apps.get(request.clientId.toLowerCase())!;
    const tenant = this.tenants.get(request.tenantId)!;
    const e = escapeHtml;
    const roles = [...app.applicationPermissions.entries()].flatMap(([resource, perms]) => perms.map((p) => `<li><code>${e(p)}</code> (${e(resource)}, application)</li>`));
    const users = tenant.users
      .map(
        (user, i) =>
          `<label class="user"><input type="radio" name="user" value="${e(`${tenant.id}|${user.oid}`)}"${i === 0 ? " checked" : ""}> <strong>${e(user.name ?? user.upn)}</strong> ${e(user.upn)}</label>`,
      )
      .join("\n");
    log.status = 200;
    sendHtml(
      res,
      200,
      `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Permissions requested (admin consent) - Fake Microsoft Entra ID</title></head>
<body style="font-family:system-ui,sans-serif;max-width:560px;margin:48px auto">
<p>Fake Microsoft Entra ID</p>
<h1>Permissions requested: accept for your organization</h1>
<p><strong id="app-name">${e(app.name)}</strong> (<code>${e(app.clientId)}</code>) asks an administrator of
<strong id="tenant">${e(tenant.name)} (${e(tenant.id)})</strong> for these application permissions. It will act as itself,
without a signed-in user:</p>
<ul id="roles">${roles.join("")}</ul>
<form method="post" action="/${e(encodeURIComponent(request.tenantId))}/v2.0/adminconsent/decision">
<input type="hidden" name="request" value="${e(request.id)}">
<fieldset><legend>Sign in as</legend>
${users}
</fieldset>
<button type="submit" name="decision" value="cancel">Cancel</button>
<button type="submit" name="decision" value="accept">Accept</button>
</form>
</body>
</html>
`,
    );
  }

  private adminConsentForm(tenantSegment: string, form: URLSearchParams, res: ServerResponse, log: EntraRequest): void {
    const request = this.pendingAdminConsents.get(form.get("request") ?? "");
    if (!request || request.tenantId !== tenantSegment || this.now() - request.created > PENDING_LIFETIME_MS) {
      log.status = 400;
      log.error = "AADSTS90014";
      sendHtml(res, 400, errorPage(90014, "The admin consent request was not found, has expired or was already used."));
      return;
    }
    this.pendingAdminConsents.delete(request.id);
    const decision = form.get("decision");
    log.status = 302;
    redirect(res, this.adminConsentDecision(request, decision === "accept" ? "accept" : "cancel"));
  }

  private adminConsentDecision(request: AdminConsentRequest, decision: "accept" | "cancel"): string {
    const url = new URL(request.redirectUri);
    if (decision === "cancel") {
      url.searchParams.set("error", "access_denied");
      url.searchParams.set("error_subcode", "cancel");
      url.searchParams.set("error_description", describe(65004, "User declined to consent to access the app.", randomUUID()));
      if (request.state !== null) url.searchParams.set("state", request.state);
      return url.href;
    }
    const app = this.apps.get(request.clientId.toLowerCase())!;
    const sp = this.ensureServicePrincipal(request.tenantId, app.clientId);
    for (const [resource, roles] of app.applicationPermissions) sp.roles.set(resource, [...roles]);
    url.searchParams.set("admin_consent", "True");
    url.searchParams.set("tenant", request.tenantId);
    url.searchParams.set("scope", request.scope);
    if (request.state !== null) url.searchParams.set("state", request.state);
    return url.href;
  }

  private ensureServicePrincipal(tenantId: string, clientId: string): ServicePrincipal {
    const key = spKey(tenantId, clientId);
    let sp = this.servicePrincipals.get(key);
    if (!sp) {
      sp = { objectId: randomUUID(), roles: new Map(), pending: [] };
      this.servicePrincipals.set(key, sp);
    }
    return sp;
  }

  private appCredentials(clientId: string): AppCredentials {
    const key = clientId.toLowerCase();
    let c = this.credentials.get(key);
    if (!c) {
      c = { federated: [], certificates: new Map(), inactiveFor: 0 };
      this.credentials.set(key, c);
    }
    return c;
  }

  // ---------------------------------------------------------------------------------------
  // Token

  private async token(
    tenantSegment: string,
    method: string,
    req: IncomingMessage,
    body: string,
    res: ServerResponse,
    log: EntraRequest,
    correlationId: string,
  ): Promise<void> {
    const contentType = headerValue(req, "content-type") ?? "";
    const form = contentType.toLowerCase().startsWith("application/x-www-form-urlencoded") ? new URLSearchParams(body) : new URLSearchParams();
    const grantType = form.get("grant_type") ?? undefined;
    if (grantType) log.grantType = grantType;
    const cors = this.corsHeaders(headerValue(req, "origin"));
    for (const name of ["code", "code_verifier", "refresh_token", "client_secret", "client_assertion"]) this.note(form.get(name));
    // Counted under the grant's tenant once the code or refresh token is known, else the path's.
    const ctx: { tenant: string } = { tenant: tenantSegment };
    try {
      if (method !== "POST") {
        throw new TokenError(400, "invalid_request", 900561, `The endpoint only accepts POST requests. Received a ${method} request.`);
      }
      if (this.injectFailure("token", res, log, correlationId)) {
        const c = this.counter(ctx.tenant);
        c.total++;
        c.errors++;
        return;
      }
      if (!ALIASES.has(tenantSegment) && !this.tenants.has(tenantSegment)) {
        throw new TokenError(400, "invalid_request", 90002, tenantNotFound(tenantSegment));
      }
      if (!grantType) throw new TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.");
      const app = await this.authenticateClient(req, form, tenantSegment, log);
      let response: Record<string, unknown>;
      if (grantType === "authorization_code") {
        const record = this.redeemableCode(form, app, tenantSegment, ctx);
        response = await this.issue(record.grant, form.get("scope"), {
          nonce: record.request.nonce,
          omitRefreshToken: record.omitRefreshToken,
          badIdTokenSignature: record.badIdTokenSignature,
        });
        record.redeemed = true;
        this.counter(ctx.tenant).authorizationCode++;
      } else if (grantType === "refresh_token") {
        const record = this.redeemableRefreshToken(form, app, tenantSegment, ctx);
        response = await this.issue(record.grant, form.get("scope"), { nonce: null, omitRefreshToken: false });
        record.lastUsedAt = this.now();
        this.counter(ctx.tenant).refreshToken++;
      } else if (grantType === "client_credentials") {
        // An API registered with registerApi (the operator API) gets a v2 token with assigned roles;
        // any other resource (Defender, Graph) the app-only token of an admin-consented service principal.
        response = this.isRegisteredApi(form.get("scope"))
          ? await this.appOnly(app, tenantSegment, form.get("scope"))
          : await this.clientCredentials(form, app, tenantSegment);
        this.counter(ctx.tenant).clientCredentials++;
      } else {
        throw new TokenError(400, "unsupported_grant_type", 70003, `The app requested an unsupported grant type '${grantType}'.`);
      }
      this.counter(ctx.tenant).total++;
      log.status = 200;
      if (form.get("client_info") === "1" && typeof response.access_token === "string" && grantType !== "client_credentials") {
        const claims = decodePayload(String(response.id_token ?? response.access_token));
        if (typeof claims.oid === "string" && typeof claims.tid === "string") response.client_info = clientInfo(claims.oid, claims.tid);
      }
      sendJson(res, 200, response, {
        ...cors,
        "Cache-Control": "no-store, no-cache",
        Pragma: "no-cache",
        "x-ms-request-id": randomUUID(),
        "x-ms-ests-server": "2.1.fake",
        "client-request-id": correlationId,
      });
    } catch (err) {
      const e = err instanceof TokenError ? err : new TokenError(500, "server_error", 50000, `There was an error issuing a token: ${String(err)}`);
      const c = this.counter(ctx.tenant);
      c.total++;
      c.errors++;
      log.status = e.status;
      log.error = `${e.error} AADSTS${e.aadsts}`;
      sendJson(res, e.status, { ...errorBody(e.error, e.aadsts, e.message, correlationId), ...e.extra }, {
        ...cors,
        "Cache-Control": "no-store, no-cache",
        Pragma: "no-cache",
        "client-request-id": correlationId,
      });
    }
  }

  /** Origins of single-page apps' redirect URIs: the token endpoint answers CORS for them. */
  private corsHeaders(origin: string | undefined): Record<string, string> {
    if (!origin) return {};
    const allowed = [...this.apps.values()].some((app) => app.spa && app.redirectUris.some((uri) => originOf(uri) === origin));
    return allowed ? { "Access-Control-Allow-Origin": origin, Vary: "Origin" } : {};
  }

  private preflight(req: IncomingMessage, res: ServerResponse, log: EntraRequest): void {
    const cors = this.corsHeaders(headerValue(req, "origin"));
    const requested = headerValue(req, "access-control-request-headers");
    log.status = 204;
    res.writeHead(204, {
      ...cors,
      ...(cors["Access-Control-Allow-Origin"]
        ? {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            ...(requested ? { "Access-Control-Allow-Headers": requested } : {}),
            "Access-Control-Max-Age": "86400",
          }
        : {}),
      "Content-Length": 0,
    });
    res.end();
  }

  /** Sign-out: back to the post_logout_redirect_uri when it is a registered redirect URI's origin, else a page. */
  private logout(q: URLSearchParams, res: ServerResponse, log: EntraRequest): void {
    const target = q.get("post_logout_redirect_uri");
    const known = target && [...this.apps.values()].some((app) => app.redirectUris.some((uri) => originOf(uri) === originOf(target)));
    if (target && known) {
      log.status = 302;
      redirect(res, target);
      return;
    }
    log.status = 200;
    sendHtml(res, 200, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed out</title></head><body><p>You signed out.</p></body></html>");
  }

  /** Whether a client-credentials scope (`<resource>/.default`) names an API registered with registerApi. */
  private isRegisteredApi(scope: string | null): boolean {
    const first = (scope ?? "").split(/\s+/).find(Boolean) ?? "";
    return first.endsWith("/.default") && this.apis.has(normResource(first.slice(0, -"/.default".length)));
  }

  /** client_credentials: an app-only token for a registered API, with the roles assigned to the application. */
  private async appOnly(app: App, tenantSegment: string, scope: string | null): Promise<Record<string, unknown>> {
    if (!scope) throw new TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'.");
    const scopes = scope.split(/\s+/).filter(Boolean);
    if (scopes.length !== 1 || !scopes[0]!.endsWith("/.default")) {
      throw new TokenError(400, "invalid_scope", 1002012, `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
    }
    const resource = normResource(scopes[0]!.slice(0, -"/.default".length));
    const api = this.apis.get(resource);
    if (!api || ALIASES.has(tenantSegment) || api.tenantId.toLowerCase() !== tenantSegment) {
      throw new TokenError(400, "invalid_resource", 500011, resourceNotFound(resource, tenantSegment));
    }
    const nowSec = Math.floor(this.now() / 1000);
    const roles = [...(api.assignments.get(app.clientId.toLowerCase()) ?? [])];
    const claims: Record<string, unknown> = {
      aud: api.clientId,
      iss: `${this.url}/${tenantSegment}/v2.0`,
      iat: nowSec,
      nbf: nowSec,
      exp: nowSec + this.accessTokenLifetimeSec,
      azp: app.clientId,
      azpacr: "1",
      idtyp: "app",
      oid: app.servicePrincipalId,
      sub: app.servicePrincipalId,
      tid: tenantSegment,
      uti: randomBytes(16).toString("base64url"),
      ver: "2.0",
    };
    return this.appTokenResponse(claims, roles);
  }

  /** Signs an app-only token with its roles (when any) and answers it as the token endpoint does. */
  private async appTokenResponse(claims: Record<string, unknown>, roles: string[], onIssued?: (token: string) => void): Promise<Record<string, unknown>> {
    if (roles.length > 0) claims.roles = roles;
    const accessToken = await this.sign(claims);
    this.note(accessToken);
    onIssued?.(accessToken);
    return { token_type: "Bearer", expires_in: this.accessTokenLifetimeSec, ext_expires_in: this.accessTokenLifetimeSec, access_token: accessToken };
  }

  private async authenticateClient(req: IncomingMessage, form: URLSearchParams, tenantSegment: string, log: EntraRequest): Promise<App> {
    const assertion = form.get("client_assertion");
    const assertionType = form.get("client_assertion_type");
    if (assertion !== null || assertionType !== null) return this.authenticateAssertion(form, tenantSegment, log);
    log.clientAuth = "secret";
    let basicId: string | undefined;
    let basicSecret: string | undefined;
    const auth = headerValue(req, "authorization");
    if (auth && /^basic\s+/i.test(auth)) {
      const decoded = Buffer.from(auth.replace(/^basic\s+/i, ""), "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon < 0) throw new TokenError(401, "invalid_client", 7000216, "The Authorization header is not a valid client_secret_basic header.");
      basicId = formDecode(decoded.slice(0, colon));
      basicSecret = formDecode(decoded.slice(colon + 1));
      this.note(basicSecret);
    }
    const postId = form.get("client_id") ?? undefined;
    const postSecret = form.get("client_secret") ?? undefined;
    if (basicId !== undefined && postId !== undefined && basicId !== postId) {
      throw new TokenError(401, "invalid_client", 700038, "The client_id in the Authorization header does not match the client_id in the request body.");
    }
    if (basicSecret !== undefined && postSecret !== undefined && basicSecret !== postSecret) {
      throw new TokenError(401, "invalid_client", 7000215, invalidSecret(basicId ?? postId ?? ""));
    }
    const clientId = basicId ?? postId;
    const secret = basicSecret ?? postSecret;
    if (!clientId) throw new TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.");
    const app = this.apps.get(clientId.toLowerCase());
    if (!app) throw new TokenError(400, "unauthorized_client", 700016, appNotFound(clientId, tenantSegment));
    if (app.spa) {
      if (secret !== undefined) {
        throw new TokenError(400, "invalid_request", 700025, "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.");
      }
      if (!headerValue(req, "origin")) {
        throw new TokenError(
          400,
          "invalid_request",
          9002327,
          "Tokens issued for the 'Single-Page Application' client-type may only be redeemed via cross-origin requests.",
        );
      }
      if (form.get("grant_type") === "client_credentials") {
        throw new TokenError(400, "unauthorized_client", 700016, "A public client cannot use the client credentials grant.");
      }
      return app;
    }
    if (!secret) {
      throw new TokenError(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
    }
    if (secret !== app.clientSecret) throw new TokenError(401, "invalid_client", 7000215, invalidSecret(app.clientId));
    if (app.secretExpired) {
      throw new TokenError(
        401,
        "invalid_client",
        7000222,
        `The provided client secret keys for app '${app.clientId}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.`,
      );
    }
    return app;
  }

  /** A client_assertion (certificate or federated credential) in place of a secret. */
  private async authenticateAssertion(form: URLSearchParams, tenantSegment: string, log: EntraRequest): Promise<App> {
    const assertion = form.get("client_assertion") ?? "";
    if (assertion.length >= MIN_SECRET_LENGTH) this.assertions.push(assertion);
    if (form.get("client_assertion_type") !== JWT_BEARER_TYPE) {
      throw new TokenError(400, "invalid_request", 50027, "Invalid client_assertion_type: it must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.");
    }
    if (form.has("client_secret")) throw new TokenError(400, "invalid_request", 50027, "Send either client_secret or client_assertion, not both.");
    const clientId = form.get("client_id");
    if (!clientId) throw new TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.");
    const app = this.apps.get(clientId.toLowerCase());
    if (!app) throw new TokenError(400, "unauthorized_client", 700016, appNotFound(clientId, tenantSegment));
    let header: ReturnType<typeof decodeProtectedHeader>;
    let claims: ReturnType<typeof decodeJwt>;
    try {
      header = decodeProtectedHeader(assertion);
      claims = decodeJwt(assertion);
    } catch {
      throw new TokenError(400, "invalid_request", 50027, "JWT token is invalid or malformed.");
    }
    const creds = this.appCredentials(app.clientId);
    const verify = async (key: KeyObject | webcrypto.CryptoKey, algorithms: string[]) => {
      try {
        return (await jwtVerify(assertion, key, { algorithms, currentDate: new Date(this.now()), clockTolerance: 0 })).payload;
      } catch (err) {
        if (err instanceof joseErrors.JWTExpired) {
          throw new TokenError(
            401,
            "invalid_client",
            700024,
            `Client assertion is not within its valid time range. Current time: ${new Date(this.now()).toISOString()}, assertion valid from ${isoTime(Number(claims.nbf ?? claims.iat ?? 0) * 1000)}, expiry time of assertion ${isoTime(Number(claims.exp ?? 0) * 1000)}.`,
          );
        }
        throw new TokenError(401, "invalid_client", 700027, "Client assertion failed signature validation.");
      }
    };
    const thumbprint = (header as Record<string, unknown>)["x5t#S256"] ?? header.x5t;
    log.clientAuth = typeof thumbprint === "string" ? "certificate" : "federated";
    if (typeof thumbprint === "string") {
      const key = creds.certificates.get(thumbprint);
      if (!key) {
        throw new TokenError(401, "invalid_client", 700027, `Client assertion failed signature validation. The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '${thumbprint}']`);
      }
      const payload = await verify(key, ["PS256", "RS256"]);
      if (payload.iss !== app.clientId || payload.sub !== app.clientId) {
        throw new TokenError(401, "invalid_client", 700021, "Client assertion application identifier doesn't match 'client_id' parameter.");
      }
      const audience = `${this.url}/${tenantSegment}/oauth2/v2.0/token`;
      const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
      if (!aud.includes(audience)) {
        throw new TokenError(401, "invalid_client", 50013, `Assertion audience claim does not match the required value '${audience}'.`);
      }
      if (typeof payload.jti !== "string" || typeof payload.exp !== "number") {
        throw new TokenError(400, "invalid_request", 50027, "The client assertion needs jti and exp.");
      }
      return app;
    }
    const issuer = typeof claims.iss === "string" ? claims.iss : "";
    const key = this.trustedIssuers.get(issuer);
    const byIssuer = creds.federated.filter((f) => f.issuer === issuer);
    if (!key || byIssuer.length === 0) {
      throw new TokenError(401, "invalid_client", 700211, `No matching federated identity record found for presented assertion issuer '${issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.`);
    }
    const payload = await verify(key, ["RS256"]);
    const aud = Array.isArray(payload.aud) ? payload.aud : [String(payload.aud ?? "")];
    const byAudience = byIssuer.filter((f) => f.audiences.some((a) => aud.includes(a)));
    if (byAudience.length === 0) {
      throw new TokenError(401, "invalid_client", 700212, `No matching federated identity record found for presented assertion audience '${aud.join(",")}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.`);
    }
    if (!byAudience.some((f) => f.subject === payload.sub)) {
      throw new TokenError(401, "invalid_client", 700213, `No matching federated identity record found for presented assertion subject '${String(payload.sub)}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.`);
    }
    if (creds.inactiveFor > 0) {
      creds.inactiveFor--;
      throw new TokenError(401, "invalid_client", 70021, `No matching federated identity record found for presented assertion. Assertion Issuer: '${issuer}'. Assertion Subject: '${String(payload.sub)}'. Assertion Audience: '${aud.join(",")}'.`);
    }
    return app;
  }

  /** grant_type=client_credentials: an app-only token with the application permissions admin consent granted. */
  private async clientCredentials(form: URLSearchParams, app: App, tenantSegment: string): Promise<Record<string, unknown>> {
    if (ALIASES.has(tenantSegment)) {
      throw new TokenError(400, "invalid_request", 9001023, "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.");
    }
    const scope = form.get("scope") ?? "";
    const parsed = parseScopes(scope);
    const resources = "invalid" in parsed ? [] : [...parsed.resources.entries()];
    if (resources.length !== 1 || resources[0]![1].join(" ") !== ".default" || ("oidc" in parsed && parsed.oidc.size > 0)) {
      throw new TokenError(400, "invalid_scope", 1002012, `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`);
    }
    const resource = resources[0]![0];
    const tenant = this.tenants.get(tenantSegment)!;
    if (tenant.missingResources.has(resource)) throw new TokenError(400, "invalid_resource", 500011, resourceNotFound(resource, tenantSegment));
    const sp = this.servicePrincipals.get(spKey(tenantSegment, app.clientId));
    const missingSp = () =>
      new TokenError(400, "invalid_client", 7000229, `The client application ${app.clientId} is missing service principal in the tenant ${tenantSegment}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119`);
    if (!sp) throw missingSp();
    const next = sp.pending.shift();
    if (next === 65001) {
      throw new TokenError(400, "invalid_grant", 65001, `The user or administrator has not consented to use the application with ID '${app.clientId}' named '${app.name}'. Send an interactive authorization request for this user and resource.`);
    }
    if (next === 7000229) throw missingSp();
    const roles = next === "no-roles" ? [] : (sp.roles.get(resource) ?? []);
    const nowSec = Math.floor(this.now() / 1000);
    const claims: Record<string, unknown> = {
      aud: resource,
      iss: `https://sts.windows.net/${tenantSegment}/`,
      iat: nowSec,
      nbf: nowSec,
      exp: nowSec + this.accessTokenLifetimeSec,
      appid: app.clientId,
      appidacr: form.has("client_assertion") ? "2" : "1",
      idp: `https://sts.windows.net/${tenantSegment}/`,
      idtyp: "app",
      oid: sp.objectId,
      sub: sp.objectId,
      tid: tenantSegment,
      uti: randomBytes(16).toString("base64url"),
      ver: "1.0",
    };
    return this.appTokenResponse(claims, roles, (token) => {
      this.appTokens.set(tenantSegment, [...(this.appTokens.get(tenantSegment) ?? []), token]);
    });
  }

  private redeemableCode(form: URLSearchParams, app: App, tenantSegment: string, ctx: { tenant: string }): CodeRecord {
    const code = form.get("code");
    if (!code) throw new TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'code'.");
    const record = this.codes.get(code);
    if (!record) throw new TokenError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.");
    ctx.tenant = record.grant.tenantId;
    if (record.redeemed) {
      throw new TokenError(
        400,
        "invalid_grant",
        54005,
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
      );
    }
    if (this.now() - record.issuedAt > CODE_LIFETIME_MS) {
      throw new TokenError(
        400,
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
      );
    }
    if (record.request.clientId !== app.clientId) {
      throw new TokenError(400, "invalid_grant", 70000, "Provided grant is invalid or malformed. The authorization code was issued to a different client.");
    }
    if (tenantSegment !== record.request.pathTenant && tenantSegment !== record.grant.tenantId && !ALIASES.has(tenantSegment)) {
      throw new TokenError(400, "invalid_grant", 700005, "Provided Authorization Code is intended to use against other tenant, thus rejected.");
    }
    const redirectUri = form.get("redirect_uri");
    if (redirectUri !== record.request.redirectUri) {
      throw new TokenError(
        400,
        "invalid_grant",
        500112,
        `The reply address '${redirectUri ?? ""}' does not match the reply address '${record.request.redirectUri}' provided when requesting Authorization code.`,
      );
    }
    const verifier = form.get("code_verifier");
    if (!verifier || createHash("sha256").update(verifier).digest("base64url") !== record.request.codeChallenge) {
      throw new TokenError(400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.");
    }
    this.checkTenantResource(record.grant, form.get("scope") ?? record.grant.scopes.join(" "));
    return record;
  }

  private redeemableRefreshToken(form: URLSearchParams, app: App, tenantSegment: string, ctx: { tenant: string }): RefreshRecord {
    const token = form.get("refresh_token");
    if (!token) throw new TokenError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'refresh_token'.");
    const record = this.refreshTokens.get(token);
    if (!record) throw new TokenError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.");
    ctx.tenant = record.grant.tenantId;
    if (record.grant.clientId !== app.clientId) {
      throw new TokenError(400, "invalid_grant", 70000, "Provided grant is invalid or malformed. The refresh token was issued to a different client.");
    }
    if (tenantSegment !== record.grant.tenantId && !ALIASES.has(tenantSegment)) {
      throw new TokenError(400, "invalid_grant", 700005, "Provided refresh token is intended to use against other tenant, thus rejected.");
    }
    const tenant = this.tenants.get(record.grant.tenantId);
    if (tenant?.revoked !== undefined) throw revocation(tenant.revoked, record, app);
    if (this.now() - record.lastUsedAt > REFRESH_INACTIVITY_MS) {
      throw new TokenError(
        400,
        "invalid_grant",
        700082,
        `The refresh token has expired due to inactivity. The token was issued on ${isoTime(record.issuedAt)} and was inactive for 90.00:00:00.`,
      );
    }
    this.checkTenantResource(record.grant, form.get("scope") ?? record.grant.scopes.join(" "));
    return record;
  }

  private checkTenantResource(grant: Grant, scope: string): void {
    const tenant = this.tenants.get(grant.tenantId);
    const parsed = parseScopes(scope);
    if ("invalid" in parsed) {
      throw new TokenError(400, "invalid_scope", 70011, `The provided value for the input parameter 'scope' is not valid. The scope '${parsed.invalid}' is not valid.`);
    }
    for (const resource of parsed.resources.keys()) {
      if (tenant?.missingResources.has(resource)) throw new TokenError(400, "invalid_resource", 500011, resourceNotFound(resource, grant.tenantId));
    }
  }

  private async issue(
    grant: Grant,
    requestedScope: string | null,
    opts: { nonce: string | null; omitRefreshToken: boolean; badIdTokenSignature?: boolean },
  ): Promise<Record<string, unknown>> {
    const app = this.apps.get(grant.clientId.toLowerCase())!;
    const scopeText = requestedScope ?? grant.scopes.join(" ");
    const parsed = parseScopes(scopeText);
    if ("invalid" in parsed) {
      throw new TokenError(400, "invalid_scope", 70011, `The provided value for the input parameter 'scope' is not valid. The scope '${parsed.invalid}' is not valid.`);
    }
    let resources = [...parsed.resources.entries()];
    if (resources.length > 1 && requestedScope !== null) {
      throw new TokenError(
        400,
        "invalid_scope",
        28000,
        `Provided value for the input parameter scope is not valid because it contains more than one resource. Scope ${scopeText} is not valid.`,
      );
    }
    if (resources.length === 0) resources = [[normResource(GRAPH_RESOURCE), ["User.Read"]]];
    const [resource, requestedPerms] = resources[0]!;
    if (!app.permissions.has(resource)) throw new TokenError(400, "invalid_resource", 500011, resourceNotFound(resource, grant.tenantId));
    const isGraph = resource === normResource(GRAPH_RESOURCE);
    const granted = (!isGraph && grant.permissions) || app.permissions.get(resource) || [];
    const perms = requestedPerms.includes(".default")
      ? [...new Set([...granted, ...requestedPerms.filter((p) => p !== ".default")])]
      : requestedPerms;
    const consentedOidc = new Set(grant.scopes.map((x) => x.toLowerCase()).filter((x) => OIDC_SCOPES.has(x)));
    const oidcOut = ["openid", "profile", "email", "offline_access"].filter((x) => consentedOidc.has(x));
    const scopeOut = [...perms.map((p) => (isGraph ? p : `${resource}/${p}`)), ...oidcOut];

    const nowSec = Math.floor(this.now() / 1000);
    const exp = nowSec + this.accessTokenLifetimeSec;
    const tid = grant.tenantId;
    const user = grant.user;
    const sub = createHash("sha256").update(`${user.oid}|${grant.clientId}`).digest("base64url");
    const api = this.apis.get(resource);
    if (api && api.tenantId.toLowerCase() !== tid) throw new TokenError(400, "invalid_resource", 500011, resourceNotFound(resource, tid));
    const accessToken = api
      ? await this.sign({
          aud: api.clientId,
          iss: `${this.url}/${tid}/v2.0`,
          iat: nowSec,
          nbf: nowSec,
          exp,
          azp: grant.clientId,
          azpacr: app.spa ? "0" : "1",
          name: user.name ?? user.upn,
          oid: user.oid,
          preferred_username: user.upn,
          ...(api.assignments.get(user.oid.toLowerCase())?.size ? { roles: [...api.assignments.get(user.oid.toLowerCase())!] } : {}),
          scp: perms.join(" "),
          sub,
          tid,
          uti: randomBytes(16).toString("base64url"),
          ver: "2.0",
        })
      : await this.sign({
          aud: resource,
          iss: `https://sts.windows.net/${tid}/`,
          iat: nowSec,
          nbf: nowSec,
          exp,
          acr: "1",
          amr: ["pwd", "mfa"],
          appid: grant.clientId,
          appidacr: "1",
          name: user.name ?? user.upn,
          oid: user.oid,
          scp: perms.join(" "),
          sub,
          tid,
          unique_name: user.upn,
          upn: user.upn,
          uti: randomBytes(16).toString("base64url"),
          ver: "1.0",
        });
    this.note(accessToken);
    const response: Record<string, unknown> = {
      token_type: "Bearer",
      scope: scopeOut.join(" "),
      expires_in: this.accessTokenLifetimeSec,
      ext_expires_in: this.accessTokenLifetimeSec,
      access_token: accessToken,
    };
    if (consentedOidc.has("offline_access") && !opts.omitRefreshToken) {
      const refreshToken = `1.A${randomBytes(192).toString("base64url")}`;
      this.note(refreshToken);
      this.refreshTokens.set(refreshToken, { grant, issuedAt: this.now(), lastUsedAt: this.now() });
      const list = this.issuedRts.get(tid) ?? [];
      list.push(refreshToken);
      this.issuedRts.set(tid, list);
      response.refresh_token = refreshToken;
    }
    if (consentedOidc.has("openid")) {
      const claims: Record<string, unknown> = {
        aud: grant.clientId,
        iss: `${this.url}/${tid}/v2.0`,
        iat: nowSec,
        nbf: nowSec,
        exp,
        oid: user.oid,
        rh: `0.A${randomBytes(24).toString("base64url")}.`,
        sub,
        tid,
        uti: randomBytes(16).toString("base64url"),
        ver: "2.0",
      };
      if (opts.nonce) claims.nonce = opts.nonce;
      if (consentedOidc.has("profile")) {
        claims.name = user.name ?? user.upn;
        claims.preferred_username = user.upn;
      }
      if (consentedOidc.has("email") && user.email) claims.email = user.email;
      const idToken = await this.sign(claims, opts.badIdTokenSignature ? await this.foreignSigningKey() : undefined);
      this.note(idToken);
      response.id_token = idToken;
    }
    return response;
  }

  private async sign(claims: Record<string, unknown>, key?: webcrypto.CryptoKey): Promise<string> {
    if (!this.keys) throw new Error("FakeEntra is not started");
    return new SignJWT(claims).setProtectedHeader({ typ: "JWT", alg: "RS256", kid: this.keys.kid }).sign(key ?? this.keys.privateKey);
  }

  private async foreignSigningKey(): Promise<webcrypto.CryptoKey> {
    this.foreignKey ??= (await generateKeyPair("RS256")).privateKey;
    return this.foreignKey;
  }

  private tenant(tenantId: string): Tenant {
    const t = this.tenants.get(tenantId.toLowerCase());
    if (!t) throw new Error(`unknown tenant ${tenantId}; call addTenant first`);
    return t;
  }

  private counter(tenantId: string): TokenCounters {
    let c = this.counters.get(tenantId);
    if (!c) {
      c = { authorizationCode: 0, refreshToken: 0, clientCredentials: 0, errors: 0, total: 0 };
      this.counters.set(tenantId, c);
    }
    return c;
  }

  private note(value: string | null | undefined): void {
    if (value && value.length >= MIN_SECRET_LENGTH) this.seen.add(value);
  }
}

// -----------------------------------------------------------------------------------------
// helpers

function normResource(resource: string): string {
  return resource.toLowerCase();
}

const JWT_BEARER_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

function spKey(tenantId: string, clientId: string): string {
  return `${tenantId.toLowerCase()}|${clientId.toLowerCase()}`;
}

/** Defender refuses an app-only token without one of these application permissions (403). */
const DEFENDER_APP_ROLES = ["Alert.Read.All", "Alert.ReadWrite.All"];

/**
 * The Defender fake's `authenticate`: the tenant of a valid access token of this Entra, and
 * a 403 for an app-only token that carries no alert permission (consent still propagating,
 * or the permission was withdrawn).
 */
export function defenderAuthenticator(entra: FakeEntra): (bearer: string) => Promise<{ tenantId: string; forbidden?: string } | null> {
  return async (bearer) => {
    const claims = await entra.verifyAccessToken(bearer, DEFENDER_RESOURCE);
    if (!claims) return null;
    if (claims.idtyp === "app" && !claims.roles.some((r) => DEFENDER_APP_ROLES.includes(r))) {
      return {
        tenantId: claims.tenantId,
        forbidden: "The application does not have any of the required application permissions (Alert.ReadWrite.All, Alert.Read.All) to access the resource.",
      };
    }
    return { tenantId: claims.tenantId };
  };
}

function parseScopes(scope: string): { oidc: Set<string>; resources: Map<string, string[]> } | { invalid: string } {
  const oidc = new Set<string>();
  const resources = new Map<string, string[]>();
  for (const s of scope.split(/\s+/).filter(Boolean)) {
    if (OIDC_SCOPES.has(s.toLowerCase())) {
      oidc.add(s.toLowerCase());
      continue;
    }
    let resource: string;
    let perm: string;
    if (s.includes("://")) {
      const slash = s.lastIndexOf("/");
      resource = s.slice(0, slash);
      perm = s.slice(slash + 1);
      if (!perm || resource.endsWith(":/") || resource.endsWith(":")) return { invalid: s };
    } else if (!s.includes("/")) {
      resource = GRAPH_RESOURCE;
      perm = s;
    } else {
      return { invalid: s };
    }
    const key = normResource(resource);
    resources.set(key, [...(resources.get(key) ?? []), perm]);
  }
  return { oidc, resources };
}

function isoTime(ms: number): string {
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function describe(aadsts: number, message: string, correlationId: string, traceId: string = randomUUID()): string {
  return `AADSTS${aadsts}: ${message}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${isoTime(Date.now())}`;
}

function errorBody(error: string, aadsts: number, message: string, correlationId: string): Record<string, unknown> {
  const traceId = randomUUID();
  return {
    error,
    error_description: describe(aadsts, message, correlationId, traceId),
    error_codes: [aadsts],
    timestamp: isoTime(Date.now()),
    trace_id: traceId,
    correlation_id: correlationId,
    error_uri: `https://login.microsoftonline.com/error?code=${aadsts}`,
  };
}

function redirectError(
  redirectUri: string,
  error: string,
  aadsts: number,
  message: string,
  state: string | null,
  mode: "query" | "fragment" = "query",
): string {
  const params = new URLSearchParams();
  params.set("error", error);
  params.set("error_description", describe(aadsts, message, randomUUID()));
  params.set("error_uri", `https://login.microsoftonline.com/error?code=${aadsts}`);
  if (state !== null) params.set("state", state);
  return withResponse(redirectUri, params, mode);
}

/** The redirect URI with the response in its query (server apps) or its fragment (single-page apps). */
function withResponse(redirectUri: string, params: URLSearchParams, mode: "query" | "fragment"): string {
  const url = new URL(redirectUri);
  if (mode === "fragment") {
    url.hash = params.toString();
    return url.href;
  }
  for (const [key, value] of params) url.searchParams.set(key, value);
  return url.href;
}

function decodePayload(jwt: string): Record<string, unknown> {
  try {
    return JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString("utf8")) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/** MSAL's account key: base64url JSON of the user's object ID and home tenant. */
function clientInfo(oid: string, tid: string): string {
  return Buffer.from(JSON.stringify({ uid: oid, utid: tid }), "utf8").toString("base64url");
}

function originOf(uri: string): string | undefined {
  return URL.canParse(uri) ? new URL(uri).origin : undefined;
}

function tenantNotFound(tenant: string): string {
  return `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.`;
}

function appNotFound(clientId: string, tenant: string): string {
  return `Application with identifier '${clientId}' was not found in the directory '${tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`;
}

function resourceNotFound(resource: string, tenant: string): string {
  return `The resource principal named ${resource} was not found in the tenant named ${tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.`;
}

function invalidSecret(clientId: string): string {
  return `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`;
}

function revocation(aadsts: number, record: RefreshRecord, app: App): TokenError {
  const issued = isoTime(record.issuedAt);
  switch (aadsts) {
    case 70043:
      return new TokenError(
        400,
        "invalid_grant",
        70043,
        `The refresh token has expired or is invalid due to sign-in frequency checks by conditional access. The token was issued on ${issued} and the maximum allowed lifetime for this request is 3600.`,
      );
    case 700082:
      return new TokenError(
        400,
        "invalid_grant",
        700082,
        `The refresh token has expired due to inactivity. The token was issued on ${issued} and was inactive for 90.00:00:00.`,
      );
    case 50173:
      return new TokenError(
        400,
        "invalid_grant",
        50173,
        `The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '${issued}' and the TokensValidFrom date (before which tokens are not valid) for this user is '${isoTime(Date.now())}'.`,
      );
    case 70008:
      return new TokenError(
        400,
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
      );
    case 65001:
      return new TokenError(
        400,
        "invalid_grant",
        65001,
        `The user or administrator has not consented to use the application with ID '${app.clientId}' named '${app.name}'. Send an interactive authorization request for this user and resource.`,
        { suberror: "consent_required" },
      );
    case 50076:
      return new TokenError(
        400,
        "interaction_required",
        50076,
        `Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '${DEFENDER_RESOURCE}'.`,
        { suberror: "basic_action", claims: '{"access_token":{"capolids":{"essential":true,"values":["00000000-0000-0000-0000-000000000001"]}}}' },
      );
    case 53003:
      return new TokenError(
        400,
        "interaction_required",
        53003,
        "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
        { suberror: "message_only" },
      );
    case 700016:
      return new TokenError(400, "unauthorized_client", 700016, appNotFound(app.clientId, record.grant.tenantId));
    case 50057:
      return new TokenError(400, "invalid_grant", 50057, "The user account is disabled.");
    default:
      return new TokenError(400, "invalid_grant", aadsts, "The grant was revoked (fake Entra revokeTenant).");
  }
}

function errorPage(aadsts: number, message: string): string {
  const e = escapeHtml;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to your account - Fake Microsoft Entra ID</title></head>
<body style="font-family:system-ui,sans-serif;max-width:560px;margin:48px auto">
<h1>Sign in</h1>
<p>Sorry, but we're having trouble signing you in.</p>
<p id="error"><strong>AADSTS${aadsts}</strong>: ${e(message)}</p>
<p><small>Request Id: ${e(randomUUID())}<br>Correlation Id: ${e(randomUUID())}<br>Timestamp: ${e(isoTime(Date.now()))}</small></p>
</body></html>
`;
}

function sendHtml(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Length": Buffer.byteLength(html),
    "Cache-Control": "no-store, no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
  });
  res.end(html);
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(302, { Location: location, "Cache-Control": "no-store, no-cache", "Content-Length": 0 });
  res.end();
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** client_secret_basic values are form-urlencoded before base64 (RFC 6749 2.3.1). */
function formDecode(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, " "));
  } catch {
    return value;
  }
}
