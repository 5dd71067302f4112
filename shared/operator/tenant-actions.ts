import { requestReconcile } from "../collection/sync-state.js";
import { enqueuePull } from "../collection/queue.js";
import { ApiError } from "../platform/http.js";
import type { Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { getTenant, patchTenant, type TenantRow } from "../onboarding/tenants.js";

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
 * PATCH /api/tenants/{id}: operator settings of a tenant. Today `destinations`: the
 * delivery destinations its alerts go to (names of configured destinations), or null for
 * every enabled destination. A change applies to alert versions stored from then on (no
 * backfill: use a replay).
 */
export function parseTenantPatch(input: Record<string, unknown>, known: readonly string[]): { destinations: string[] | null } {
  const unknown = Object.keys(input).filter((k) => k !== "destinations");
  if (unknown.length > 0) throw new ApiError(400, "UnknownField", `Unknown field(s): ${unknown.join(", ")}.`);
  if (!("destinations" in input)) throw new ApiError(400, "NothingToChange", "Send the fields to change, e.g. {\"destinations\": [\"soc-webhook\"]}.");
  const value = input.destinations;
  if (value === null) return { destinations: null };
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string") || value.length > 32) {
    throw new ApiError(400, "InvalidDestinations", "destinations must be an array of destination names, or null for every enabled destination.");
  }
  const missing = (value as string[]).filter((name) => !known.includes(name));
  if (missing.length > 0) throw new ApiError(400, "UnknownDestination", `No destination named ${missing.join(", ")} is configured.`);
  return { destinations: [...new Set(value as string[])] };
}

export async function patchTenantSettings(svc: Services, tenantId: string, patch: { destinations: string[] | null }): Promise<TenantRow> {
  const tenants = svc.storage.table(TABLES.tenants);
  for (let attempt = 0; attempt < 5; attempt++) {
    const row = await getTenant(tenants, tenantId);
    if (!row) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
    const destinations = patch.destinations === null ? "" : JSON.stringify(patch.destinations);
    const etag = await patchTenant(tenants, tenantId, row.etag, { destinations });
    if (etag) return { ...row, destinations, etag };
  }
  throw new ApiError(409, "Conflict", "The tenant changed concurrently; try again.");
}
