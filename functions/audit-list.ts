import type { HttpRequest, InvocationContext } from "@azure/functions";
import { listAudit } from "../shared/operator/audit.js";
import { operatorHttp } from "../shared/operator/route.js";
import { json } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";

/** GET /api/audit (Admin): the audit trail, newest first. */
export async function auditList(request: HttpRequest, _context: InvocationContext) {
  const svc = await services();
  return json(200, await listAudit(svc.storage.table(TABLES.audit), request.query));
}

operatorHttp("audit-list", {
  route: "audit",
  methods: ["GET"],
  role: "Admin",
  handler: auditList,
});
