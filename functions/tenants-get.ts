import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp } from "../shared/operator/route.js";
import { tenantHealthStatus, syncRowOf } from "../shared/operator/tenant-status.js";
import { ApiError, api, json, parseTenantId } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { getTenant } from "../shared/onboarding/tenants.js";

/** GET /api/tenants/{tenantId}: one tenant's status and pull health, or 404. */
export async function tenantsGet(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const tenantId = parseTenantId(request.params.tenantId);
    const svc = await services();
    const row = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
    if (!row) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
    const sync = await syncRowOf(svc.storage.table(TABLES.syncState), row, svc.config);
    return json(200, tenantHealthStatus(svc.config, row, sync, svc.now()));
  });
}

operatorHttp("tenants-get", {
  route: "tenants/{tenantId}",
  methods: ["GET"],
  role: "Reader",
  handler: tenantsGet,
});
