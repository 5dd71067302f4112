import * as oauth from "oauth4webapi";
import type { CloudEndpoints } from "../platform/config.js";
import { recordClientCredential } from "../platform/health.js";
import { classifyTokenError, discover, fetchOptions, oauthClient, type TokenError } from "../platform/oauth.js";
import type { Logger, Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { getTenant, patchTenant, type TenantRow } from "../onboarding/tenants.js";

/**
 * Access tokens for a source API, for one tenant. Today: delegated, redeemed from the
 * tenant's refresh token at the tenant's own token endpoint, cached in memory per
 * (tenant, audience) until five minutes before they expire.
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

function cacheKey(tenantId: string, scope: string): string {
  return `${tenantId}|${scope}`;
}

export function cachedAccessToken(tenantId: string, scope: string, now: Date): string | undefined {
  const key = cacheKey(tenantId, scope);
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
  const { client, auth } = oauthClient(svc.config);
  for (let attempt = 1; ; attempt++) {
    try {
      const as = await discover(endpoints, tenantId);
      const response = await oauth.refreshTokenGrantRequest(as, client, auth, refreshToken, {
        ...fetchOptions,
        additionalParameters: { scope: `${scope} offline_access` },
      });
      const result = await oauth.processRefreshTokenResponse(as, client, response);
      const lifetimeMs = (result.expires_in ?? 3600) * 1000;
      cache.set(cacheKey(tenantId, scope), {
        token: result.access_token,
        until: svc.now().getTime() + Math.max(0, lifetimeMs - EXPIRY_MARGIN_MS),
      });
      return result.refresh_token
        ? { accessToken: result.access_token, refreshToken: result.refresh_token }
        : { accessToken: result.access_token };
    } catch (err) {
      const detail = classifyTokenError(err);
      if (detail.kind !== "transient" || attempt >= 4) throw new TokenFailure(detail);
      await svc.sleep(Math.floor(svc.random() * Math.min(30_000, 1000 * 2 ** attempt)));
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

  async get(scope: string, options: { forceNew?: boolean } = {}): Promise<string> {
    const id = this.tenantId;
    if (!options.forceNew) {
      const cached = cachedAccessToken(id, scope, this.svc.now());
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
