import * as oauth from "oauth4webapi";
import type { CloudEndpoints } from "../platform/config.js";
import { classifyTokenError, discover, fetchOptions, oauthClient, type TokenError } from "../platform/oauth.js";
import type { Services } from "../platform/services.js";

/**
 * Access tokens for the Defender API, redeemed from the tenant's refresh token at the
 * tenant's own token endpoint and cached in memory until shortly before they expire.
 */

export class TokenFailure extends Error {
  constructor(public readonly detail: TokenError) {
    super(detail.message);
    this.name = "TokenFailure";
  }
}

export interface Redeemed {
  accessToken: string;
  /** Entra rotates refresh tokens: the newest one, if the response had one. */
  refreshToken?: string;
}

const EXPIRY_MARGIN_MS = 5 * 60_000;
const cache = new Map<string, { token: string; until: number }>();

export function cachedAccessToken(tenantId: string, now: Date): string | undefined {
  const entry = cache.get(tenantId);
  if (entry && entry.until > now.getTime()) return entry.token;
  cache.delete(tenantId);
  return undefined;
}

export function forgetAccessToken(tenantId: string): void {
  cache.delete(tenantId);
}

/** Redeems a refresh token, retrying transient failures with backoff; throws TokenFailure. */
export async function redeemRefreshToken(
  svc: Services,
  endpoints: CloudEndpoints,
  tenantId: string,
  refreshToken: string,
): Promise<Redeemed> {
  const { client, auth } = oauthClient(svc.config);
  for (let attempt = 1; ; attempt++) {
    try {
      const as = await discover(endpoints, tenantId);
      const response = await oauth.refreshTokenGrantRequest(as, client, auth, refreshToken, {
        ...fetchOptions,
        additionalParameters: { scope: `${endpoints.apiScope} offline_access` },
      });
      const result = await oauth.processRefreshTokenResponse(as, client, response);
      const lifetimeMs = (result.expires_in ?? 3600) * 1000;
      cache.set(tenantId, {
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
