import { randomBytes } from "node:crypto";
import { CLOUDS, type Cloud } from "../platform/config.js";
import { ApiError, parseTenantId } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES } from "../platform/storage.js";
import { sha256 } from "./consent.js";
import { getTenant, patchTenant, TENANT_PARTITION, type TenantEntity, type TenantStatus, toStatus } from "./tenants.js";

/**
 * Registration: an operator registers a customer tenant (POST /api/tenants) and gets a
 * consent link. Only the SHA-256 of the link's secret part is stored.
 */

export interface RegisterResult {
  created: boolean;
  body: TenantStatus & { consentUrl: string; consentUrlExpiresAt: string };
}

/** POST /api/tenants: creates the tenant (201) or refreshes its consent link (200). */
export async function registerTenant(svc: Services, input: Record<string, unknown>, log: Logger): Promise<RegisterResult> {
  const tenantId = parseTenantId(input.tenantId);
  const displayName = input.displayName ?? tenantId;
  if (typeof displayName !== "string" || displayName.trim() === "" || displayName.length > 256) {
    throw new ApiError(400, "InvalidDisplayName", "displayName must be a non-empty string of at most 256 characters.");
  }
  if (input.cloud !== undefined && !CLOUDS.includes(input.cloud as Cloud)) {
    throw new ApiError(400, "InvalidCloud", `cloud must be one of ${CLOUDS.join(", ")}.`);
  }
  const unknownFields = Object.keys(input).filter((k) => !["tenantId", "displayName", "cloud"].includes(k));
  if (unknownFields.length > 0) {
    throw new ApiError(400, "UnknownField", `Unknown field(s): ${unknownFields.join(", ")}.`);
  }
  const tenants = svc.storage.table(TABLES.tenants);
  const linkSecret = randomBytes(32).toString("base64url");
  const expiresAt = new Date(svc.now().getTime() + svc.config.consentLinkTtlMs).toISOString();
  const link = { consentLinkHash: sha256(linkSecret), consentLinkExpiresAt: expiresAt };

  for (let attempt = 0; attempt < 5; attempt++) {
    const existing = await getTenant(tenants, tenantId);
    let row: TenantEntity;
    if (!existing) {
      row = {
        partitionKey: TENANT_PARTITION,
        rowKey: tenantId,
        displayName: displayName.trim(),
        status: "pending",
        generation: randomBytes(12).toString("base64url"),
        ...link,
      };
      if (input.cloud) row.cloud = input.cloud as Cloud;
      try {
        await tenants.createEntity(row);
      } catch (err) {
        if (isStatus(err, 409)) continue; // created concurrently: refresh its link instead
        throw err;
      }
    } else {
      const patch: Partial<TenantEntity> = { ...link };
      if (input.displayName !== undefined) patch.displayName = displayName.trim();
      if (input.cloud !== undefined) patch.cloud = input.cloud as Cloud;
      if (existing.status === "offboarded") patch.status = "pending";
      if (!(await patchTenant(tenants, tenantId, existing.etag, patch))) continue;
      row = { ...existing, ...patch };
    }
    const url = new URL(`${svc.config.publicBaseUrl}/api/consent/start`);
    url.searchParams.set("tenant", tenantId);
    url.searchParams.set("link", linkSecret);
    log.info(`tenant.registered tenantId=${tenantId} status=${row.status} new=${!existing}`);
    return { created: !existing, body: { ...toStatus(row), consentUrl: url.href, consentUrlExpiresAt: expiresAt } };
  }
  throw new ApiError(409, "Conflict", "The tenant changed concurrently; try again.");
}
