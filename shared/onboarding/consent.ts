import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { odata, type TableClient } from "@azure/data-tables";
import type { HttpResponseInit } from "@azure/functions";
import * as jose from "jose";
import * as oauth from "oauth4webapi";
import { fetch as undiciFetch } from "undici";
import { endpointsFor } from "../platform/config.js";
import { isGuid, page, redirect } from "../platform/http.js";
import { consentScope, discover, fetchOptions, oauthClient } from "../platform/oauth.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES } from "../platform/storage.js";
import { CLEARED_ERROR, getTenant, patchTenant, type TenantRow } from "./tenants.js";

/**
 * Consent: the customer's admin opens the consent link (see register.ts), consents at
 * Entra ID (authorization code flow with PKCE), and the callback stores the tenant's
 * refresh token in Key Vault. Nothing here logs or returns a token,
 * code, verifier, state or secret.
 */

const STATE_PARTITION = "state";

interface ConsentStateEntity {
  partitionKey: string;
  rowKey: string;
  tenantId: string;
  linkHash: string;
  codeVerifier: string;
  nonce: string;
  expiresAt: string;
}

export function sha256(value: string): string {
  return createHash("sha256").update(value).digest("base64url");
}

function sameHash(a: string | undefined, b: string): boolean {
  if (!a) return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Checks a consent link against the tenant row. Returns a page to show when it is not usable. */
function linkProblem(row: TenantRow | undefined, linkHash: string, now: Date): HttpResponseInit | undefined {
  if (!row || row.status === "offboarded") {
    return page(404, "Unknown consent link", [
      "This consent link is not valid. Ask your service provider for a new link.",
    ]);
  }
  if (!sameHash(row.consentLinkHash, linkHash)) {
    return page(410, "Consent link no longer valid", [
      "This consent link was already used, or a newer link replaced it.",
      "If consent is still needed, ask your service provider for a new link.",
    ]);
  }
  if (!row.consentLinkExpiresAt || Date.parse(row.consentLinkExpiresAt) <= now.getTime()) {
    return page(410, "Consent link expired", ["This consent link has expired. Ask your service provider for a new link."]);
  }
  return undefined;
}

/** GET /api/consent/start: binds a fresh state, nonce and PKCE verifier, then redirects to Entra ID. */
export async function startConsent(svc: Services, query: URLSearchParams, log: Logger): Promise<HttpResponseInit> {
  const tenantParam = query.get("tenant");
  const link = query.get("link");
  if (!isGuid(tenantParam) || !link) {
    return page(400, "Incomplete consent link", ["The link is incomplete. Copy the whole link you received and open it again."]);
  }
  const tenantId = tenantParam.toLowerCase();
  const tenants = svc.storage.table(TABLES.tenants);
  const row = await getTenant(tenants, tenantId);
  const linkHash = sha256(link);
  const problem = linkProblem(row, linkHash, svc.now());
  if (problem || !row) return problem ?? page(404, "Unknown consent link", []);

  const endpoints = endpointsFor(svc.config, row.cloud);
  const as = await discover(endpoints, tenantId);
  if (!as.authorization_endpoint) throw new Error("The tenant's OpenID configuration has no authorization endpoint");
  const state = oauth.generateRandomState();
  const nonce = oauth.generateRandomNonce();
  const codeVerifier = oauth.generateRandomCodeVerifier();
  const entity: ConsentStateEntity = {
    partitionKey: STATE_PARTITION,
    rowKey: sha256(state),
    tenantId,
    linkHash,
    codeVerifier,
    nonce,
    expiresAt: new Date(svc.now().getTime() + svc.config.consentStateTtlMs).toISOString(),
  };
  await svc.storage.table(TABLES.consentStates).createEntity(entity);

  const url = new URL(as.authorization_endpoint);
  url.searchParams.set("client_id", svc.config.clientId);
  url.searchParams.set("response_type", "code");
  url.searchParams.set("redirect_uri", svc.config.redirectUri);
  url.searchParams.set("response_mode", "query");
  url.searchParams.set("scope", consentScope(endpoints));
  url.searchParams.set("state", state);
  url.searchParams.set("nonce", nonce);
  url.searchParams.set("code_challenge", await oauth.calculatePKCECodeChallenge(codeVerifier));
  url.searchParams.set("code_challenge_method", "S256");
  log.info(`consent.started tenantId=${tenantId}`);
  return redirect(url.href);
}

/** Takes the state row out of the table; only one caller can win for a given state. */
async function consumeState(table: TableClient, state: string): Promise<ConsentStateEntity | undefined> {
  let row: ConsentStateEntity & { etag: string };
  try {
    row = await table.getEntity<ConsentStateEntity>(STATE_PARTITION, sha256(state));
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
  try {
    await table.deleteEntity(STATE_PARTITION, row.rowKey, { etag: row.etag });
  } catch (err) {
    if (isStatus(err, 404, 412)) return undefined;
    throw err;
  }
  return row;
}

const TRY_AGAIN = "Open the consent link you received again to retry. Nothing was stored.";

/** GET /api/consent/callback: redeems the code and stores the refresh token. */
export async function completeConsent(svc: Services, callbackUrl: URL, log: Logger): Promise<HttpResponseInit> {
  const params = callbackUrl.searchParams;
  const state = params.get("state");
  if (!state) {
    return page(400, "Sign-in response incomplete", [
      "The response from Microsoft did not include the expected state value.",
      TRY_AGAIN,
    ]);
  }
  const bound = await consumeState(svc.storage.table(TABLES.consentStates), state);
  if (!bound) {
    log.warn("consent.rejected reason=unknown-or-used-state");
    return page(400, "Sign-in response not recognised", [
      "This sign-in response is unknown or was already used. Responses can only be used once.",
      TRY_AGAIN,
    ]);
  }
  const tenantId = bound.tenantId;
  const fail = (status: number, reason: string, title: string, paragraphs: string[]) => {
    log.warn(`consent.failed tenantId=${tenantId} reason=${reason}`);
    return page(status, title, paragraphs);
  };
  if (Date.parse(bound.expiresAt) <= svc.now().getTime()) {
    return fail(400, "state-expired", "Sign-in took too long", [
      "The sign-in started too long ago and has expired.",
      TRY_AGAIN,
    ]);
  }
  const error = params.get("error");
  if (error) {
    const declined = error === "access_denied" || error === "consent_required";
    return fail(
      400,
      `authorize-${error.replace(/[^a-z_]/gi, "").slice(0, 40)}`,
      declined ? "Consent was not given" : "Sign-in did not complete",
      declined
        ? [
            "Microsoft reported that consent was declined or is still required.",
            "To connect your organisation, open the consent link again, sign in as an administrator and choose Accept.",
          ]
        : ["Microsoft reported an error during sign-in.", TRY_AGAIN],
    );
  }
  const tenants = svc.storage.table(TABLES.tenants);
  const row = await getTenant(tenants, tenantId);
  const problem = linkProblem(row, bound.linkHash, svc.now());
  if (problem || !row) return problem ?? page(404, "Unknown consent link", []);

  const endpoints = endpointsFor(svc.config, row.cloud);
  const as = await discover(endpoints, tenantId);
  const { client, auth } = oauthClient(svc.config);

  let tokens: oauth.TokenEndpointResponse;
  let claims: oauth.IDToken;
  try {
    const callbackParams = oauth.validateAuthResponse(as, client, params, state);
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
    claims = oauth.getValidatedIdTokenClaims(tokens)!;
    await verifyIdTokenSignature(as, tokens.id_token!, svc.config.clientId);
  } catch (err) {
    const reason = err instanceof oauth.ResponseBodyError ? `token-${err.error}` : "id-token-invalid";
    const tenantMismatch = err instanceof oauth.OperationProcessingError && /"iss"|issuer/i.test(err.message);
    if (tenantMismatch) {
      return fail(403, "wrong-tenant", "Signed in to the wrong organisation", [
        "The account that signed in does not belong to the organisation this link was made for.",
        "Sign in with an administrator account of the invited organisation.",
        TRY_AGAIN,
      ]);
    }
    return fail(400, reason, "Sign-in could not be completed", [
      "Microsoft did not accept the sign-in response, or returned an invalid answer.",
      TRY_AGAIN,
    ]);
  }
  if (String(claims.tid ?? "").toLowerCase() !== tenantId) {
    return fail(403, "wrong-tenant", "Signed in to the wrong organisation", [
      "The account that signed in does not belong to the organisation this link was made for.",
      "Sign in with an administrator account of the invited organisation.",
      TRY_AGAIN,
    ]);
  }
  if (!tokens.refresh_token) {
    return fail(400, "no-refresh-token", "Offline access was not granted", [
      "Microsoft did not issue a refresh token, so alerts could not be collected while nobody is signed in.",
      "Make sure the consent includes offline access (Maintain access to data you have given it access to).",
      TRY_AGAIN,
    ]);
  }

  const probe = await probeAlerts(endpoints.apiBaseUrl, tokens.access_token);
  if (probe === "forbidden") {
    return fail(403, "defender-forbidden", "The account cannot read Defender alerts", [
      "Consent worked, but the Microsoft Defender for Endpoint API refused to list alerts for this account.",
      'The account needs the Defender "View Data" permission (Security operations) on all device groups, and the app needs the WindowsDefenderATP Alert.Read permission.',
      "Grant these, then open the consent link again. Nothing was stored.",
    ]);
  }
  if (probe === "failed") {
    return fail(502, "defender-unavailable", "Microsoft Defender did not answer", [
      "The Defender API could not be reached to confirm access.",
      TRY_AGAIN,
    ]);
  }

  const generation = randomBytes(12).toString("base64url");
  const version = await svc.vault.write(tenantId, tokens.refresh_token, { tenantId, generation }, true);
  if (!version) throw new Error("Key Vault did not store the refresh token");
  const consentedBy = String(claims.preferred_username ?? claims.upn ?? claims.oid ?? claims.sub);
  const now = svc.now().toISOString();
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await getTenant(tenants, tenantId);
    const stillValid = current && !linkProblem(current, bound.linkHash, svc.now());
    if (!current || !stillValid) {
      await svc.vault.disable(tenantId, version);
      return fail(409, "link-changed", "Consent link no longer valid", [
        "The organisation was offboarded, or a newer consent link replaced this one, while you were signing in.",
        "Nothing was stored. Ask your service provider for a new link if consent is still needed.",
      ]);
    }
    const patch = {
      status: "active" as const,
      generation,
      consentedAt: now,
      consentedBy,
      refreshTokenVersion: version,
      refreshTokenWrittenAt: now,
      consentLinkHash: "",
      consentLinkExpiresAt: "",
      pullLeaseUntil: "",
      ...CLEARED_ERROR,
    };
    if (await patchTenant(tenants, tenantId, current.etag, patch)) {
      await svc.vault.disableAllExcept(tenantId, version);
      log.info(`tenant.status tenantId=${tenantId} status=active`);
      return page(200, "Consent complete", [
        `${current.displayName} is now connected. Microsoft Defender alerts will be collected automatically.`,
        "You can close this window.",
      ]);
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

/** One `GET /api/alerts?$top=1` proves the delegated token can read alerts. */
async function probeAlerts(apiBaseUrl: string, accessToken: string): Promise<"ok" | "forbidden" | "failed"> {
  try {
    const response = await undiciFetch(`${apiBaseUrl}/api/alerts?$top=1`, {
      headers: { Authorization: `Bearer ${accessToken}`, Accept: "application/json" },
      signal: AbortSignal.timeout(30_000),
    });
    await response.arrayBuffer();
    if (response.ok) return "ok";
    return response.status === 401 || response.status === 403 ? "forbidden" : "failed";
  } catch {
    return "failed";
  }
}

/** Removes consent states that expired without a callback. */
export async function purgeExpiredStates(svc: Services): Promise<number> {
  const table = svc.storage.table(TABLES.consentStates);
  const cutoff = svc.now().toISOString();
  let removed = 0;
  const filter = odata`PartitionKey eq ${STATE_PARTITION} and expiresAt lt ${cutoff}`;
  for await (const row of table.listEntities<ConsentStateEntity>({ queryOptions: { filter, select: ["RowKey"] } })) {
    try {
      await table.deleteEntity(STATE_PARTITION, row.rowKey);
      removed++;
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
  }
  return removed;
}
