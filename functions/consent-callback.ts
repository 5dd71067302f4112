import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { completeConsent, parseCallback } from "../shared/onboarding/consent.js";
import { consentPage } from "../shared/onboarding/consent-pages.js";
import { safePage } from "../shared/platform/http.js";
import { loggerFrom, services } from "../shared/platform/services.js";

/** GET /api/consent/callback: Entra ID redirects here with the authorization code. */
export async function consentCallback(request: HttpRequest, context: InvocationContext) {
  const log = loggerFrom(context);
  return safePage(log, async () => {
    const input = parseCallback(new URL(request.url));
    if ("kind" in input) return consentPage(input);
    return consentPage(await completeConsent(await services(), input, log));
  });
}

app.http("consent-callback", {
  route: "consent/callback",
  methods: ["GET"],
  authLevel: "anonymous",
  handler: consentCallback,
});
