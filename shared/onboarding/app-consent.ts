import { randomBytes } from "node:crypto";
import { enqueuePull } from "../collection/queue.js";
import { probeSource, type SourceAccess, sourceAccess } from "../collection/sources/index.js";
import { clientCredentialsToken, forgetAccessToken, TokenFailure } from "../collection/tokens.js";
import { type CloudEndpoints, endpointsFor } from "../platform/config.js";
import { recordClientCredential, reportCredentialFailure } from "../platform/health.js";
import type { Logger, Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { type ConsentOutcome, type ConsentStateEntity, checkLink, failed, linkedTenant } from "./consent.js";
import { CLEARED_ERROR, getTenant, patchTenant, type TenantRow, tenantMode } from "./tenants.js";

/**
 * Application mode: the customer's admin grants the app's own permission (`Alert.Read.All`)
 * at Entra's admin consent endpoint, and the app reads alerts with client credentials.
 * Nothing is stored for the tenant: no refresh token, no secret.
 *
 * The admin consent callback (`admin_consent=True&tenant=...&scope=...&state=...`) is
 * unsigned, and Microsoft says never to trust its `tenant`. So the callback only ends the
 * sign-in: the state is consumed as in delegated mode (single use, expiry, bound to the
 * invited tenant), a `tenant` that names another organisation is refused, and access is
 * proved from our side: a client-credentials token from the invited tenant's own token
 * endpoint (never `common`, `organizations` or the callback's value), not decoded, and a
 * `GET /api/alerts?$top=1` with it.
 *
 * Consent propagates for seconds to about a minute (AADSTS65001, AADSTS7000229, tokens
 * without roles, so 401/403 from the API). The callback retries with backoff for
 * APP_CONSENT_RETRY_SECONDS; if access is still not proved, the tenant stays as it is
 * (pending, or active in its old mode) with `lastError.code = ConsentPropagating` and
 * `consentVerifyUntil` = now + APP_CONSENT_VERIFY_HOURS, and the page says the consent was
 * recorded. The timer then queues a verification probe on every run until that time (see
 * verifyPendingConsent); the first success activates the tenant and queues its first pull.
 * At the deadline `lastError.code` becomes AppPermissionMissing (still 401/403) or the last
 * token error's code.
 */

/** Entra's answers while an admin consent is still propagating: worth another try. */
const PROPAGATING = new Set(["AADSTS65001", "AADSTS7000229", "AADSTS700016"]);
/** Waits between tries inside the callback, cut to APP_CONSENT_RETRY_SECONDS in total. */
const BACKOFF_MS = [2_000, 4_000, 8_000, 16_000, 30_000];

type Attempt =
  | { kind: "ok" }
  /** Not proved yet: consent propagating (Forbidden is a 401/403 of the probe). */
  | { kind: "propagating"; code: string; message: string }
  /** The app's own credential was refused: nothing the customer can fix. */
  | { kind: "client"; code: string }
  /** A lasting refusal for this tenant (the Defender service principal is missing, ...). */
  | { kind: "refused"; code: string; message: string };

/** One try: a fresh client-credentials token from the tenant's own endpoint, then the probe. */
async function verifyOnce(svc: Services, endpoints: CloudEndpoints, access: SourceAccess, tenantId: string): Promise<Attempt> {
  let token: string;
  try {
    token = await clientCredentialsToken(svc, endpoints, tenantId, access.scope);
  } catch (err) {
    if (!(err instanceof TokenFailure)) throw err;
    const { kind, code, message } = err.detail;
    if (PROPAGATING.has(code) || kind === "transient") return { kind: "propagating", code, message };
    if (kind === "client") return { kind: "client", code };
    return { kind: "refused", code, message };
  }
  const probe = await probeSource(access.source, endpoints, token);
  if (probe === "ok") return { kind: "ok" };
  if (probe === "forbidden") {
    return { kind: "propagating", code: "Forbidden", message: `The alerts API refused the app-only token (no ${access.application} yet)` };
  }
  return { kind: "propagating", code: "DefenderUnavailable", message: "The Defender API could not be reached to confirm access" };
}

/** GET /api/consent/callback of an application-mode sign-in (after the error checks of consent.ts). */
export async function completeAppConsent(
  svc: Services,
  bound: ConsentStateEntity,
  params: URLSearchParams,
  log: Logger,
): Promise<ConsentOutcome> {
  const tenantId = bound.tenantId;
  const warn = (reason: string, code?: string) =>
    log.warn(`consent.failed tenantId=${tenantId} mode=application reason=${reason}${code ? ` code=${code}` : ""}`);
  // Never trusted: an equal value proves nothing, another organisation's value ends it here.
  const named = params.get("tenant");
  if (named !== null && named.toLowerCase() !== tenantId) {
    warn("tenant-mismatch");
    return { kind: "tenant-mismatch" };
  }
  if ((params.get("admin_consent") ?? "").toLowerCase() !== "true" || params.has("code")) {
    warn("not-an-admin-consent-response");
    return { kind: "response-unknown" };
  }
  const linked = await linkedTenant(svc, log, bound, warn);
  if (!linked.ok) return linked.outcome;
  const { row, endpoints } = linked;

  const access = sourceAccess(bound.source ?? "defender", endpoints);
  let attempt = await verifyOnce(svc, endpoints, access, tenantId);
  let waited = 0;
  for (const wait of BACKOFF_MS) {
    if (attempt.kind !== "propagating" || waited >= svc.config.onboarding.consentRetryMs) break;
    const ms = Math.min(wait, svc.config.onboarding.consentRetryMs - waited);
    log.info(`consent.verify-retry tenantId=${tenantId} code=${attempt.code} waitMs=${ms}`);
    await svc.sleep(ms);
    waited += ms;
    attempt = await verifyOnce(svc, endpoints, access, tenantId);
  }

  switch (attempt.kind) {
    case "ok": {
      const activated = await activateApplicationMode(svc, tenantId, bound.linkHash, log);
      if (activated === "activated") return { kind: "app-completed", displayName: row.displayName };
      warn("link-changed");
      return { kind: "link-changed" };
    }
    case "client":
      return failed(svc, log, tenantId, { kind: "provider-config", code: attempt.code, clientCredential: true }, "token");
    case "refused":
      return failed(svc, log, tenantId, { kind: "tenant-refused", code: attempt.code }, "token");
    case "propagating": {
      if (svc.config.onboarding.consentVerifyMs > 0) {
        const until = await deferVerification(svc, tenantId, bound.linkHash, attempt.code);
        if (!until) {
          warn("link-changed");
          return { kind: "link-changed" };
        }
        log.warn(`consent.verify-pending tenantId=${tenantId} code=${attempt.code} until=${until}`);
        return { kind: "app-pending", displayName: row.displayName };
      }
      const final = await finalFailure(svc, tenantId, attempt, access, log);
      return final === "AppPermissionMissing"
        ? { kind: "app-permission-missing", permission: `${access.application} (${access.resource})` }
        : { kind: "tenant-refused", code: final };
    }
  }
}

/**
 * Marks the tenant as verified in application mode: active, `mode: application`, nothing
 * stored. A refresh token of an earlier delegated consent is deleted only now that the new
 * mode works. With `linkHash` (the callback) the link must still be the one consented
 * through, and the next timer run pulls, as after a delegated consent; without (the
 * timer's probe) a verification must still be pending, and the tenant's first pull is
 * queued at once. Returns "gone" when neither holds (offboarded, relinked meanwhile).
 */
async function activateApplicationMode(svc: Services, tenantId: string, linkHash: string | undefined, log: Logger): Promise<"activated" | "gone"> {
  const tenants = svc.storage.table(TABLES.tenants);
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await getTenant(tenants, tenantId);
    if (!current || current.status === "offboarded") return "gone";
    if (linkHash !== undefined ? checkLink(current, linkHash, svc.now()) !== "ok" : !current.consentVerifyUntil) return "gone";
    const hadRefreshToken = tenantMode(current) === "delegated" && Boolean(current.refreshTokenVersion || current.consentedAt);
    const now = svc.now().toISOString();
    const patch = {
      status: "active" as const,
      mode: "application" as const,
      linkMode: "" as const,
      source: current.linkSource || current.source || svc.config.defaultSource,
      linkSource: "" as const,
      generation: randomBytes(12).toString("base64url"),
      consentedAt: now,
      consentedBy: "",
      refreshTokenVersion: "",
      refreshTokenWrittenAt: "",
      consentLinkHash: "",
      consentLinkExpiresAt: "",
      consentVerifyUntil: "",
      consentVerifyCode: "",
      ...CLEARED_ERROR,
    };
    if (!(await patchTenant(tenants, tenantId, current.etag, patch))) continue;
    forgetAccessToken(tenantId);
    // The client-credentials token just worked: so does the app's own credential.
    await recordClientCredential(svc, false);
    if (hadRefreshToken) {
      await svc.vault.remove(tenantId);
      log.info(`consent.refresh-token-removed tenantId=${tenantId} reason=mode-switched`);
    }
    log.info(`tenant.status tenantId=${tenantId} status=active`);
    log.info(`consent.completed tenantId=${tenantId} mode=application`);
    if (linkHash === undefined) await enqueuePull(svc, { tenantId, reason: "schedule" });
    return "activated";
  }
  throw new Error("The tenant row kept changing during consent");
}

/** Records a consent that is still propagating; returns the deadline, or undefined when the link changed meanwhile. */
async function deferVerification(svc: Services, tenantId: string, linkHash: string, code: string): Promise<string | undefined> {
  const tenants = svc.storage.table(TABLES.tenants);
  const now = svc.now();
  const until = new Date(now.getTime() + svc.config.onboarding.consentVerifyMs).toISOString();
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await getTenant(tenants, tenantId);
    if (!current || checkLink(current, linkHash, now) !== "ok") return undefined;
    const patch = {
      consentVerifyUntil: until,
      consentVerifyCode: code,
      lastErrorCode: "ConsentPropagating",
      lastErrorMessage: `Admin consent was recorded; access is confirmed automatically, usually within minutes (checked until ${until}; last answer ${code}).`,
      lastErrorAt: now.toISOString(),
    };
    if (await patchTenant(tenants, tenantId, current.etag, patch)) return until;
  }
  throw new Error("The tenant row kept changing during consent");
}

/** The verification window is over: names what is missing in lastError and stops probing. */
async function finalFailure(
  svc: Services,
  tenantId: string,
  attempt: Extract<Attempt, { kind: "propagating" | "refused" }>,
  access: SourceAccess,
  log: Logger,
): Promise<string> {
  const code = attempt.kind === "propagating" && attempt.code === "Forbidden" ? "AppPermissionMissing" : attempt.code;
  const message =
    code === "AppPermissionMissing"
      ? `The alerts API refuses the app-only token: the application permission ${access.application} of ${access.resource} is missing. An administrator must grant admin consent to it.`
      : `Access could not be confirmed after admin consent (${code}): ${attempt.message}`;
  const tenants = svc.storage.table(TABLES.tenants);
  for (let i = 0; i < 5; i++) {
    const current = await getTenant(tenants, tenantId);
    if (!current) break;
    const patch = { consentVerifyUntil: "", consentVerifyCode: "", lastErrorCode: code, lastErrorMessage: message, lastErrorAt: svc.now().toISOString() };
    if (await patchTenant(tenants, tenantId, current.etag, patch)) break;
  }
  log.warn(`consent.failed tenantId=${tenantId} mode=application reason=${code === "AppPermissionMissing" ? "app-permission-missing" : "not-verified"} code=${code}`);
  return code;
}

/**
 * A verification probe the timer queued for a consent still propagating: activates the
 * tenant on the first success, and ends the verification at `consentVerifyUntil` with the
 * reason in lastError. An app credential failure is the app's own (app.credential.failed)
 * and leaves the tenant to the next probe.
 */
export async function verifyPendingConsent(svc: Services, tenantIdRaw: string, log: Logger): Promise<"activated" | "pending" | "failed" | "skipped"> {
  const tenantId = tenantIdRaw.toLowerCase();
  const row: TenantRow | undefined = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
  if (!row?.consentVerifyUntil || row.status === "offboarded") {
    log.info(`consent.verify-skipped tenantId=${tenantId}`);
    return "skipped";
  }
  const endpoints = endpointsFor(svc.config, row.cloud);
  const access = sourceAccess(row.linkSource || row.source || svc.config.defaultSource, endpoints);
  const attempt = await verifyOnce(svc, endpoints, access, tenantId);
  if (attempt.kind === "ok") return (await activateApplicationMode(svc, tenantId, undefined, log)) === "activated" ? "activated" : "skipped";
  if (attempt.kind === "client") {
    await reportCredentialFailure(svc, log, attempt.code);
    return "pending";
  }
  const due = Date.parse(row.consentVerifyUntil) <= svc.now().getTime();
  if (attempt.kind === "refused" || due) {
    await finalFailure(svc, tenantId, attempt, access, log);
    return "failed";
  }
  await patchTenant(svc.storage.table(TABLES.tenants), tenantId, row.etag, { consentVerifyCode: attempt.code });
  log.info(`consent.verify-pending tenantId=${tenantId} code=${attempt.code} until=${row.consentVerifyUntil}`);
  return "pending";
}
