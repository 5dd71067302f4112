import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp, type OperatorCall } from "../shared/operator/route.js";
import { offboardTenant } from "../shared/onboarding/offboard.js";
import { requestPurge } from "../shared/operator/purge.js";
import { ApiError, api, json, parseTenantId } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/**
 * DELETE /api/tenants/{tenantId}: offboard. Delegated: 204, the refresh token is deleted
 * from Key Vault. Application mode: 200 with how the customer ends the access (the app
 * cannot revoke an admin consent). `?purge=true` also deletes all of the tenant's data, by a
 * queued job: 202 `{purgeId}`.
 */
export async function tenantsDelete(request: HttpRequest, context: InvocationContext, call?: OperatorCall) {
  return api(context, async () => {
    const tenantId = parseTenantId(request.params.tenantId); // before any storage call
    if (wantsPurge(request)) {
      const purge = await requestPurge(await services(), tenantId, call?.identity.oid ?? "", loggerFrom(context));
      call?.audit?.note({ purgeId: purge.purgeId });
      return json(202, { tenantId, purgeId: purge.purgeId, state: purge.state });
    }
    const result = await offboardTenant(await services(), tenantId, loggerFrom(context));
    if (!result) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
    return result.mode === "application" ? json(200, result) : { status: 204 };
  });
}

/** `purge=true` or `purge=false` (or absent); anything else is a 400. */
function wantsPurge(request: HttpRequest): boolean {
  const unknown = [...request.query.keys()].filter((k) => k !== "purge");
  if (unknown.length > 0) throw new ApiError(400, "UnknownParameter", `Unknown parameter(s): ${unknown.join(", ")}.`);
  const value = request.query.get("purge");
  if (value === null || value === "false") return false;
  if (value === "true") return true;
  throw new ApiError(400, "InvalidPurge", "purge must be true or false.");
}

operatorHttp("tenants-delete", {
  route: "tenants/{tenantId}",
  methods: ["DELETE"],
  role: "Admin",
  audit: {
    action: (request) => (request.query.get("purge") === "true" ? "tenant.purge" : "tenant.offboard"),
    tenant: (request) => {
      wantsPurge(request);
      return parseTenantId(request.params.tenantId);
    },
  },
  handler: tenantsDelete,
});
