import { randomUUID } from "node:crypto";
import { odata, type TransactionAction } from "@azure/data-tables";
import { ALERT_ROWS_ONLY, MAX_BATCH_ENTITIES } from "../collection/alert-store.js";
import { ApiError, parseTenantId } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES } from "../platform/storage.js";
import { DESTINATION_ROW, destinationPartition } from "./deliver.js";
import { entryFor, markPending } from "./outbox.js";
import { enqueueDelivery } from "./queue.js";

/**
 * Replay: re-send the current version of every alert of a range (bounds on the row's
 * `storedAt`, as for `GET /api/alerts`) to one destination, through the outbox: the
 * matching alerts get that destination's pending flag (Merge, so other destinations'
 * flags stay), their tenants are marked, and the delivery worker sends them as usual.
 */

const REPLAY_PARTITION = "replay";

export interface ReplayRequest {
  destination: string;
  tenantId?: string;
  since: string;
  until?: string;
}

function isoTime(value: unknown, field: string): string {
  if (typeof value !== "string" || !/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(Date.parse(value))) {
    throw new ApiError(400, "InvalidReplay", `${field} must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z.`);
  }
  return new Date(Date.parse(value)).toISOString();
}

/** Validates the route name and `{"tenantId"?, "since", "until"?}` before anything is read. */
export function parseReplay(name: string, input: Record<string, unknown>, known: readonly string[]): ReplayRequest {
  if (!known.includes(name)) throw new ApiError(404, "DestinationNotFound", "No destination with that name is configured.");
  const unknown = Object.keys(input).filter((k) => !["tenantId", "since", "until"].includes(k));
  if (unknown.length > 0) throw new ApiError(400, "UnknownField", `Unknown field(s): ${unknown.join(", ")}.`);
  const request: ReplayRequest = { destination: name, since: isoTime(input.since, "since") };
  if (input.until !== undefined) {
    request.until = isoTime(input.until, "until");
    if (request.until <= request.since) throw new ApiError(400, "InvalidReplay", "until must be after since.");
  }
  if (input.tenantId !== undefined) request.tenantId = parseTenantId(input.tenantId);
  return request;
}

/** Records the replay and wakes the worker; answers with its id. */
export async function queueReplay(svc: Services, request: ReplayRequest, by: string): Promise<{ replayId: string }> {
  const replayId = randomUUID();
  await svc.storage.table(TABLES.deliveryState).createEntity({
    partitionKey: REPLAY_PARTITION,
    rowKey: replayId,
    ...request,
    requestedBy: by,
    requestedAt: svc.now().toISOString(),
    status: "queued",
  });
  await enqueueDelivery(svc, { replayId });
  return { replayId };
}

/** The worker's part: flags the matching alerts and wakes their tenants. */
export async function prepareReplay(svc: Services, replayId: string, log: Logger): Promise<number> {
  const state = svc.storage.table(TABLES.deliveryState);
  let replay: ReplayRequest & { status: string; etag: string };
  try {
    replay = await state.getEntity<ReplayRequest & { status: string }>(REPLAY_PARTITION, replayId);
  } catch (err) {
    if (isStatus(err, 404)) return 0;
    throw err;
  }
  if (replay.status === "prepared") return 0;
  const alerts = svc.storage.table(TABLES.alerts);
  const filters = [odata`Timestamp ge ${new Date(replay.since)}`, ALERT_ROWS_ONLY];
  if (replay.until) filters.push(odata`Timestamp lt ${new Date(replay.until)}`);
  if (replay.tenantId) filters.push(odata`PartitionKey eq ${replay.tenantId}`);
  const byTenant = new Map<string, TransactionAction[]>();
  let count = 0;
  const flush = async (tenantId: string) => {
    const actions = byTenant.get(tenantId) ?? [];
    if (actions.length === 0) return;
    await alerts.submitTransaction(actions);
    byTenant.set(tenantId, []);
  };
  const tenants = new Set<string>();
  for await (const row of alerts.listEntities<{ alertId: string; lastUpdateTimeExact: string; bodySha256: string }>({
    queryOptions: { filter: filters.join(" and "), select: ["PartitionKey", "RowKey", "alertId", "lastUpdateTimeExact", "bodySha256"] },
  })) {
    const tenantId = row.partitionKey!;
    if (!tenants.has(tenantId)) {
      tenants.add(tenantId);
      await markPending(svc, tenantId); // before the first flag, as a pull does
    }
    const actions = byTenant.get(tenantId) ?? [];
    actions.push(
      entryFor(tenantId, { alertId: row.alertId, rowKey: row.rowKey!, lastUpdateTimeExact: row.lastUpdateTimeExact, sha: row.bodySha256 }, [replay.destination], true),
    );
    byTenant.set(tenantId, actions);
    count++;
    if (actions.length >= MAX_BATCH_ENTITIES) await flush(tenantId);
  }
  for (const tenantId of byTenant.keys()) await flush(tenantId);
  await state.updateEntity({ partitionKey: REPLAY_PARTITION, rowKey: replayId, status: "prepared", alerts: count }, "Merge");
  for (const tenantId of tenants) await enqueueDelivery(svc, { tenantId });
  log.info(`delivery.replay replayId=${replayId} destination=${replay.destination} alerts=${count}`);
  return count;
}

/** POST /api/destinations/{name}/enable: lifts a disable (a webhook's 410). */
export async function enableDestination(svc: Services, name: string): Promise<{ destination: string; enabled: true }> {
  if (!svc.config.destinations.some((d) => d.name === name)) {
    throw new ApiError(404, "DestinationNotFound", "No destination with that name is configured.");
  }
  await svc.storage
    .table(TABLES.deliveryState)
    .upsertEntity({ partitionKey: destinationPartition(name), rowKey: DESTINATION_ROW, disabledAt: "", disabledCode: "" }, "Merge");
  return { destination: name, enabled: true };
}
