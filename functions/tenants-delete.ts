import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { offboardTenant } from "../shared/onboarding/offboard.js";
import { ApiError, api, parseTenantId } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/** DELETE /api/tenants/{tenantId}: offboard; the refresh token is deleted from Key Vault. */
export async function tenantsDelete(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const tenantId = parseTenantId(request.params.tenantId); // before any storage call
    const found = await offboardTenant(await services(), tenantId, loggerFrom(context));
    if (!found) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
    return { status: 204 };
  });
}

app.http("tenants-delete", {
  route: "tenants/{tenantId}",
  methods: ["DELETE"],
  authLevel: "function",
  handler: tenantsDelete,
});
