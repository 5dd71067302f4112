import { odata, type TableClient } from "@azure/data-tables";
import { effectiveOverlapMs, LatenessFigures } from "../collection/lateness.js";
import { getSyncRow, parseSlices, type SkippedSlice, type SyncEntity } from "../collection/sync-state.js";
import { parseDestinationList } from "../delivery/outbox.js";
import type { AppConfig } from "../platform/config.js";
import { type TenantEntity, type TenantStatus, toStatus } from "../onboarding/tenants.js";

/**
 * What operators see of a tenant: its registration and consent (tenant row) joined with
 * the state of its pulls (sync-state row of its source).
 */
export interface TenantHealthStatus extends TenantStatus {
  /** "degraded" while slices are skipped or lateness passes half the overlap. */
  health: "ok" | "degraded";
  lateness?: { p99Seconds: number; maxSeconds: number; foundBySweep24h: number };
  /** The overlap the incremental pull uses now (it widens by itself only up to PULL_OVERLAP_AUTO_MAX_MINUTES). */
  overlapMinutes?: number;
  skippedSlices?: SkippedSlice[];
  sameTimeChanges?: number;
  warnings?: string[];
  /** The delivery destinations routed for this tenant (absent: every enabled destination). */
  destinations?: string[];
  /** The alert source pulled for this tenant. */
  source: "defender" | "graph";
}


export function tenantHealthStatus(config: AppConfig, tenant: TenantEntity, sync: SyncEntity | undefined, now: Date): TenantHealthStatus {
  const base = toStatus(tenant);
  const status: TenantHealthStatus = { ...base, health: "ok", source: tenant.source ?? config.defaultSource };
  const destinations = parseDestinationList(tenant.destinations);
  if (destinations) status.destinations = destinations;
  if (!sync) return status;
  if (sync.lastPullAt) status.lastPullAt = sync.lastPullAt;
  if (sync.lastSuccessAt) status.lastSuccessAt = sync.lastSuccessAt;
  if (!status.lastError && sync.lastErrorCode) {
    status.lastError = { code: sync.lastErrorCode, message: sync.lastErrorMessage ?? "", at: sync.lastErrorAt ?? "" };
  }
  if (typeof sync.alertsStored === "number") status.alertsStored = sync.alertsStored;
  if (sync.watermark) status.watermark = sync.watermark;
  if (sync.sameTimeChanges) status.sameTimeChanges = sync.sameTimeChanges;
  const late = LatenessFigures.parse(sync.lateness).summary(now.getTime());
  status.lateness = { p99Seconds: late.p99Seconds, maxSeconds: late.maxSeconds, foundBySweep24h: late.foundBySweep24h };
  const overlapMs = effectiveOverlapMs(config.pull, late);
  status.overlapMinutes = Math.round(overlapMs / 60_000);
  const warnings: string[] = [];
  const skipped = parseSlices(sync.skippedSlices);
  if (skipped.length > 0) {
    status.skippedSlices = skipped;
    warnings.push(`${skipped.length} time slice(s) could not be read; the sweep retries them`);
  }
  if (late.p99Seconds * 1000 > overlapMs / 2) {
    warnings.push("p99 lateness is above half the overlap: alerts arrive late, and the sweep is catching them");
  }
  if (warnings.length > 0) {
    status.health = "degraded";
    status.warnings = warnings;
  }
  return status;
}

/** The sync-state row of the source the tenant pulls now. */
export async function syncRowOf(sync: TableClient, tenant: TenantEntity, config: AppConfig): Promise<SyncEntity | undefined> {
  return getSyncRow(sync, tenant.rowKey, tenant.source ?? config.defaultSource);
}

/** Every sync-state row of the sources (not the sweeps), by `<tenant>|<source>`: one query over the small syncstate table. */
export async function allSyncRows(sync: TableClient): Promise<Map<string, SyncEntity>> {
  const rows = new Map<string, SyncEntity>();
  const filter = odata`RowKey eq ${"defender"} or RowKey eq ${"graph"}`;
  for await (const row of sync.listEntities<SyncEntity>({ queryOptions: { filter } })) rows.set(`${row.partitionKey}|${row.rowKey}`, row);
  return rows;
}
