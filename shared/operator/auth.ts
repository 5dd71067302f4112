import * as jose from "jose";
import { fetch as undiciFetch } from "undici";
import { OPERATOR_SCOPE, type OperatorConfig } from "../platform/config.js";
import { ApiError } from "../platform/http.js";

/**
 * Operator identity: every operator route accepts only an Entra ID access token of the
 * MSSP's own tenant for the operator API registration, and authorizes by app role.
 *
 * The token (RS256, access tokens v2) is verified with jose against the tenant's JWKS:
 * `iss` = `{authority}/{OPERATOR_TENANT_ID}/v2.0`, `tid` = OPERATOR_TENANT_ID, `aud` =
 * OPERATOR_API_CLIENT_ID, `exp`/`nbf` with at most 5 minutes of clock skew. A user's token
 * carries the delegated scope `Operator.Access` in `scp` and its app roles in `roles`; a
 * service principal's (app-only) token carries no `scp` and the roles assigned to it. Both
 * are authorized by `roles` alone: Reader < Operator < Admin, each role holding the rights of
 * the ones before it. App Service built-in authentication is not relied on.
 */

export const ROLES = ["Reader", "Operator", "Admin"] as const;
export type OperatorRole = (typeof ROLES)[number];
const RANK: Record<OperatorRole, number> = { Reader: 1, Operator: 2, Admin: 3 };

/** Accepted clock skew on exp and nbf. */
export const CLOCK_SKEW_SECONDS = 300;
/** Authorization headers longer than this are refused before any parsing. */
const MAX_AUTHORIZATION_LENGTH = 16 * 1024;

export interface OperatorIdentity {
  /** "user" (delegated token, `scp`) or "app" (a service principal's app-only token). */
  kind: "user" | "app";
  /** Object ID of the user or of the service principal. */
  oid: string;
  /** The user's sign-in name (`preferred_username`, else `upn`); users only. */
  upn?: string;
  /** The client application (`azp`, else `appid`): the console for users, the service principal's app for automation. */
  appId?: string;
  /** Display name, when the token has one. */
  name?: string;
  /** The operator roles in the token, lowest first. */
  roles: OperatorRole[];
  /** The highest of them. */
  role: OperatorRole;
}

/** Refused because of the token itself: answered 401 with `WWW-Authenticate: Bearer`. */
export class Unauthenticated extends ApiError {
  constructor(
    code: string,
    message: string,
    /** Why, as a short word for the log (never a claim value). */
    readonly reason: string,
  ) {
    super(401, code, message);
    this.name = "Unauthenticated";
  }
}

export function hasRole(identity: OperatorIdentity, needed: OperatorRole): boolean {
  return RANK[identity.role] >= RANK[needed];
}

/** Throws 403 unless the identity holds `needed` or a higher role. */
export function requireRole(identity: OperatorIdentity, needed: OperatorRole): void {
  if (!hasRole(identity, needed)) {
    throw new ApiError(403, "InsufficientRole", `This action needs the ${needed} role (or higher); the token has ${identity.role}.`);
  }
}

const jwksCache = new Map<string, ReturnType<typeof jose.createRemoteJWKSet>>();

function jwksFor(uri: string): ReturnType<typeof jose.createRemoteJWKSet> {
  let jwks = jwksCache.get(uri);
  if (!jwks) {
    // jose caches the keys and refetches (at most every 30 s) when a token names an unknown kid.
    jwks = jose.createRemoteJWKSet(new URL(uri), {
      [jose.customFetch]: undiciFetch as unknown as typeof fetch,
      timeoutDuration: 10_000,
    });
    jwksCache.set(uri, jwks);
  }
  return jwks;
}

/** Reads the bearer token of an Authorization header, or throws 401. */
export function bearerToken(header: string | null): string {
  if (!header) {
    throw new Unauthenticated(
      "Unauthenticated",
      "Sign in: send an Entra ID access token for the operator API as 'Authorization: Bearer <token>'.",
      "missing",
    );
  }
  if (header.length > MAX_AUTHORIZATION_LENGTH) throw new Unauthenticated("InvalidToken", "The Authorization header is too long.", "too-long");
  const match = /^Bearer[ ]+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)\s*$/i.exec(header);
  if (!match) throw new Unauthenticated("InvalidToken", "The Authorization header must be 'Bearer <JWT access token>'.", "malformed");
  return match[1]!;
}

/**
 * Verifies an operator access token and returns who sent it. Throws Unauthenticated (401)
 * for anything wrong with the token, ApiError 403 for a valid token without an operator
 * role, and ApiError 503 when the tenant's signing keys cannot be fetched.
 */
export async function verifyOperatorToken(config: OperatorConfig, authorization: string | null, now: Date): Promise<OperatorIdentity> {
  const token = bearerToken(authorization);
  let payload: jose.JWTPayload;
  try {
    ({ payload } = await jose.jwtVerify(token, jwksFor(config.jwksUri), {
      algorithms: ["RS256"],
      issuer: config.issuer,
      audience: config.apiClientId,
      clockTolerance: CLOCK_SKEW_SECONDS,
      currentDate: now,
      requiredClaims: ["exp", "iat", "tid", "oid"],
    }));
  } catch (err) {
    throw tokenProblem(err);
  }
  if (String(payload.tid).toLowerCase() !== config.tenantId) {
    throw new Unauthenticated("InvalidToken", "The access token is not from the MSSP's tenant.", "tenant");
  }
  if (payload.ver !== "2.0") throw new Unauthenticated("InvalidToken", "The access token must be a v2.0 token.", "version");
  const oid = typeof payload.oid === "string" ? payload.oid.toLowerCase() : "";
  if (!oid) throw new Unauthenticated("InvalidToken", "The access token has no object ID (oid).", "oid");
  const appId = firstString(payload.azp, payload.appid);
  const name = firstString(payload.name);
  const rawRoles = Array.isArray(payload.roles) ? payload.roles.filter((r): r is string => typeof r === "string") : [];
  const roles = ROLES.filter((role) => rawRoles.includes(role));
  let identity: Omit<OperatorIdentity, "roles" | "role">;
  if (payload.scp !== undefined) {
    const scopes = typeof payload.scp === "string" ? payload.scp.split(" ") : [];
    if (!scopes.includes(OPERATOR_SCOPE)) {
      throw new Unauthenticated("InvalidToken", `A user's access token must carry the scope ${OPERATOR_SCOPE}.`, "scope");
    }
    const upn = firstString(payload.preferred_username, payload.upn);
    identity = { kind: "user", oid, ...(upn ? { upn } : {}), ...(appId ? { appId } : {}), ...(name ? { name } : {}) };
  } else {
    // App-only: no scp; what it may do comes from the app roles assigned to its service principal.
    if (payload.idtyp !== undefined && payload.idtyp !== "app") {
      throw new Unauthenticated("InvalidToken", `A user's access token must carry the scope ${OPERATOR_SCOPE}.`, "scope");
    }
    if (rawRoles.length === 0) {
      throw new Unauthenticated("InvalidToken", "An app-only access token must carry the app roles of its service principal.", "roles");
    }
    identity = { kind: "app", oid, ...(appId ? { appId } : {}), ...(name ? { name } : {}) };
  }
  if (roles.length === 0) {
    throw new ApiError(403, "NoOperatorRole", "The account has no operator role: an Admin must assign it Reader, Operator or Admin.");
  }
  return { ...identity, roles, role: roles[roles.length - 1]! };
}

function firstString(...values: unknown[]): string | undefined {
  for (const v of values) if (typeof v === "string" && v !== "") return v;
  return undefined;
}

/** Maps a jose failure to a 401 that names the kind of problem, or to 503 when the keys cannot be fetched. */
function tokenProblem(err: unknown): ApiError {
  if (err instanceof jose.errors.JWTExpired) return new Unauthenticated("TokenExpired", "The access token has expired; sign in again.", "expired");
  if (err instanceof jose.errors.JWTClaimValidationFailed) {
    const claim = err.claim;
    if (claim === "aud") return new Unauthenticated("InvalidToken", "The access token is not for the operator API (audience).", "audience");
    if (claim === "iss") return new Unauthenticated("InvalidToken", "The access token is not from the MSSP's tenant (issuer).", "issuer");
    if (claim === "nbf") return new Unauthenticated("InvalidToken", "The access token is not valid yet.", "not-yet-valid");
    return new Unauthenticated("InvalidToken", `The access token's ${claim} claim is missing or wrong.`, "claim");
  }
  if (err instanceof jose.errors.JWKSNoMatchingKey || err instanceof jose.errors.JWSSignatureVerificationFailed) {
    return new Unauthenticated("InvalidToken", "The access token's signature does not verify against the tenant's keys.", "signature");
  }
  if (err instanceof jose.errors.JOSEAlgNotAllowed) return new Unauthenticated("InvalidToken", "The access token must be signed with RS256.", "algorithm");
  // Network failures, timeouts, a JWKS answer that is not 200 or not a key set (ERR_JOSE_GENERIC).
  const unreachable =
    !(err instanceof jose.errors.JOSEError) ||
    err instanceof jose.errors.JWKSTimeout ||
    err instanceof jose.errors.JWKSInvalid ||
    err.code === "ERR_JOSE_GENERIC";
  if (unreachable) {
    return new ApiError(503, "AuthUnavailable", "Sign-in cannot be checked right now (the tenant's signing keys could not be read); try again shortly.");
  }
  return new Unauthenticated("InvalidToken", "The access token is not a valid JWT.", "malformed");
}
