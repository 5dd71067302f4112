import { requestReconcile } from "../collection/sync-state.js";
import { enqueuePull } from "../collection/queue.js";
import { ApiError } from "../platform/http.js";
import type { Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { getTenant } from "../onboarding/tenants.js";

/** Operator actions on a tenant's collection: pull now, and reconcile a lookback now. */

export const MAX_RECONCILE_HOURS = 180 * 24;

async function requireActive(svc: Services, tenantId: string): Promise<void> {
  const row = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
  if (!row) throw new ApiError(404, "TenantNotFound", "No tenant with that ID is registered.");
  if (row.status !== "active") {
    throw new ApiError(409, "TenantNotActive", `The tenant is ${row.status}; only active tenants can be pulled.`);
  }
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
  await requireActive(svc, tenantId);
  await requestReconcile(svc.storage.table(TABLES.syncState), tenantId, "defender", lookbackHours, svc.now());
  await enqueuePull(svc, { tenantId, reason: "reconcile" });
  return { tenantId, queued: true, lookbackHours };
}
