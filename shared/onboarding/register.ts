import { randomBytes } from "node:crypto";
import { CLOUD_PRESETS, CLOUDS, type Cloud, endpointsFor, TENANT_MODES, type TenantMode } from "../platform/config.js";
import { SOURCE_NAMES } from "../collection/sources/index.js";
import type { SourceName } from "../collection/source.js";
import { ApiError, parseTenantId } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES } from "../platform/storage.js";
import { sha256 } from "./consent.js";
import { discoverTenant } from "./entra-errors.js";
import {
  getTenant,
  patchTenant,
  TENANT_PARTITION,
  type TenantEntity,
  type TenantRow,
  type TenantStatus,
  toStatus,
} from "./tenants.js";

/**
 * Registration: an operator registers a customer tenant (POST /api/tenants) and gets a
 * consent link. Only the SHA-256 of the link's secret part is stored.
 *
 * - The tenant must exist at Entra: its OpenID configuration is fetched first, and Entra's
 *   "tenant not found" (AADSTS90002) answers 422 TenantNotFound. When Entra cannot be
 *   reached, registration goes on (the consent page names the problem later).
 * - A tenant that is `active` or `reconsent-required` gets a new link only with
 *   `"relink": true`: a live link lets whoever opens it become the collection account.
 * - `cloud` never changes once a tenant has been active (its token and alerts live there).
 * - `mode` (default ONBOARDING_DEFAULT_MODE) is what the link onboards with: `delegated`
 *   (an admin signs in, a refresh token is stored) or `application` (admin consent to the
 *   app's own permission, nothing stored). An active tenant keeps being pulled in its old
 *   mode until the new consent is verified.
 * - `source` (default: the tenant's current source, else DEFAULT_ALERT_SOURCE) is the alert
 *   API the link grants access to (`defender` or `graph`, docs/sources.md); like `mode`, it
 *   applies once the new consent is verified.
 * - With MSSP_CLIENT_CREDENTIAL=managed-identity, a tenant in another cloud than the app
 *   registration (gcc-high, dod from a commercial deployment) is refused: a federated
 *   credential never crosses clouds (400 CloudNotSupported).
 */

const FIELDS = ["tenantId", "displayName", "cloud", "relink", "mode", "source"] as const;
export const MAX_DISPLAY_NAME = 256;

export interface Registration {
  tenantId: string;
  displayName?: string;
  cloud?: Cloud;
  relink: boolean;
  mode?: TenantMode;
  source?: SourceName;
}

export interface RegisterResult {
  created: boolean;
  body: TenantStatus & { consentUrl: string; consentUrlExpiresAt: string };
}

/** Validates a POST /api/tenants body; needs no storage, so bad input is a 400 even when storage is down. */
export function parseRegistration(input: Record<string, unknown>): Registration {
  const unknownFields = Object.keys(input).filter((k) => !(FIELDS as readonly string[]).includes(k));
  if (unknownFields.length > 0) {
    throw new ApiError(400, "UnknownField", `Unknown field(s): ${unknownFields.slice(0, 10).join(", ").slice(0, 200)}.`);
  }
  const tenantId = parseTenantId(input.tenantId);
  const registration: Registration = { tenantId, relink: false };
  if (input.displayName !== undefined) {
    const name = input.displayName;
    if (typeof name !== "string" || name.trim() === "" || name.length > MAX_DISPLAY_NAME) {
      throw new ApiError(400, "InvalidDisplayName", `displayName must be a non-empty string of at most ${MAX_DISPLAY_NAME} characters.`);
    }
    registration.displayName = name.trim();
  }
  if (input.cloud !== undefined) {
    if (!CLOUDS.includes(input.cloud as Cloud)) throw new ApiError(400, "InvalidCloud", `cloud must be one of ${CLOUDS.join(", ")}.`);
    registration.cloud = input.cloud as Cloud;
  }
  if (input.relink !== undefined) {
    if (typeof input.relink !== "boolean") throw new ApiError(400, "InvalidRelink", "relink must be true or false.");
    registration.relink = input.relink;
  }
  if (input.mode !== undefined) {
    if (!TENANT_MODES.includes(input.mode as TenantMode)) throw new ApiError(400, "InvalidMode", `mode must be one of ${TENANT_MODES.join(", ")}.`);
    registration.mode = input.mode as TenantMode;
  }
  if (input.source !== undefined) {
    if (!SOURCE_NAMES.includes(input.source as SourceName)) {
      throw new ApiError(400, "InvalidSource", `source must be one of ${SOURCE_NAMES.join(", ")}.`);
    }
    registration.source = input.source as SourceName;
  }
  return registration;
}

/** Refuses a new link where it would be unsafe; see the module comment. */
function refusal(svc: Services, row: TenantRow | undefined, reg: Registration): ApiError | undefined {
  if (!row) return undefined;
  if (row.purgeId) {
    return new ApiError(409, "PurgeInProgress", "The tenant's data is being purged; register it again once GET /api/tenants/{tenantId}/purge says done.");
  }
  if ((row.status === "active" || row.status === "reconsent-required") && !reg.relink) {
    return new ApiError(
      409,
      "RelinkRequired",
      `The tenant is ${row.status}. Send "relink": true to replace its consent link; whoever consents through the new link becomes the account alerts are collected with.`,
    );
  }
  const wasActive = Boolean(row.consentedAt);
  const currentCloud = row.cloud ?? svc.config.defaultCloud;
  if (reg.cloud !== undefined && wasActive && reg.cloud !== currentCloud) {
    return new ApiError(
      400,
      "CloudImmutable",
      `The tenant has been active in cloud ${currentCloud}; its cloud cannot change. Offboard it and register it under a new deployment if it really moved.`,
    );
  }
  return undefined;
}

/** POST /api/tenants: creates the tenant (201) or refreshes its consent link (200). */
export async function registerTenant(svc: Services, reg: Registration, log: Logger): Promise<RegisterResult> {
  const { tenantId } = reg;
  const tenants = svc.storage.table(TABLES.tenants);
  let existing = await getTenant(tenants, tenantId);
  const refused = refusal(svc, existing, reg);
  if (refused) throw refused;

  const cloud = reg.cloud ?? existing?.cloud;
  const endpoints = endpointsFor(svc.config, cloud);
  // Compared by the clouds' own Entra instances (gcc shares the commercial one), not by overrides.
  const appAuthority = CLOUD_PRESETS[svc.config.defaultCloud].authorityHost;
  const tenantAuthority = CLOUD_PRESETS[cloud ?? svc.config.defaultCloud].authorityHost;
  if (svc.config.credential.kind === "managed-identity" && tenantAuthority !== appAuthority) {
    throw new ApiError(
      400,
      "CloudNotSupported",
      `The tenant's cloud (${cloud}) signs in at ${tenantAuthority}, the app registration at ${appAuthority}: a managed identity's federated credential does not cross clouds. Onboard this tenant from a deployment in its own cloud (docs/deploy.md).`,
    );
  }
  const mode = reg.mode ?? svc.config.onboarding.defaultMode;
  const discovered = await discoverTenant(endpoints, tenantId);
  if (!discovered.ok && discovered.permanent) {
    log.warn(`tenant.registration-refused tenantId=${tenantId} code=${discovered.code}`);
    throw new ApiError(
      422,
      "TenantNotFound",
      `Microsoft Entra ID does not know the tenant ${tenantId} (${discovered.code}). Check the tenant ID${cloud ? ` and the cloud (${cloud})` : ""}.`,
    );
  }
  if (!discovered.ok) log.warn(`tenant.discovery-unavailable tenantId=${tenantId} code=${discovered.code}`);

  const linkSecret = randomBytes(32).toString("base64url");
  const expiresAt = new Date(svc.now().getTime() + svc.config.consentLinkTtlMs).toISOString();
  const source = reg.source ?? existing?.source ?? svc.config.defaultSource;
  const link = { consentLinkHash: sha256(linkSecret), consentLinkExpiresAt: expiresAt, linkMode: mode, linkSource: source };

  for (let attempt = 0; attempt < 5; attempt++) {
    if (attempt > 0) {
      existing = await getTenant(tenants, tenantId);
      const changed = refusal(svc, existing, reg);
      if (changed) throw changed;
    }
    let row: TenantEntity;
    if (!existing) {
      row = {
        partitionKey: TENANT_PARTITION,
        rowKey: tenantId,
        displayName: reg.displayName ?? tenantId,
        status: "pending",
        generation: randomBytes(12).toString("base64url"),
        source,
        ...link,
      };
      if (reg.cloud) row.cloud = reg.cloud;
      try {
        await tenants.createEntity(row);
      } catch (err) {
        if (isStatus(err, 409)) continue; // created concurrently: refresh its link instead
        throw err;
      }
    } else {
      const patch: Partial<TenantEntity> = { ...link };
      // A link for delegated consent ends a pending application-mode verification.
      if (mode !== "application" && existing.consentVerifyUntil) Object.assign(patch, { consentVerifyUntil: "", consentVerifyCode: "" });
      if (reg.displayName !== undefined) patch.displayName = reg.displayName;
      if (reg.cloud !== undefined) patch.cloud = reg.cloud;
      if (existing.status === "offboarded") patch.status = "pending";
      if (!(await patchTenant(tenants, tenantId, existing.etag, patch))) continue;
      row = { ...existing, ...patch };
    }
    const url = new URL(`${svc.config.publicBaseUrl}/api/consent/start`);
    url.searchParams.set("tenant", tenantId);
    url.searchParams.set("link", linkSecret);
    log.info(`tenant.registered tenantId=${tenantId} status=${row.status} mode=${mode} source=${source} new=${!existing} relink=${reg.relink}`);
    return { created: !existing, body: { ...toStatus(row), consentUrl: url.href, consentUrlExpiresAt: expiresAt } };
  }
  throw new ApiError(409, "Conflict", "The tenant changed concurrently; try again.");
}
