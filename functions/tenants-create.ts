import type { HttpRequest, InvocationContext } from "@azure/functions";
import { operatorHttp } from "../shared/operator/route.js";
import { parseRegistration, registerTenant } from "../shared/onboarding/register.js";
import { api, json, readJsonObject } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/** POST /api/tenants: register a customer tenant and get its consent link. */
export async function tenantsCreate(request: HttpRequest, context: InvocationContext) {
  return api(context, async () => {
    // Validated before any storage call: bad input is a 400 even when storage is down.
    const registration = parseRegistration(await readJsonObject(request));
    const result = await registerTenant(await services(), registration, loggerFrom(context));
    return json(result.created ? 201 : 200, result.body);
  });
}

operatorHttp("tenants-create", {
  route: "tenants",
  methods: ["POST"],
  role: "Operator",
  audit: { action: "tenant.register", tenant: async (request) => parseRegistration(await readJsonObject(request)).tenantId },
  handler: tenantsCreate,
});
