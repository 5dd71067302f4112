import { requestReconcile } from "../collection/sync-state.js";
import { enqueuePull } from "../collection/queue.js";
import { ApiError } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import type { SourceName } from "../collection/source.js";
import { probeSource, SOURCE_NAMES, sourceAccess } from "../collection/sources/index.js";
import { TokenFailure, tokenProviderFor } from "../collection/tokens.js";
import { getTenant, patchTenant, type TenantPatch, type TenantRow } from "../onboarding/tenants.js";
import { endpointsFor } from "../platform/config.js";

/** Operator actions on a tenant's collection: pull now, and reconcile a lookback now. */

export const MAX_RECONCILE_HOURS = 180 * 24;

async function requireActive(svc: Services, tenantId: string): Promise<TenantRow> {
  const row = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
  if (!row) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
  if (row.status !== "active") {
    throw new ApiError(409, "TenantNotActive", `The tenant is ${row.status}; only active tenants can be pulled.`);
  }
  return row;
}

/** POST /api/tenants/{id}/pull */
export async function queuePull(svc: Services, tenantId: string): Promise<{ tenantId: string; queued: true }> {
  await requireActive(svc, tenantId);
  await enqueuePull(svc, { tenantId, reason: "manual" });
  return { tenantId, queued: true };
}

/** Validates `{"lookbackHours": n}` before anything is read or written. */
export function parseLookback(input: Record<string, unknown>): number {
  const unknown = Object.keys(input).filter((k) => k !== "lookbackHours");
  if (unknown.length > 0) throw new ApiError(400, "UnknownField", `Unknown field(s): ${unknown.join(", ")}.`);
  const hours = input.lookbackHours;
  if (typeof hours !== "number" || !Number.isInteger(hours) || hours < 1 || hours > MAX_RECONCILE_HOURS) {
    throw new ApiError(400, "InvalidLookback", `lookbackHours must be an integer from 1 to ${MAX_RECONCILE_HOURS} (180 days).`);
  }
  return hours;
}

/**
 * POST /api/tenants/{id}/reconcile: the request is stored on the tenant's sweep row first,
 * so a worker that finds the tenant busy does not lose it; the queued message only wakes
 * a worker. The reconcile may use up to half of the tenant's call budget until done.
 */
export async function queueReconcile(
  svc: Services,
  tenantId: string,
  lookbackHours: number,
): Promise<{ tenantId: string; queued: true; lookbackHours: number }> {
  const row = await requireActive(svc, tenantId);
  await requestReconcile(svc.storage.table(TABLES.syncState), tenantId, row.source ?? svc.config.defaultSource, lookbackHours, svc.now());
  await enqueuePull(svc, { tenantId, reason: "reconcile" });
  return { tenantId, queued: true, lookbackHours };
}

/**
 * PATCH /api/tenants/{id}: operator settings of a tenant.
 * - `destinations`: the delivery destinations its alerts go to (names of configured
 *   destinations), or null for every enabled destination. Applies to versions stored from
 *   then on (no backfill: use a replay).
 * - `source`: the alert API it is pulled from (`defender` | `graph`). The switch happens
 *   only if the tenant's existing consent already covers the new source: a token for it is
 *   requested with the tenant's own credentials and one probe must read alerts. Otherwise
 *   409 ConsentRequired: send a new link with `POST /api/tenants` `{"relink": true, "source"}`.
 */
export interface TenantSettingsPatch {
  destinations?: string[] | null;
  source?: SourceName;
}

export function parseTenantPatch(input: Record<string, unknown>, known: readonly string[]): TenantSettingsPatch {
  const unknown = Object.keys(input).filter((k) => k !== "destinations" && k !== "source");
  if (unknown.length > 0) throw new ApiError(400, "UnknownField", `Unknown field(s): ${unknown.join(", ")}.`);
  if (!("destinations" in input) && !("source" in input)) {
    throw new ApiError(400, "NothingToChange", 'Send the fields to change, e.g. {"destinations": ["soc-webhook"]} or {"source": "graph"}.');
  }
  const patch: TenantSettingsPatch = {};
  if ("source" in input) {
    if (!SOURCE_NAMES.includes(input.source as SourceName)) {
      throw new ApiError(400, "InvalidSource", `source must be one of ${SOURCE_NAMES.join(", ")}.`);
    }
    patch.source = input.source as SourceName;
  }
  if ("destinations" in input) {
    const value = input.destinations;
    if (value === null) patch.destinations = null;
    else {
      if (!Array.isArray(value) || value.some((v) => typeof v !== "string") || value.length > 32) {
        throw new ApiError(400, "InvalidDestinations", "destinations must be an array of destination names, or null for every enabled destination.");
      }
      const missing = (value as string[]).filter((name) => !known.includes(name));
      if (missing.length > 0) throw new ApiError(400, "UnknownDestination", `No destination named ${missing.join(", ")} is configured.`);
      patch.destinations = [...new Set(value as string[])];
    }
  }
  return patch;
}

export async function patchTenantSettings(svc: Services, tenantId: string, patch: TenantSettingsPatch, log: Logger): Promise<TenantRow> {
  const tenants = svc.storage.table(TABLES.tenants);
  for (let attempt = 0; attempt < 5; attempt++) {
    const row = await getTenant(tenants, tenantId);
    if (!row) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
    const changes: TenantPatch = {};
    if (patch.destinations !== undefined) changes.destinations = patch.destinations === null ? "" : JSON.stringify(patch.destinations);
    if (patch.source && patch.source !== (row.source ?? svc.config.defaultSource)) {
      await requireConsentFor(svc, row, patch.source, log);
      changes.source = patch.source;
    }
    const etag = await patchTenant(tenants, tenantId, row.etag, changes);
    if (etag) {
      if (changes.source) log.info(`tenant.source-changed tenantId=${tenantId} source=${changes.source}`);
      return { ...row, ...changes, etag };
    }
  }
  throw new ApiError(409, "Conflict", "The tenant changed concurrently; try again.");
}

/** A source switch needs the existing consent to cover the new source: one token and one probe with it. */
async function requireConsentFor(svc: Services, row: TenantRow, source: SourceName, log: Logger): Promise<void> {
  if (row.status !== "active") {
    throw new ApiError(409, "ConsentRequired", `The tenant is ${row.status}: send a new link with "relink": true and "source": "${source}".`);
  }
  const endpoints = endpointsFor(svc.config, row.cloud);
  const access = sourceAccess(source, endpoints);
  let verdict: "ok" | "forbidden" | "failed";
  try {
    verdict = await probeSource(source, endpoints, await tokenProviderFor(svc, log, row, endpoints).get(access.scope));
  } catch (err) {
    if (!(err instanceof TokenFailure)) throw err;
    verdict = err.detail.kind === "transient" ? "failed" : "forbidden";
  }
  if (verdict === "failed") throw new ApiError(503, "SourceUnavailable", `The ${source} API could not be reached to confirm access; try again.`);
  if (verdict === "forbidden") {
    throw new ApiError(
      409,
      "ConsentRequired",
      `The tenant's consent does not cover ${source} (${access.application} / ${access.delegated[0]} of ${access.resource}). Send a new link with POST /api/tenants {"relink": true, "source": "${source}"}; the tenant is pulled from its current source until the new consent is verified.`,
    );
  }
}
