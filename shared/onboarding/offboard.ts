import { randomBytes } from "node:crypto";
import { requestStop } from "../collection/sync-state.js";
import { ApiError, parseTenantId } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { getTenant, patchTenant } from "./tenants.js";

/** DELETE /api/tenants/{id}: offboards the tenant and soft-deletes its refresh token. */
export async function offboardTenant(svc: Services, tenantIdParam: string, log: Logger): Promise<boolean> {
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
    };
    // The row changes first, so a pull that is already running cannot write a token back.
    if (await patchTenant(tenants, tenantId, row.etag, patch)) {
      // A running pull stops at its next checkpoint; its lease is left to expire.
      for (const source of ["defender", "graph"]) await requestStop(svc.storage.table(TABLES.syncState), tenantId, source, svc.now());
      await svc.vault.remove(tenantId);
      log.info(`tenant.status tenantId=${tenantId} status=offboarded`);
      return true;
    }
  }
  throw new ApiError(409, "Conflict", "The tenant changed concurrently; try again.");
}
