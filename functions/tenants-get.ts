import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { ApiError, api, json, parseTenantId } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { getTenant, toStatus } from "../shared/onboarding/tenants.js";

/** GET /api/tenants/{tenantId}: one tenant's status, or 404. */
export async function tenantsGet(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const tenantId = parseTenantId(request.params.tenantId);
    const row = await getTenant((await services()).storage.table(TABLES.tenants), tenantId);
    if (!row) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
    return json(200, toStatus(row));
  });
}

app.http("tenants-get", {
  route: "tenants/{tenantId}",
  methods: ["GET"],
  authLevel: "function",
  handler: tenantsGet,
});
