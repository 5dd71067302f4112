import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp } from "../shared/operator/route.js";
import { parseLookback, queueReconcile } from "../shared/operator/tenant-actions.js";
import { api, json, parseTenantId, readJsonObject } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** POST /api/tenants/{tenantId}/reconcile: sweep a lookback of the operator's choice now (202). */
export async function tenantsReconcile(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const tenantId = parseTenantId(request.params.tenantId);
    const lookbackHours = parseLookback(await readJsonObject(request));
    return json(202, await queueReconcile(await services(), tenantId, lookbackHours));
  });
}

operatorHttp("tenants-reconcile", {
  route: "tenants/{tenantId}/reconcile",
  methods: ["POST"],
  role: "Operator",
  audit: { action: "tenant.reconcile", tenant: (request) => parseTenantId(request.params.tenantId) },
  handler: tenantsReconcile,
});
