import { randomBytes } from "node:crypto";
import { requestStop } from "../collection/sync-state.js";
import { ApiError, parseTenantId } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { getTenant, patchTenant, type TenantPatch } from "./tenants.js";

/**
 * DELETE /api/tenants/{id}: offboards the tenant and soft-deletes its refresh token. `extra`
 * lands in the same conditional write (a purge marks the tenant with its purge ID).
 */
export async function offboardTenant(svc: Services, tenantIdParam: string, log: Logger, extra: TenantPatch = {}): Promise<boolean> {
  const tenantId = parseTenantId(tenantIdParam);
  const tenants = svc.storage.table(TABLES.tenants);
  for (let attempt = 0; attempt < 5; attempt++) {
    const row = await getTenant(tenants, tenantId);
    if (!row) return false;
    const patch = {
      status: "offboarded" as const,
      generation: randomBytes(12).toString("base64url"),
      consentLinkHash: "",
      consentLinkExpiresAt: "",
      refreshTokenVersion: "",
      ...extra,
    };
    // The row changes first, so a pull that is already running cannot write a token back.
    if (await patchTenant(tenants, tenantId, row.etag, patch)) {
      // A running pull stops at its next checkpoint; its lease is left to expire.
      await requestStop(svc.storage.table(TABLES.syncState), tenantId, "defender", svc.now());
      await svc.vault.remove(tenantId);
      log.info(`tenant.status tenantId=${tenantId} status=offboarded`);
      return true;
    }
  }
  throw new ApiError(409, "Conflict", "The tenant changed concurrently; try again.");
}
