import * as oauth from "oauth4webapi";
import type { CloudEndpoints } from "../platform/config.js";
import { errorName } from "../platform/http.js";
import { aadstsCode, classifyTokenError, discover } from "../platform/oauth.js";

/**
 * What Entra's answers during onboarding mean for the person who can act on them:
 * - the tenant in the link does not exist (a mistyped GUID): only the provider can fix the
 *   link, and retrying never helps;
 * - Entra refuses the tenant for a reason that lasts (the Defender service principal or
 *   the app is missing there): the provider must be told, with the code;
 * - the provider's own app is misconfigured (client secret wrong or expired, app or
 *   redirect URI unknown): the provider must fix its configuration;
 * - everything else (an expired or replayed code, a transient outage) is worth a retry.
 */

/** AADSTS codes that say the tenant named in the request does not exist. */
const TENANT_NOT_FOUND = new Set([90002, 900023, 50128, 50059]);
/** The app registration or its credential is wrong: the provider's configuration. */
const PROVIDER_CONFIG = new Set([7000215, 7000222, 7000112, 700027, 7000218, 700016, 50011, 500112]);
/** Lasting refusals for this tenant (the Defender service principal is missing, ...). */
const TENANT_REFUSED = new Set([500011, 500014, 50020]);

export type EntraVerdict =
  | { kind: "tenant-not-found"; code: string }
  | { kind: "tenant-refused"; code: string }
  | { kind: "provider-config"; code: string; clientCredential: boolean }
  | { kind: "retry"; code: string };

/** An AADSTS code out of an `error_description`, as `AADSTS<n>`. */
export function aadstsOf(description: string | null | undefined): string | undefined {
  const match = /AADSTS(\d{1,9})/.exec(description ?? "");
  return match ? `AADSTS${match[1]}` : undefined;
}

function byCode(code: string | undefined): EntraVerdict | undefined {
  const n = code?.startsWith("AADSTS") ? Number(code.slice(6)) : undefined;
  if (n === undefined || !code) return undefined;
  if (TENANT_NOT_FOUND.has(n)) return { kind: "tenant-not-found", code };
  if (PROVIDER_CONFIG.has(n)) return { kind: "provider-config", code, clientCredential: n !== 700016 && n !== 50011 && n !== 500112 };
  if (TENANT_REFUSED.has(n)) return { kind: "tenant-refused", code };
  return undefined;
}

/** An error Entra redirected back with (`error`, `error_description`) from the authorize step. */
export function authorizeVerdict(error: string, description: string | null): EntraVerdict {
  const code = aadstsOf(description);
  const known = byCode(code);
  if (known) return known;
  const fallback = code ?? error;
  if (error === "invalid_client" || error === "unauthorized_client") {
    return { kind: "provider-config", code: fallback, clientCredential: false };
  }
  if (error === "invalid_resource") return { kind: "tenant-refused", code: fallback };
  return { kind: "retry", code: fallback };
}

/** A failed code redemption at the token endpoint. */
export function tokenVerdict(err: unknown): EntraVerdict {
  const detail = classifyTokenError(err);
  const known = byCode(detail.code);
  if (known) return detail.kind === "client" && known.kind === "provider-config" ? { ...known, clientCredential: true } : known;
  if (detail.kind === "client") return { kind: "provider-config", code: detail.code, clientCredential: true };
  if (detail.kind === "tenant") return { kind: "tenant-refused", code: detail.code };
  return { kind: "retry", code: detail.code };
}

export type Discovery =
  | { ok: true; as: oauth.AuthorizationServer }
  /** Entra answered that the tenant does not exist (or another lasting refusal). */
  | { ok: false; permanent: true; code: string }
  /** No usable answer (network, 5xx, a proxy page): says nothing about the tenant. */
  | { ok: false; permanent: false; code: string; error: unknown };

/** The tenant's OpenID configuration, with Entra's refusal read out of the error body. */
export async function discoverTenant(endpoints: CloudEndpoints, tenantId: string): Promise<Discovery> {
  try {
    return { ok: true, as: await discover(endpoints, tenantId) };
  } catch (err) {
    const response = err instanceof oauth.OperationProcessingError ? err.cause : undefined;
    if (response instanceof Response || isResponseLike(response)) {
      const status = response.status;
      if (status >= 400 && status < 500) {
        const body = await readErrorBody(response);
        const n = aadstsCode(body);
        const code = n !== undefined ? `AADSTS${n}` : typeof body?.error === "string" ? body.error : `HTTP${status}`;
        const verdict = byCode(code);
        if (verdict?.kind === "tenant-not-found" || body?.error === "invalid_tenant") return { ok: false, permanent: true, code };
      }
      return { ok: false, permanent: false, code: `HTTP${status}`, error: err };
    }
    return { ok: false, permanent: false, code: errorName(err), error: err };
  }
}

function isResponseLike(value: unknown): value is Response {
  return typeof value === "object" && value !== null && typeof (value as Response).status === "number" && "text" in value;
}

async function readErrorBody(response: Response): Promise<Record<string, unknown> | undefined> {
  try {
    const text = (await response.text()).slice(0, 16_384);
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
