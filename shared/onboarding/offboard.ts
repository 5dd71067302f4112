import { randomBytes } from "node:crypto";
import { requestStop } from "../collection/sync-state.js";
import { forgetAccessToken } from "../collection/tokens.js";
import type { TenantMode } from "../platform/config.js";
import { ApiError, parseTenantId } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { getTenant, patchTenant, type TenantPatch, tenantMode } from "./tenants.js";

/**
 * What an operator must tell an application-mode customer: offboarding stops the app from
 * asking for tokens, but the consent lives in the customer's tenant until they delete it.
 */
export const APPLICATION_ACCESS_ENDS =
  "The app no longer requests tokens for this tenant, but its admin consent stays valid in the customer's tenant until the customer deletes the enterprise application.";
export const APPLICATION_REVOKE_STEPS = [
  "Sign in to the Microsoft Entra admin center (https://entra.microsoft.com) as at least a Cloud Application Administrator of the customer tenant.",
  "Go to Entra ID > Enterprise apps > All applications and search for the MSSP's app by its name or application (client) ID.",
  "Open it, select Properties, then Delete, and confirm. This removes the app's service principal and its Alert.Read.All permission; from then on no token is issued to it in that tenant.",
];

export interface OffboardResult {
  tenantId: string;
  status: "offboarded";
  mode: TenantMode;
  /** Application mode: how access really ends (the app cannot revoke an admin consent). */
  accessEnds?: string;
  revokeSteps?: string[];
}

/**
 * DELETE /api/tenants/{id}: offboards the tenant. A delegated tenant's refresh token is
 * soft-deleted. An application-mode tenant has nothing stored; from now on the app refuses
 * to request tokens for it (see AppTokenProvider), and the answer and the log say that
 * access ends only when the customer deletes the enterprise application. Either way the
 * row stays (status `offboarded`); a running pull stops at its next checkpoint.
 * Returns undefined for an unknown tenant. `extra` lands in the same conditional write (a
 * purge marks the tenant with its purge ID).
 */
export async function offboardTenant(svc: Services, tenantIdParam: string, log: Logger, extra: TenantPatch = {}): Promise<OffboardResult | undefined> {
  const tenantId = parseTenantId(tenantIdParam);
  const tenants = svc.storage.table(TABLES.tenants);
  for (let attempt = 0; attempt < 5; attempt++) {
    const row = await getTenant(tenants, tenantId);
    if (!row) return undefined;
    const mode = tenantMode(row);
    const patch = {
      status: "offboarded" as const,
      generation: randomBytes(12).toString("base64url"),
      consentLinkHash: "",
      consentLinkExpiresAt: "",
      refreshTokenVersion: "",
      consentVerifyUntil: "",
      consentVerifyCode: "",
      ...extra,
    };
    // The row changes first, so a pull that is already running cannot write a token back.
    if (await patchTenant(tenants, tenantId, row.etag, patch)) {
      // A running pull stops at its next checkpoint; its lease is left to expire.
      for (const source of ["defender", "graph"]) await requestStop(svc.storage.table(TABLES.syncState), tenantId, source, svc.now());
      forgetAccessToken(tenantId);
      // Also in application mode: a delegated token of an earlier consent may still be there.
      await svc.vault.remove(tenantId);
      log.info(`tenant.status tenantId=${tenantId} status=offboarded`);
      if (mode === "application") {
        log.warn(`tenant.offboarded tenantId=${tenantId} mode=application access=until-customer-deletes-enterprise-application`);
        return { tenantId, status: "offboarded", mode, accessEnds: APPLICATION_ACCESS_ENDS, revokeSteps: APPLICATION_REVOKE_STEPS };
      }
      return { tenantId, status: "offboarded", mode };
    }
  }
  throw new ApiError(409, "Conflict", "The tenant changed concurrently; try again.");
}
