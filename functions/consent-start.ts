import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { startConsent } from "../shared/onboarding/consent.js";
import { safePage } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/** GET /api/consent/start: the customer's admin opens the consent link; redirects to Entra ID. */
export async function consentStart(request: HttpRequest, context: InvocationContext) {
  const log = loggerFrom(context);
  return safePage(log, async () => startConsent(await services(), request.query, log));
}

app.http("consent-start", {
  route: "consent/start",
  methods: ["GET"],
  authLevel: "anonymous",
  handler: consentStart,
});
