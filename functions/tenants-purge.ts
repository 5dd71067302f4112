import type { HttpRequest, InvocationContext } from "@azure/functions";
import { latestPurge } from "../shared/operator/purge.js";
import { operatorHttp } from "../shared/operator/route.js";
import { json, parseTenantId } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** GET /api/tenants/{tenantId}/purge: the latest purge's state, counts and progress, or 404. */
export async function tenantsPurge(request: HttpRequest, _context: InvocationContext) {
  const tenantId = parseTenantId(request.params.tenantId);
  return json(200, await latestPurge(await services(), tenantId));
}

operatorHttp("tenants-purge", {
  route: "tenants/{tenantId}/purge",
  methods: ["GET"],
  role: "Reader",
  handler: tenantsPurge,
});
