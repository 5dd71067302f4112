import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp } from "../shared/operator/route.js";
import { allSyncRows, tenantHealthStatus } from "../shared/operator/tenant-status.js";
import { api, json } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { listTenants } from "../shared/onboarding/tenants.js";

/** GET /api/tenants: every tenant's status and pull health. */
export async function tenantsList(_request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    const svc = await services();
    const [rows, sync] = await Promise.all([
      listTenants(svc.storage.table(TABLES.tenants)),
      allSyncRows(svc.storage.table(TABLES.syncState)),
    ]);
    const now = svc.now();
    return json(200, { tenants: rows.map((row) => tenantHealthStatus(svc.config, row, sync.get(`${row.rowKey}|${row.source ?? svc.config.defaultSource}`), now)) });
  });
}

operatorHttp("tenants-list", {
  route: "tenants",
  methods: ["GET"],
  role: "Reader",
  handler: tenantsList,
});
