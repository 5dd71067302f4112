import type { HttpResponseInit } from "@azure/functions";
import { page, redirect } from "../platform/http.js";
import type { ConsentOutcome } from "./consent.js";

/**
 * The pages the customer's admin sees, one per consent outcome. Each tells the reader what
 * they can do: open the link again (only where that can help), or ask their service
 * provider (and what to tell them).
 */

const TRY_AGAIN = "Open the consent link you received again to retry. Nothing was stored.";
const ASK_PROVIDER = "Opening the link again will not help. Nothing was stored.";
const REVOKE_APP =
  "To end this access at any time, delete the service's enterprise application in Microsoft Entra ID (Enterprise applications > the service's app > Properties > Delete).";

export function consentPage(outcome: ConsentOutcome): HttpResponseInit {
  switch (outcome.kind) {
    case "redirect":
      return redirect(outcome.location);
    case "completed":
      return page(200, "Consent complete", [
        `${outcome.displayName} is now connected. Microsoft Defender alerts will be collected automatically.`,
        "You can close this window.",
      ]);
    case "app-completed":
      return page(200, "Consent complete", [
        `${outcome.displayName} is now connected with the application permission Alert.Read.All of Microsoft Defender for Endpoint (WindowsDefenderATP). Microsoft Defender alerts will be collected automatically; no user account or password is involved.`,
        REVOKE_APP,
        "You can close this window.",
      ]);
    case "app-pending":
      return page(202, "Consent recorded", [
        `Consent for ${outcome.displayName} was recorded. Access is confirmed automatically, usually within minutes, while Microsoft makes the new permission available. You do not need to do anything more.`,
        REVOKE_APP,
        "You can close this window.",
      ]);
    case "app-permission-missing":
      return page(403, "The application permission to read alerts is missing", [
        `Consent was recorded, but the Microsoft Defender for Endpoint API refuses the service's own access: the application permission ${outcome.permission} is missing.`,
        "An administrator must grant admin consent to it (Enterprise applications > the service's app > Permissions > Grant admin consent), or ask your service provider for a new link. Nothing was stored.",
      ]);
    case "tenant-mismatch":
      return page(403, "Consent given for another organisation", [
        "The consent response names another organisation than the one this link was made for.",
        "Sign in with an administrator account of the invited organisation.",
        TRY_AGAIN,
      ]);
    case "link-incomplete":
      return page(400, "Incomplete consent link", ["The link is incomplete. Copy the whole link you received and open it again."]);
    case "link-invalid":
      return page(404, "Consent link not valid", [
        "This consent link is not valid: it may be mistyped, already used, or replaced by a newer link.",
        "If consent is still needed, ask your service provider for a new link.",
      ]);
    case "link-expired":
      return page(410, "Consent link expired", ["This consent link has expired. Ask your service provider for a new link."]);
    case "link-wrong":
      return page(400, "This consent link is wrong", [
        `Microsoft does not know the organisation this link was made for (${outcome.code}): the link names a wrong tenant ID.`,
        "Ask your service provider to check your organisation's tenant ID and send you a new link.",
        ASK_PROVIDER,
      ]);
    case "tenant-refused":
      return page(400, "Microsoft refused consent for your organisation", [
        `Microsoft Entra ID refused this sign-in for your organisation (${outcome.code}).`,
        "Ask your service provider for help and tell them this code.",
        ASK_PROVIDER,
      ]);
    case "provider-config":
      return page(500, "Your service provider must fix its configuration", [
        `Microsoft Entra ID rejected your service provider's own app configuration (${outcome.code}). Nothing is wrong on your side.`,
        "Tell your service provider this code. Once they have fixed their configuration, they will send you a new link.",
        "Nothing was stored.",
      ]);
    case "response-incomplete":
      return page(400, "Sign-in response incomplete", [
        "The response from Microsoft did not include the expected state value.",
        TRY_AGAIN,
      ]);
    case "response-unknown":
      return page(400, "Sign-in response not recognised", [
        "This sign-in response is unknown or was already used. Responses can only be used once.",
        TRY_AGAIN,
      ]);
    case "state-expired":
      return page(400, "Sign-in took too long", ["The sign-in started too long ago and has expired.", TRY_AGAIN]);
    case "declined":
      return page(400, "Consent was not given", [
        "Microsoft reported that consent was declined or is still required.",
        "To connect your organisation, open the consent link again, sign in as an administrator and choose Accept.",
      ]);
    case "signin-failed":
      return page(400, "Sign-in did not complete", [`Microsoft reported an error during sign-in (${outcome.code}).`, TRY_AGAIN]);
    case "token-refused":
      return page(400, "Sign-in could not be completed", [
        "Microsoft did not accept the sign-in response, or returned an invalid answer.",
        TRY_AGAIN,
      ]);
    case "wrong-tenant":
      return page(403, "Signed in to the wrong organisation", [
        "The account that signed in does not belong to the organisation this link was made for.",
        "Sign in with an administrator account of the invited organisation.",
        TRY_AGAIN,
      ]);
    case "scope-not-granted":
      return page(403, "Permission to read alerts was not granted", [
        `The consent did not grant the permission the service needs: ${outcome.missing}, the Microsoft Defender for Endpoint (WindowsDefenderATP) permission to read alerts.`,
        "An administrator must grant it when consenting. If the consent screen did not list it, ask your service provider to add it to their app. Nothing was stored.",
      ]);
    case "no-refresh-token":
      return page(400, "Offline access was not granted", [
        "Microsoft did not issue a refresh token, so alerts could not be collected while nobody is signed in.",
        "Make sure the consent includes offline access (Maintain access to data you have given it access to).",
        TRY_AGAIN,
      ]);
    case "defender-forbidden":
      return page(403, "The account cannot read Defender alerts", [
        "Consent worked, but the Microsoft Defender for Endpoint API refused to list alerts for this account.",
        'The account needs the Defender "View Data" permission (Security operations) on all device groups, and the app needs the WindowsDefenderATP Alert.Read permission.',
        "Grant these, then open the consent link again. Nothing was stored.",
      ]);
    case "defender-unavailable":
      return page(502, "Microsoft Defender did not answer", ["The Defender API could not be reached to confirm access.", TRY_AGAIN]);
    case "link-changed":
      return page(409, "Consent link no longer valid", [
        "The organisation was offboarded, or a newer consent link replaced this one, while you were signing in.",
        "Nothing was stored. Ask your service provider for a new link if consent is still needed.",
      ]);
  }
}
