import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { api, json } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { listTenants, toStatus } from "../shared/onboarding/tenants.js";

/** GET /api/tenants: every tenant's status and health. */
export async function tenantsList(_request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const rows = await listTenants((await services()).storage.table(TABLES.tenants));
    return json(200, { tenants: rows.map(toStatus) });
  });
}

app.http("tenants-list", {
  route: "tenants",
  methods: ["GET"],
  authLevel: "function",
  handler: tenantsList,
});
