import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { parseConsentLink, startConsent } from "../shared/onboarding/consent.js";
import { consentPage } from "../shared/onboarding/consent-pages.js";
import { safePage } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/** GET /api/consent/start: the customer's admin opens the consent link; redirects to Entra ID. */
export async function consentStart(request: HttpRequest, context: InvocationContext) {
  const log = loggerFrom(context);
  return safePage(log, async () => {
    const link = parseConsentLink(request.query);
    if (!link) return consentPage({ kind: "link-incomplete" });
    return consentPage(await startConsent(await services(), link, log));
  });
}

app.http("consent-start", {
  route: "consent/start",
  methods: ["GET"],
  authLevel: "anonymous",
  handler: consentStart,
});
