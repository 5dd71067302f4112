import * as oauth from "oauth4webapi";
import { confirmCredential, newCredentialWaitMs, retryAsNewCredential } from "../platform/client-credential.js";
import { type CloudEndpoints, endpointsFor, type TenantMode } from "../platform/config.js";
import { recordClientCredential } from "../platform/health.js";
import { classifyTokenError, discover, fetchOptions, oauthClient, type TokenError } from "../platform/oauth.js";
import type { Logger, Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { getTenant, listTenants, patchTenant, type TenantRow, tenantMode } from "../onboarding/tenants.js";

/**
 * Access tokens for a source API, for one tenant, at the tenant's own token endpoint
 * (never `common` or `organizations`), in one of two modes:
 * - delegated: redeemed from the tenant's refresh token in Key Vault (write-back policy);
 * - application: client credentials, nothing stored and no Key Vault read.
 * The app authenticates with its configured credential (secret, managed identity or
 * certificate, see shared/platform/client-credential.ts). Access tokens are cached in
 * memory per (tenant, audience, mode) until five minutes before they expire, so a Graph
 * token never serves a Defender call and a token of the old mode never outlives a switch.
 * No token is ever decoded: Microsoft's access tokens are for the API, not for us.
 */

export class TokenFailure extends Error {
  constructor(public readonly detail: TokenError) {
    super(detail.message);
    this.name = "TokenFailure";
  }
}

export interface TokenProvider {
  /** A bearer token for the audience (scope); `forceNew` skips the cache (after a 401). */
  get(scope: string, options?: { forceNew?: boolean }): Promise<string>;
}

export interface Redeemed {
  accessToken: string;
  /** Entra rotates refresh tokens: the newest one, if the response had one. */
  refreshToken?: string;
}

const EXPIRY_MARGIN_MS = 5 * 60_000;
const cache = new Map<string, { token: string; until: number }>();

function cacheKey(tenantId: string, scope: string, mode: TenantMode): string {
  return `${tenantId}|${mode}|${scope}`;
}

export function cachedAccessToken(tenantId: string, scope: string, now: Date, mode: TenantMode = "delegated"): string | undefined {
  const key = cacheKey(tenantId, scope, mode);
  const entry = cache.get(key);
  if (entry && entry.until > now.getTime()) return entry.token;
  cache.delete(key);
  return undefined;
}

/** Drops every cached token of a tenant (tests, and a consent that replaced the grant). */
export function forgetAccessToken(tenantId: string): void {
  for (const key of cache.keys()) if (key.startsWith(`${tenantId}|`)) cache.delete(key);
}

/** Redeems a refresh token, retrying transient failures with backoff; throws TokenFailure. */
export async function redeemRefreshToken(
  svc: Services,
  endpoints: CloudEndpoints,
  tenantId: string,
  refreshToken: string,
  scope: string,
): Promise<Redeemed> {
  const { client, auth } = oauthClient(svc);
  const result = await withTokenRetries(svc, async () => {
    const as = await discover(endpoints, tenantId);
    const response = await oauth.refreshTokenGrantRequest(as, client, auth, refreshToken, {
      ...fetchOptions,
      additionalParameters: { scope: `${scope} offline_access` },
    });
    return oauth.processRefreshTokenResponse(as, client, response);
  });
  remember(svc, tenantId, scope, "delegated", result);
  return result.refresh_token ? { accessToken: result.access_token, refreshToken: result.refresh_token } : { accessToken: result.access_token };
}

/**
 * An app-only token from the tenant's own token endpoint (client credentials grant, scope
 * `{resource}/.default`), cached per (tenant, audience, application). Nothing is stored;
 * throws TokenFailure.
 */
export async function clientCredentialsToken(
  svc: Services,
  endpoints: CloudEndpoints,
  tenantId: string,
  scope: string,
): Promise<string> {
  const { client, auth } = oauthClient(svc);
  const result = await withTokenRetries(svc, async () => {
    const as = await discover(endpoints, tenantId);
    const response = await oauth.clientCredentialsGrantRequest(as, client, auth, { scope }, fetchOptions);
    return oauth.processClientCredentialsResponse(as, client, response);
  });
  remember(svc, tenantId, scope, "application", result);
  return result.access_token;
}

function remember(svc: Services, tenantId: string, scope: string, mode: TenantMode, result: oauth.TokenEndpointResponse): void {
  const lifetimeMs = (result.expires_in ?? 3600) * 1000;
  cache.set(cacheKey(tenantId, scope, mode), {
    token: result.access_token,
    until: svc.now().getTime() + Math.max(0, lifetimeMs - EXPIRY_MARGIN_MS),
  });
}

/**
 * Runs one token request: transient failures are retried with backoff (4 tries), and
 * AADSTS70021 for a federated credential that may be minutes old for up to three minutes.
 * Any other failure throws TokenFailure at once. A success confirms the app's credential.
 */
async function withTokenRetries<T>(svc: Services, request: () => Promise<T>): Promise<T> {
  const started = svc.now().getTime();
  for (let attempt = 1; ; attempt++) {
    try {
      const result = await request();
      confirmCredential();
      return result;
    } catch (err) {
      const detail = classifyTokenError(err);
      if (detail.kind === "client") svc.clientCredential.forget();
      const newCredential = retryAsNewCredential(svc.clientCredential.kind, detail.code, started, svc.now().getTime(), attempt);
      if (!newCredential && (detail.kind !== "transient" || attempt >= 4)) throw new TokenFailure(detail);
      await svc.sleep(newCredential ? newCredentialWaitMs(attempt) : Math.floor(svc.random() * Math.min(30_000, 1000 * 2 ** attempt)));
    }
  }
}

let clientCredentialKnownGood = false;

/** Forget that the app credential worked (after Entra rejected it). */
export function clientCredentialFailed(): void {
  clientCredentialKnownGood = false;
}

/**
 * Delegated tokens from the refresh token stored in Key Vault. Entra returns a new refresh
 * token on every redemption and does not revoke the old one, while Key Vault keeps every
 * version forever; so the newest token is written back only when the stored one is older
 * than REFRESH_TOKEN_WRITEBACK_HOURS, and only if no consent or offboarding changed the
 * tenant since this run began (generation and ETag checks). A write-back never recovers a
 * deleted secret: an offboarding cannot be undone by a pull that was already running.
 */
export class DelegatedTokenProvider implements TokenProvider {
  constructor(
    private readonly svc: Services,
    private readonly log: Logger,
    private readonly tenant: TenantRow,
    private readonly endpoints: CloudEndpoints,
  ) {}

  private get tenantId(): string {
    return this.tenant.rowKey;
  }

  readonly mode = "delegated" as const;

  async get(scope: string, options: { forceNew?: boolean } = {}): Promise<string> {
    const id = this.tenantId;
    if (!options.forceNew) {
      const cached = cachedAccessToken(id, scope, this.svc.now(), "delegated");
      if (cached) return cached;
    }
    const stored = await this.svc.vault.read(id, this.tenant.refreshTokenVersion || undefined);
    if (!stored) {
      throw new TokenFailure({ kind: "reconsent", code: "RefreshTokenMissing", message: "No refresh token is stored" });
    }
    const redeemed = await redeemRefreshToken(this.svc, this.endpoints, id, stored.value, scope);
    if (!clientCredentialKnownGood) {
      await recordClientCredential(this.svc, false);
      clientCredentialKnownGood = true;
    }
    if (redeemed.refreshToken) await this.maybeWriteBack(redeemed.refreshToken);
    return redeemed.accessToken;
  }

  private async maybeWriteBack(refreshToken: string): Promise<void> {
    const id = this.tenantId;
    const writtenAt = Date.parse(this.tenant.refreshTokenWrittenAt ?? "");
    const due = Number.isNaN(writtenAt) || this.svc.now().getTime() - writtenAt >= this.svc.config.pull.writebackIntervalMs;
    if (!due) return;
    const tenants = this.svc.storage.table(TABLES.tenants);
    const current = await getTenant(tenants, id);
    if (!current || current.generation !== this.tenant.generation || current.status !== "active") return;
    const version = await this.svc.vault.write(id, refreshToken, { tenantId: id, generation: this.tenant.generation }, false);
    if (!version) return; // the secret was deleted: an offboarding won
    const at = this.svc.now().toISOString();
    const etag = await patchTenant(tenants, id, current.etag, { refreshTokenVersion: version, refreshTokenWrittenAt: at });
    if (!etag) {
      await this.svc.vault.disable(id, version);
      return;
    }
    this.tenant.refreshTokenVersion = version;
    this.tenant.refreshTokenWrittenAt = at;
    await this.svc.vault.disableAllExcept(id, version);
    this.log.info(`token.written-back tenantId=${id}`);
  }
}

/** Codes that, in application mode, say the app's service principal is gone from a tenant. */
const APP_GONE = new Set(["AADSTS7000229", "AADSTS700016"]);
/** Other application-mode tenants asked when one says the app is gone (are they all failing?). */
const MAX_WITNESSES = 3;

/**
 * App-only tokens (client credentials) for an application-mode tenant: no refresh token,
 * no Key Vault read. It refuses to ask for a token for a tenant that is offboarded (or
 * gone) at the moment of the request. A deleted service principal (AADSTS7000229, or
 * AADSTS700016 for this tenant alone) makes the tenant reconsent-required; when every
 * other application-mode tenant asked fails the same way, it is the app's own failure
 * (`kind: "client"`: app.credential.failed, no tenant status changes).
 */
export class AppTokenProvider implements TokenProvider {
  readonly mode = "application" as const;

  constructor(
    private readonly svc: Services,
    private readonly tenant: TenantRow,
    private readonly endpoints: CloudEndpoints,
  ) {}

  async get(scope: string, options: { forceNew?: boolean } = {}): Promise<string> {
    const id = this.tenant.rowKey;
    if (!options.forceNew) {
      const cached = cachedAccessToken(id, scope, this.svc.now(), "application");
      if (cached) return cached;
    }
    const current = await getTenant(this.svc.storage.table(TABLES.tenants), id);
    if (!current || current.status === "offboarded") {
      throw new TokenFailure({ kind: "other", code: "TenantOffboarded", message: "The tenant is offboarded: no token is requested for it" });
    }
    try {
      const token = await clientCredentialsToken(this.svc, this.endpoints, id, scope);
      if (!clientCredentialKnownGood) {
        await recordClientCredential(this.svc, false);
        clientCredentialKnownGood = true;
      }
      return token;
    } catch (err) {
      if (!(err instanceof TokenFailure) || !APP_GONE.has(err.detail.code)) throw err;
      const { code } = err.detail;
      if (await this.othersFailTheSameWay(scope, code)) {
        throw new TokenFailure({ kind: "client", code, message: `Every application-mode tenant asked answers ${code}: the app registration itself is missing or disabled` });
      }
      throw new TokenFailure({ kind: "reconsent", code, message: "The app's enterprise application (service principal) is gone from the tenant: it was deleted, or admin consent was revoked" });
    }
  }

  /** Asks up to three other active application-mode tenants for a fresh token; true when all fail with `code` (or there are none). */
  private async othersFailTheSameWay(scope: string, code: string): Promise<boolean> {
    const others = (await listTenants(this.svc.storage.table(TABLES.tenants)))
      .filter((t) => t.rowKey !== this.tenant.rowKey && t.status === "active" && tenantMode(t) === "application")
      .slice(0, MAX_WITNESSES);
    for (const other of others) {
      try {
        await clientCredentialsToken(this.svc, endpointsFor(this.svc.config, other.cloud), other.rowKey, scope);
        return false;
      } catch (err) {
        if (!(err instanceof TokenFailure) || err.detail.code !== code) return false;
      }
    }
    return true;
  }
}

/** The token provider of a tenant's mode. */
export function tokenProviderFor(svc: Services, log: Logger, tenant: TenantRow, endpoints: CloudEndpoints): TokenProvider & { mode: TenantMode } {
  return tenantMode(tenant) === "application" ? new AppTokenProvider(svc, tenant, endpoints) : new DelegatedTokenProvider(svc, log, tenant, endpoints);
}
