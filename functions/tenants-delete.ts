import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { offboardTenant } from "../shared/onboarding/offboard.js";
import { ApiError, api, json, parseTenantId } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/**
 * DELETE /api/tenants/{tenantId}: offboard. Delegated: 204, the refresh token is deleted
 * from Key Vault. Application mode: 200 with how the customer ends the access (the app
 * cannot revoke an admin consent).
 */
export async function tenantsDelete(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const tenantId = parseTenantId(request.params.tenantId); // before any storage call
    const result = await offboardTenant(await services(), tenantId, loggerFrom(context));
    if (!result) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
    return result.mode === "application" ? json(200, result) : { status: 204 };
  });
}

app.http("tenants-delete", {
  route: "tenants/{tenantId}",
  methods: ["DELETE"],
  authLevel: "function",
  handler: tenantsDelete,
});
