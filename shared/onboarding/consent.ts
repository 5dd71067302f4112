import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { odata, type TableClient } from "@azure/data-tables";
import * as jose from "jose";
import * as oauth from "oauth4webapi";
import { fetch as undiciFetch } from "undici";
import { grantsRead, probeSource, sourceAccess } from "../collection/sources/index.js";
import { confirmCredential, newCredentialWaitMs, retryAsNewCredential } from "../platform/client-credential.js";
import { type CloudEndpoints, endpointsFor, type TenantMode } from "../platform/config.js";
import { recordClientCredential, reportCredentialFailure } from "../platform/health.js";
import { isGuid } from "../platform/http.js";
import { classifyTokenError, consentScope, fetchOptions, oauthClient } from "../platform/oauth.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES } from "../platform/storage.js";
import { aadstsOf, authorizeVerdict, discoverTenant, type EntraVerdict, tokenVerdict } from "./entra-errors.js";
import { completeAppConsent } from "./app-consent.js";
import { CLEARED_ERROR, getTenant, patchTenant, type TenantRow } from "./tenants.js";

/**
 * Consent: the customer's admin opens the consent link (see register.ts), consents at
 * Entra ID (authorization code flow with PKCE), and the callback stores the tenant's
 * refresh token in Key Vault. A link of an application-mode tenant sends the admin to
 * Entra's admin consent endpoint instead, and app-consent.ts verifies what comes back.
 * Nothing here logs or returns a token, code, verifier, state or secret.
 *
 * The functions return a ConsentOutcome; consent-pages.ts turns it into the page the
 * customer sees. Every failure that someone must act on is also logged with its code
 * (`consent.failed tenantId=... reason=... code=...`) and, where the tenant is known,
 * recorded in the tenant's lastError.
 */

export type ConsentOutcome =
  | { kind: "redirect"; location: string }
  | { kind: "completed"; displayName: string }
  /** Application mode: admin consent verified with a client-credentials token and a probe. */
  | { kind: "app-completed"; displayName: string }
  /** Application mode: consent recorded, still propagating; the timer verifies it. */
  | { kind: "app-pending"; displayName: string }
  /** Application mode: the app-only token cannot read alerts (after the whole verification window). */
  | { kind: "app-permission-missing"; permission: string }
  /** The callback names another organisation than the one invited. */
  | { kind: "tenant-mismatch" }
  /** The link lacks its tenant or secret, or they are malformed or too long. */
  | { kind: "link-incomplete" }
  /** Unknown tenant, offboarded tenant, wrong, used or replaced link: one answer for all. */
  | { kind: "link-invalid" }
  | { kind: "link-expired" }
  /** Entra does not know the tenant the link names. */
  | { kind: "link-wrong"; code: string }
  /** Entra refuses the tenant for a lasting reason. */
  | { kind: "tenant-refused"; code: string }
  /** The provider's app (secret, registration) is misconfigured. */
  | { kind: "provider-config"; code: string }
  | { kind: "response-incomplete" }
  | { kind: "response-unknown" }
  | { kind: "state-expired" }
  | { kind: "declined" }
  | { kind: "signin-failed"; code: string }
  | { kind: "token-refused"; code: string }
  | { kind: "wrong-tenant" }
  | { kind: "scope-not-granted"; missing: string }
  | { kind: "no-refresh-token" }
  | { kind: "defender-forbidden" }
  | { kind: "defender-unavailable" }
  | { kind: "link-changed" };

/** Length caps on the anonymous routes' inputs, checked before any storage call. */
export const LIMITS = {
  link: 128,
  state: 128,
  code: 8192,
  error: 64,
  errorDescription: 2048,
  callbackUrl: 16_384,
} as const;

const LINK_SECRET = /^[A-Za-z0-9_-]{16,128}$/;
/** `<partition id>.<random>`: the state names its own partition, see statePartition. */
const STATE_FORMAT = /^([A-Za-z0-9_-]{1,40})\.[A-Za-z0-9_-]{1,80}$/;
const STATE_PARTITION_PREFIX = "link-";

export interface ConsentStateEntity {
  partitionKey: string;
  rowKey: string;
  tenantId: string;
  linkHash: string;
  /** The mode this sign-in onboards with (absent on states of versions without modes: delegated). */
  mode?: TenantMode;
  /** The alert source this sign-in grants access to (absent on older states: defender). */
  source?: "defender" | "graph";
  /** Delegated mode only (empty for admin consent). */
  codeVerifier: string;
  nonce: string;
  createdAt: string;
  expiresAt: string;
}

export function sha256(value: string): string {
  return createHash("sha256").update(value).digest("base64url");
}

/** Compares a stored link hash in constant time; a missing one is compared with a dummy. */
const DUMMY_HASH = sha256("no link");
function sameHash(stored: string | undefined, offered: string): boolean {
  const usable = typeof stored === "string" && stored.length === offered.length;
  const a = Buffer.from(usable ? stored : DUMMY_HASH);
  const b = Buffer.from(offered.length === DUMMY_HASH.length ? offered : DUMMY_HASH);
  return timingSafeEqual(a, b) && usable && offered.length === DUMMY_HASH.length;
}

/**
 * The consentstates partition of one consent link. Every state of a link lives there, so
 * capping a link's states reads one bounded partition, never other links' states. The id
 * is a hash of the link's hash: it appears in `state` and reveals nothing about the link.
 */
function statePartition(linkHash: string): string {
  return `${STATE_PARTITION_PREFIX}${sha256(`consent-state-partition|${linkHash}`).slice(0, 32)}`;
}

export interface ConsentLink {
  tenantId: string;
  link: string;
}

/** The consent link's query, validated and capped; undefined when it is incomplete or malformed. */
export function parseConsentLink(query: URLSearchParams): ConsentLink | undefined {
  const tenant = query.get("tenant");
  const link = query.get("link");
  if (!isGuid(tenant) || !link || link.length > LIMITS.link || !LINK_SECRET.test(link)) return undefined;
  return { tenantId: tenant.toLowerCase(), link };
}

/**
 * Whether a link matches the tenant row. Unknown, offboarded, wrong, used and replaced links
 * are one answer, after the same work (one point read, one constant-time compare), so
 * the link says nothing about who is a customer. Only the holder of the right secret
 * learns that it expired.
 */
export function checkLink(row: TenantRow | undefined, linkHash: string, now: Date): "ok" | "link-invalid" | "link-expired" {
  const matches = sameHash(row?.consentLinkHash, linkHash);
  if (!row || !matches || row.status === "offboarded") return "link-invalid";
  if (!row.consentLinkExpiresAt || Date.parse(row.consentLinkExpiresAt) <= now.getTime()) return "link-expired";
  return "ok";
}

/** Records a failed consent in the tenant's lastError (the tenant's status stays as it is). */
export async function recordFailure(svc: Services, tenantId: string, code: string, message: string): Promise<void> {
  await patchTenant(svc.storage.table(TABLES.tenants), tenantId, "*", {
    lastErrorCode: code,
    lastErrorMessage: message,
    lastErrorAt: svc.now().toISOString(),
  });
}

/** GET /api/consent/start: binds a fresh state, nonce and PKCE verifier, then redirects to Entra ID. */
export async function startConsent(svc: Services, input: ConsentLink, log: Logger): Promise<ConsentOutcome> {
  const { tenantId } = input;
  const row = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
  const linkHash = sha256(input.link);
  const check = checkLink(row, linkHash, svc.now());
  if (check !== "ok" || !row) return { kind: check === "ok" ? "link-invalid" : check };

  const endpoints = endpointsFor(svc.config, row.cloud);
  const discovered = await discoverTenant(endpoints, tenantId);
  if (!discovered.ok) {
    if (!discovered.permanent) throw discovered.error; // transient: the generic "try again later" page
    return failed(svc, log, tenantId, { kind: "tenant-not-found", code: discovered.code }, "discovery");
  }
  const as = discovered.as;
  if (!as.authorization_endpoint) throw new Error("The tenant's OpenID configuration has no authorization endpoint");
  const mode: TenantMode = row.linkMode || "delegated";
  // The source the link onboards: a relink may change it; it applies once consent is verified.
  const source = row.linkSource || row.source || svc.config.defaultSource;
  const access = sourceAccess(source, endpoints);

  const partitionKey = statePartition(linkHash);
  const state = `${partitionKey.slice(STATE_PARTITION_PREFIX.length)}.${oauth.generateRandomState()}`;
  const nonce = mode === "delegated" ? oauth.generateRandomNonce() : "";
  const codeVerifier = mode === "delegated" ? oauth.generateRandomCodeVerifier() : "";
  const now = svc.now();
  const states = svc.storage.table(TABLES.consentStates);
  const entity: ConsentStateEntity = {
    partitionKey,
    rowKey: sha256(state),
    tenantId,
    linkHash,
    mode,
    source,
    codeVerifier,
    nonce,
    createdAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + svc.config.consentStateTtlMs).toISOString(),
  };
  await states.createEntity(entity);
  await keepNewestStates(states, partitionKey, svc.config.consentStatesPerLink);

  if (mode === "application") {
    // Admin consent for the app's application permissions, at the invited tenant itself
    // (never `common`): `{authority}/{tenant}/v2.0/adminconsent`.
    const url = new URL(`${endpoints.authorityHost}/${encodeURIComponent(tenantId)}/v2.0/adminconsent`);
    url.searchParams.set("client_id", svc.config.clientId);
    url.searchParams.set("scope", access.scope);
    url.searchParams.set("redirect_uri", svc.config.redirectUri);
    url.searchParams.set("state", state);
    log.info(`consent.started tenantId=${tenantId} mode=application`);
    return { kind: "redirect", location: url.href };
  }

  const url = new URL(as.authorization_endpoint);
  url.searchParams.set("client_id", svc.config.clientId);
  url.searchParams.set("response_type", "code");
  url.searchParams.set("redirect_uri", svc.config.redirectUri);
  url.searchParams.set("response_mode", "query");
  url.searchParams.set("scope", consentScope(access.scope));
  url.searchParams.set("state", state);
  url.searchParams.set("nonce", nonce);
  url.searchParams.set("code_challenge", await oauth.calculatePKCECodeChallenge(codeVerifier));
  url.searchParams.set("code_challenge_method", "S256");
  log.info(`consent.started tenantId=${tenantId} mode=delegated`);
  return { kind: "redirect", location: url.href };
}

/** Deletes the oldest states of one link beyond `limit` (a query of that link's partition only). */
async function keepNewestStates(table: TableClient, partitionKey: string, limit: number): Promise<void> {
  const rows: { rowKey: string; createdAt: string }[] = [];
  const filter = odata`PartitionKey eq ${partitionKey}`;
  for await (const row of table.listEntities<{ createdAt?: string }>({ queryOptions: { filter, select: ["RowKey", "createdAt"] } })) {
    rows.push({ rowKey: row.rowKey!, createdAt: row.createdAt ?? "" });
  }
  rows.sort((a, b) => (a.createdAt === b.createdAt ? a.rowKey.localeCompare(b.rowKey) : b.createdAt.localeCompare(a.createdAt)));
  for (const old of rows.slice(limit)) {
    await table.deleteEntity(partitionKey, old.rowKey).catch((err: unknown) => {
      if (!isStatus(err, 404)) throw err;
    });
  }
}

/** Takes the state row out of the table; only one caller can win for a given state. */
async function consumeState(table: TableClient, state: string): Promise<ConsentStateEntity | undefined> {
  const partition = STATE_FORMAT.exec(state)?.[1];
  if (!partition) return undefined;
  const partitionKey = `${STATE_PARTITION_PREFIX}${partition}`;
  let row: ConsentStateEntity & { etag: string };
  try {
    row = await table.getEntity<ConsentStateEntity>(partitionKey, sha256(state));
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
  try {
    await table.deleteEntity(partitionKey, row.rowKey, { etag: row.etag });
  } catch (err) {
    if (isStatus(err, 404, 412)) return undefined;
    throw err;
  }
  return row;
}

export interface CallbackInput {
  state: string;
  params: URLSearchParams;
}

/** The callback's query, capped; an outcome instead when it cannot be a response to us. */
export function parseCallback(url: URL): CallbackInput | ConsentOutcome {
  if (url.href.length > LIMITS.callbackUrl) return { kind: "response-unknown" };
  const params = url.searchParams;
  const state = params.get("state");
  if (!state) return { kind: "response-incomplete" };
  const tooLong =
    state.length > LIMITS.state ||
    (params.get("code") ?? "").length > LIMITS.code ||
    (params.get("error") ?? "").length > LIMITS.error ||
    (params.get("error_description") ?? "").length > LIMITS.errorDescription;
  if (tooLong || !STATE_FORMAT.test(state)) return { kind: "response-unknown" };
  return { state, params };
}

const VERDICT_OUTCOME = {
  "tenant-not-found": "link-wrong",
  "tenant-refused": "tenant-refused",
  "provider-config": "provider-config",
} as const;

/** Logs, records in lastError (and health, for the app's own credential) a lasting failure. */
export async function failed(
  svc: Services,
  log: Logger,
  tenantId: string,
  verdict: Exclude<EntraVerdict, { kind: "retry" }>,
  step: "discovery" | "authorize" | "token",
): Promise<ConsentOutcome> {
  const { code } = verdict;
  const messages = {
    "tenant-not-found": `Microsoft Entra ID does not know this tenant (${code} at ${step}): the consent link names a wrong tenant ID.`,
    "tenant-refused": `Microsoft Entra ID refused consent for this tenant (${code} at ${step}).`,
    "provider-config": `Microsoft Entra ID rejected the app's own configuration (${code} at ${step}).`,
  };
  if (verdict.kind === "provider-config" && verdict.clientCredential) await reportCredentialFailure(svc, log, code);
  log.warn(`consent.failed tenantId=${tenantId} reason=${verdict.kind} code=${code}`);
  await recordFailure(svc, tenantId, code, messages[verdict.kind]);
  return { kind: VERDICT_OUTCOME[verdict.kind], code };
}

/** GET /api/consent/callback: redeems the code and stores the refresh token. */
/**
 * The tenant row a callback's consent link names, its cloud's endpoints and its
 * authorization server; or the outcome that ends the callback: the link is no longer
 * valid, or Entra does not know the tenant. Both modes' callbacks start here.
 */
export async function linkedTenant(
  svc: Services,
  log: Logger,
  bound: ConsentStateEntity,
  warn: (reason: string) => void,
): Promise<{ ok: true; row: TenantRow; endpoints: CloudEndpoints; as: oauth.AuthorizationServer } | { ok: false; outcome: ConsentOutcome }> {
  const tenantId = bound.tenantId;
  const row = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
  const check = checkLink(row, bound.linkHash, svc.now());
  if (check !== "ok" || !row) {
    warn(check === "link-expired" ? "link-expired" : "link-invalid");
    return { ok: false, outcome: { kind: check === "ok" ? "link-invalid" : check } };
  }
  const endpoints = endpointsFor(svc.config, row.cloud);
  const discovered = await discoverTenant(endpoints, tenantId);
  if (!discovered.ok) {
    if (!discovered.permanent) throw discovered.error;
    return { ok: false, outcome: await failed(svc, log, tenantId, { kind: "tenant-not-found", code: discovered.code }, "discovery") };
  }
  return { ok: true, row, endpoints, as: discovered.as };
}

export async function completeConsent(svc: Services, input: CallbackInput, log: Logger): Promise<ConsentOutcome> {
  const { params, state } = input;
  const bound = await consumeState(svc.storage.table(TABLES.consentStates), state);
  if (!bound) {
    log.warn("consent.rejected reason=unknown-or-used-state");
    return { kind: "response-unknown" };
  }
  const tenantId = bound.tenantId;
  const warn = (reason: string, code?: string) =>
    log.warn(`consent.failed tenantId=${tenantId} reason=${reason}${code ? ` code=${code}` : ""}`);
  if (Date.parse(bound.expiresAt) <= svc.now().getTime()) {
    warn("state-expired");
    return { kind: "state-expired" };
  }
  const error = params.get("error");
  if (error) {
    const safeError = error.replace(/[^a-z_]/gi, "").slice(0, 40);
    const description = params.get("error_description");
    if (safeError === "access_denied" || safeError === "consent_required") {
      const code = aadstsOf(description) ?? safeError;
      warn("declined", code);
      await recordFailure(svc, tenantId, "ConsentDeclined", `The administrator cancelled or declined consent (${code}).`);
      return { kind: "declined" };
    }
    const verdict = authorizeVerdict(safeError, description);
    if (verdict.kind !== "retry") return failed(svc, log, tenantId, verdict, "authorize");
    warn(`authorize-${safeError}`, verdict.code);
    return { kind: "signin-failed", code: verdict.code };
  }
  // The mode comes from the consumed state row, never from the callback's parameters.
  if (bound.mode === "application") return completeAppConsent(svc, bound, params, log);
  if (params.has("admin_consent")) {
    warn("admin-consent-for-delegated-link");
    return { kind: "response-unknown" };
  }
  const linked = await linkedTenant(svc, log, bound, warn);
  if (!linked.ok) return linked.outcome;
  const { endpoints, as } = linked;
  const tenants = svc.storage.table(TABLES.tenants);
  const { client, auth } = oauthClient(svc);

  let tokens: oauth.TokenEndpointResponse;
  let claims: oauth.IDToken;
  try {
    const callbackParams = oauth.validateAuthResponse(as, client, params, state);
    const started = svc.now().getTime();
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await oauth.authorizationCodeGrantRequest(
          as,
          client,
          auth,
          callbackParams,
          svc.config.redirectUri,
          bound.codeVerifier,
          fetchOptions,
        );
        tokens = await oauth.processAuthorizationCodeResponse(as, client, response, {
          expectedNonce: bound.nonce,
          requireIdToken: true,
        });
        confirmCredential();
        break;
      } catch (err) {
        // A federated credential created minutes ago: Entra refuses the client, not the code.
        const { code } = classifyTokenError(err);
        if (!retryAsNewCredential(svc.clientCredential.kind, code, started, svc.now().getTime(), attempt)) throw err;
        svc.clientCredential.forget();
        await svc.sleep(newCredentialWaitMs(attempt));
      }
    }
    claims = oauth.getValidatedIdTokenClaims(tokens)!;
    await verifyIdTokenSignature(as, tokens.id_token!, svc.config.clientId);
  } catch (err) {
    if (err instanceof oauth.ResponseBodyError) {
      const verdict = tokenVerdict(err);
      if (verdict.kind !== "retry") return failed(svc, log, tenantId, verdict, "token");
      warn("token-refused", verdict.code);
      return { kind: "token-refused", code: verdict.code };
    }
    if (err instanceof oauth.OperationProcessingError && /"iss"|issuer/i.test(err.message)) {
      warn("wrong-tenant");
      return { kind: "wrong-tenant" };
    }
    warn("id-token-invalid", err instanceof Error ? err.name : undefined);
    return { kind: "token-refused", code: "InvalidIdToken" };
  }
  if (String(claims.tid ?? "").toLowerCase() !== tenantId) {
    warn("wrong-tenant");
    return { kind: "wrong-tenant" };
  }
  const access = sourceAccess(bound.source ?? "defender", endpoints);
  if (!grantsRead(tokens.scope, access)) {
    const missing = `${access.delegated[0]} (${access.resource})`;
    warn("scope-not-granted", "ScopeNotGranted");
    await recordFailure(svc, tenantId, "ScopeNotGranted", `The consent did not grant ${missing}; nothing was stored.`);
    return { kind: "scope-not-granted", missing };
  }
  if (!tokens.refresh_token) {
    warn("no-refresh-token");
    return { kind: "no-refresh-token" };
  }

  const probe = await probeSource(access.source, endpoints, tokens.access_token);
  if (probe === "forbidden") {
    warn("defender-forbidden", "DefenderForbidden");
    await recordFailure(svc, tenantId, "DefenderForbidden", "The Defender API refused to list alerts for the consenting account.");
    return { kind: "defender-forbidden" };
  }
  if (probe === "failed") {
    warn("defender-unavailable");
    return { kind: "defender-unavailable" };
  }
  // The code was redeemed with the app's credential (secret, managed identity or certificate): it works.
  await recordClientCredential(svc, false);

  const generation = randomBytes(12).toString("base64url");
  const version = await svc.vault.write(tenantId, tokens.refresh_token, { tenantId, generation }, true);
  if (!version) throw new Error("Key Vault did not store the refresh token");
  const consentedBy = String(claims.preferred_username ?? claims.upn ?? claims.oid ?? claims.sub);
  const now = svc.now().toISOString();
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await getTenant(tenants, tenantId);
    if (!current || checkLink(current, bound.linkHash, svc.now()) !== "ok") {
      await svc.vault.disable(tenantId, version);
      warn("link-changed");
      return { kind: "link-changed" };
    }
    const patch = {
      status: "active" as const,
      mode: "delegated" as const,
      linkMode: "" as const,
      source: access.source,
      linkSource: "" as const,
      consentVerifyUntil: "",
      consentVerifyCode: "",
      generation,
      consentedAt: now,
      consentedBy,
      refreshTokenVersion: version,
      refreshTokenWrittenAt: now,
      consentLinkHash: "",
      consentLinkExpiresAt: "",
      ...CLEARED_ERROR,
    };
    if (await patchTenant(tenants, tenantId, current.etag, patch)) {
      await svc.vault.disableAllExcept(tenantId, version);
      log.info(`tenant.status tenantId=${tenantId} status=active`);
      log.info(`consent.completed tenantId=${tenantId} mode=delegated`);
      return { kind: "completed", displayName: current.displayName };
    }
  }
  await svc.vault.disable(tenantId, version);
  throw new Error("The tenant row kept changing during consent");
}

const jwksCache = new Map<string, ReturnType<typeof jose.createRemoteJWKSet>>();

/** oauth4webapi validates the claims; this adds the RS256 signature check against the tenant's JWKS. */
async function verifyIdTokenSignature(as: oauth.AuthorizationServer, idToken: string, clientId: string): Promise<void> {
  if (!as.jwks_uri) throw new oauth.OperationProcessingError("no jwks_uri in the OpenID configuration");
  let jwks = jwksCache.get(as.jwks_uri);
  if (!jwks) {
    jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri), {
      [jose.customFetch]: undiciFetch as unknown as typeof fetch,
    });
    jwksCache.set(as.jwks_uri, jwks);
  }
  await jose.jwtVerify(idToken, jwks, { issuer: as.issuer, audience: clientId, algorithms: ["RS256"] });
}

/** Removes consent states that expired without a callback (every link's partition). */
export async function purgeExpiredStates(svc: Services): Promise<number> {
  const table = svc.storage.table(TABLES.consentStates);
  const cutoff = svc.now().toISOString();
  let removed = 0;
  const filter = odata`expiresAt lt ${cutoff}`;
  for await (const row of table.listEntities<ConsentStateEntity>({ queryOptions: { filter, select: ["PartitionKey", "RowKey"] } })) {
    try {
      await table.deleteEntity(row.partitionKey, row.rowKey);
      removed++;
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
  }
  return removed;
}
