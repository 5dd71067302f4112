import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { ApiError, api, json, parseTenantId } from "../shared/platform/http.js";
import { enqueuePull } from "../shared/collection/queue.js";
import { services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { getTenant } from "../shared/onboarding/tenants.js";

/** POST /api/tenants/{tenantId}/pull: queue a pull now (202). */
export async function tenantsPull(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const tenantId = parseTenantId(request.params.tenantId);
    const svc = await services();
    const row = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
    if (!row) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
    if (row.status !== "active") {
      throw new ApiError(409, "TenantNotActive", `The tenant is ${row.status}; only active tenants can be pulled.`);
    }
    await enqueuePull(svc, { tenantId, reason: "manual" });
    return json(202, { tenantId, queued: true });
  });
}

app.http("tenants-pull", {
  route: "tenants/{tenantId}/pull",
  methods: ["POST"],
  authLevel: "function",
  handler: tenantsPull,
});
