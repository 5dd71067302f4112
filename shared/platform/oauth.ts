import * as oauth from "oauth4webapi";
import { fetch as undiciFetch } from "undici";
import { CredentialUnavailableError, type ClientCredential } from "./client-credential.js";
import type { CloudEndpoints } from "./config.js";

/** OAuth mechanics (discovery, token requests, error classification) over undici. */

export const fetchOptions = { [oauth.customFetch]: undiciFetch as unknown as typeof fetch };

const discoveryCache = new Map<string, { as: oauth.AuthorizationServer; until: number }>();
const DISCOVERY_TTL_MS = 3600_000;

/** The tenant's own OpenID configuration; its issuer is `{authority}/{tenant}/v2.0`. */
export async function discover(endpoints: CloudEndpoints, tenantId: string): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(`${endpoints.authorityHost}/${tenantId}/v2.0`);
  const key = issuer.href;
  const cached = discoveryCache.get(key);
  if (cached && cached.until > Date.now()) return cached.as;
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, fetchOptions));
  discoveryCache.set(key, { as, until: Date.now() + DISCOVERY_TTL_MS });
  return as;
}

/** The app as an OAuth client, authenticating with its configured credential (secret, managed identity or certificate). */
export function oauthClient(svc: { config: { clientId: string }; clientCredential: ClientCredential }): {
  client: oauth.Client;
  auth: oauth.ClientAuth;
} {
  return { client: { client_id: svc.config.clientId }, auth: svc.clientCredential.clientAuth() };
}

/** Scopes requested at consent: the chosen source's API (`{resource}/.default`) plus a refresh token and an id_token. */
export function consentScope(sourceScope: string): string {
  return `${sourceScope} offline_access openid profile`;
}

export type TokenErrorKind = "reconsent" | "tenant" | "client" | "transient" | "other";

export interface TokenError {
  kind: TokenErrorKind;
  /** `AADSTS<n>` when Entra sent one, else the OAuth `error` value or HTTP status. */
  code: string;
  /** Safe to log and show: never contains a token, code or secret. */
  message: string;
}

/**
 * AADSTS codes that mean the grant itself is gone or needs the user again: only a new
 * consent fixes them, so the tenant is marked reconsent-required and not retried.
 */
const RECONSENT_CODES = new Set([
  50057, // user account disabled
  50076, // MFA required (interaction_required)
  50078, // MFA enrollment or re-auth required
  50079, // MFA registration required
  50126, // invalid credentials
  50133, // session invalid after password change
  50173, // grant revoked: password reset or sign-in session revoked
  53003, // blocked by Conditional Access
  54005, // authorization code already redeemed
  65001, // consent missing or revoked
  70000, // grant invalid
  70008, // refresh token expired or revoked for inactivity
  70043, // refresh token expired by sign-in frequency policy
  700082, // refresh token expired for inactivity
  700084, // single-page-app refresh token expired
  500341, // user account deleted
  530003, // device required by Conditional Access
]);
/**
 * Lasting refusals for this tenant: the Defender service principal is missing (500011),
 * the app is not in the tenant (700016, 7000229: its service principal is missing).
 */
const TENANT_CODES = new Set([500011, 500014, 700016, 7000229, 90002]);
/**
 * The app's own credential is wrong or expired: every tenant would fail. Secrets (7000215
 * wrong, 7000222 expired), assertions (700027 signature, 700024 expired, 700211 issuer,
 * 700212 audience, 700213 subject, 70021 no matching federated credential, 7000226 no
 * federated credential policy), and a missing or disabled app (7000112, 7000218).
 */
const CLIENT_CODES = new Set([7000215, 7000222, 7000112, 7000218, 700027, 700024, 700211, 700212, 700213, 70021, 7000226]);
/** Entra's own transient failures. */
const TRANSIENT_CODES = new Set([50001, 90033, 500133, 50196, 90051, 50058]);

export function aadstsCode(body: Record<string, unknown> | undefined): number | undefined {
  const codes = body?.error_codes;
  if (Array.isArray(codes) && typeof codes[0] === "number") return codes[0];
  const description = typeof body?.error_description === "string" ? body.error_description : "";
  const match = /AADSTS(\d+)/.exec(description);
  return match ? Number(match[1]) : undefined;
}

/** Classifies a token endpoint failure by AADSTS code first, then by `error` and status. */
export function classifyTokenError(err: unknown): TokenError {
  if (err instanceof CredentialUnavailableError) {
    return { kind: "client", code: err.code, message: `The app's client credential is unavailable (${err.reason})` };
  }
  if (err instanceof oauth.ResponseBodyError) {
    const n = aadstsCode(err.cause);
    const code = n !== undefined ? `AADSTS${n}` : err.error;
    const summary = firstSentence(err.error_description);
    if (n !== undefined && CLIENT_CODES.has(n)) return { kind: "client", code, message: `App credential rejected: ${summary}` };
    if (n !== undefined && RECONSENT_CODES.has(n)) return { kind: "reconsent", code, message: summary };
    if (n !== undefined && TENANT_CODES.has(n)) return { kind: "tenant", code, message: summary };
    if (n !== undefined && TRANSIENT_CODES.has(n)) return { kind: "transient", code, message: summary };
    if (err.error === "invalid_client" || err.error === "unauthorized_client") {
      return { kind: "client", code, message: `App credential rejected: ${summary}` };
    }
    if (err.error === "temporarily_unavailable" || err.status >= 500) return { kind: "transient", code, message: summary };
    if (err.error === "invalid_resource") return { kind: "tenant", code, message: summary };
    if (err.error === "invalid_grant" || err.error === "interaction_required" || err.error === "consent_required") {
      return { kind: "reconsent", code, message: summary };
    }
    return { kind: "other", code, message: summary };
  }
  if (err instanceof oauth.OperationProcessingError) {
    // A non-OAuth answer, e.g. an HTML 5xx page from a proxy.
    const status = (err.cause as Response | undefined)?.status;
    if (typeof status === "number" && status >= 500) {
      return { kind: "transient", code: `HTTP${status}`, message: "The token endpoint failed" };
    }
    return { kind: "other", code: "InvalidTokenResponse", message: "The token endpoint sent an unexpected response" };
  }
  return { kind: "transient", code: "NetworkError", message: "The token endpoint could not be reached" };
}

/** The human part of an Entra error description, without trace and correlation ids. */
function firstSentence(description: string | undefined): string {
  if (!description) return "No description";
  const line = description.split(/\r?\n/)[0] ?? "";
  return line.replace(/\s*Trace ID:.*$/s, "").slice(0, 300);
}
