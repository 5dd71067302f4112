import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp } from "../shared/operator/route.js";
import { queuePull } from "../shared/operator/tenant-actions.js";
import { api, json, parseTenantId } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** POST /api/tenants/{tenantId}/pull: queue a pull now (202). */
export async function tenantsPull(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const tenantId = parseTenantId(request.params.tenantId);
    return json(202, await queuePull(await services(), tenantId));
  });
}

operatorHttp("tenants-pull", {
  route: "tenants/{tenantId}/pull",
  methods: ["POST"],
  role: "Operator",
  audit: { action: "tenant.pull", tenant: (request) => parseTenantId(request.params.tenantId) },
  handler: tenantsPull,
});
