import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp } from "../shared/operator/route.js";
import { parseTenantPatch, patchTenantSettings } from "../shared/operator/tenant-actions.js";
import { syncRowOf, tenantHealthStatus } from "../shared/operator/tenant-status.js";
import { api, json, parseTenantId, readJsonObject } from "../shared/platform/http.js";
import { loggerFrom, services, unensuredServices } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";

/** PATCH /api/tenants/{tenantId}: operator settings of a tenant (its delivery destinations, its alert source). */
export async function tenantsPatch(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const tenantId = parseTenantId(request.params.tenantId);
    const known = unensuredServices().config.destinations.map((d) => d.name);
    const patch = parseTenantPatch(await readJsonObject(request), known);
    const svc = await services();
    const row = await patchTenantSettings(svc, tenantId, patch, loggerFrom(context));
    const sync = await syncRowOf(svc.storage.table(TABLES.syncState), row, svc.config);
    return json(200, tenantHealthStatus(svc.config, row, sync, svc.now()));
  });
}

// It changes where a tenant's alerts are delivered (and from which source): an Admin's.
operatorHttp("tenants-patch", {
  route: "tenants/{tenantId}",
  methods: ["PATCH"],
  role: "Admin",
  audit: { action: "tenant.settings", tenant: (request) => parseTenantId(request.params.tenantId) },
  handler: tenantsPatch,
});
