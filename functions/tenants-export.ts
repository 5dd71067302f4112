import type { HttpRequest, InvocationContext } from "@azure/functions";
import { exportAlerts, parseExportQuery } from "../shared/operator/export.js";
import { type OperatorCall, operatorHttp } from "../shared/operator/route.js";
import { parseTenantId } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/**
 * GET /api/tenants/{tenantId}/export: up to EXPORT_PAGE_ALERTS alerts as gzip'd NDJSON, then
 * `{"next":"<token>"}` when more remain (`?continuationToken=` resumes). Audited; the entry
 * is completed when the stream ends, with the number of alerts sent.
 */
export async function tenantsExport(request: HttpRequest, context: InvocationContext, call: OperatorCall) {
  const tenantId = parseTenantId(request.params.tenantId);
  const result = await exportAlerts(await services(), tenantId, request.query, loggerFrom(context));
  call.completesAuditItself = true;
  void result.done.then(async (outcome) => {
    call.audit?.note({ alerts: outcome.alerts, more: outcome.more });
    await call.audit?.complete(outcome.error ? "failed" : "succeeded", 200);
  });
  return {
    status: 200,
    body: result.stream,
    headers: {
      "Content-Type": "application/x-ndjson",
      "Content-Encoding": "gzip",
      "Content-Disposition": `attachment; filename="alerts-${tenantId}.ndjson.gz"`,
      "Cache-Control": "no-store",
    },
  };
}

operatorHttp("tenants-export", {
  route: "tenants/{tenantId}/export",
  methods: ["GET"],
  role: "Operator",
  audit: {
    action: "alerts.export",
    tenant: (request) => {
      parseExportQuery(request.query);
      return parseTenantId(request.params.tenantId);
    },
  },
  handler: tenantsExport,
});
