import type { TableClient } from "@azure/data-tables";
import pLimit from "p-limit";
import { type AlertTables, readStoredAlert } from "../collection/alert-store.js";
import { Lease, LeaseLost, type LeaseFields } from "../collection/lease.js";
import { leaseTiming } from "../collection/lease-timing.js";
import { getTenant } from "../onboarding/tenants.js";
import type { DestinationConfig } from "./config.js";
import { type DeliveryItem, type Destination, DestinationError, type SendReport } from "./destination.js";
import { createDestination } from "./destinations/index.js";
import { clearMarker, flagOf, getMarker, type OutboxEntry, pendingEntries } from "./outbox.js";
import { errorName } from "../platform/http.js";
import type { Logger, Services } from "../platform/services.js";
import { isStatus, TABLES } from "../platform/storage.js";

/**
 * One delivery run for one tenant: every enabled destination, independently and in parallel, so one destination's outage never blocks another (nor a
 * pull, which only writes the outbox). Per (destination, tenant):
 * - a lease (same rules as the pull lease) serialises the sends, so a destination never
 *   receives an older version of an alert after a newer one: each send carries the alert
 *   row's current version, read just before it;
 * - a destination in backoff (after a failure, or Retry-After) or disabled (a webhook's
 *   410) is skipped; the timer wakes the tenant again;
 * - items a destination refuses as they are (permanent) are parked for replay and their
 *   flag cleared, so they cannot block the rest.
 * The run deletes the tenant's pending marker only when nothing is left for any destination.
 */

export const BACKOFF_BASE_MS = 30_000;
export const BACKOFF_MAX_MS = 30 * 60_000;
const READ_CONCURRENCY = 8;

/** Delivery state rows in `deliverystate`. */
export const destinationPartition = (name: string) => `dest|${name}`;
export const DESTINATION_ROW = "~";
export const parkedPartition = (name: string) => `parked|${name}`;

export interface DeliveryStateEntity extends LeaseFields {
  partitionKey: string;
  rowKey: string;
  /** (destination, tenant): not before this time (backoff or Retry-After). */
  backoffUntil?: string;
  failures?: number;
  /** (destination, tenant): since when something is waiting for this destination. */
  pendingSince?: string;
  lastSuccessAt?: string;
  lastErrorCode?: string;
  lastErrorAt?: string;
  delivered?: number;
  /** (destination, `~`): set by a 410; cleared by POST /api/destinations/{name}/enable. */
  disabledAt?: string;
  disabledCode?: string;
}

export interface DeliveryRunResult {
  /** Per destination: items delivered in this run, or why it was skipped. */
  destinations: Record<string, { delivered: number; parked: number; outcome: "drained" | "pending" | "skipped" | "failed"; code?: string }>;
  /** The tenant's marker was removed: nothing is left to deliver. */
  clean: boolean;
}

const destinationCache = new Map<string, Destination>();

function destinationFor(svc: Services, config: DestinationConfig, log: Logger): Destination {
  const key = JSON.stringify(config);
  let destination = destinationCache.get(key);
  if (!destination) {
    destination = createDestination(config, {
      credential: svc.credential,
      secret: (name) => cachedSecret(svc, name),
      now: svc.now,
      sleep: svc.sleep,
      log,
    });
    destinationCache.set(key, destination);
  }
  return destination;
}

const secretCache = new Map<string, { value: string | undefined; until: number }>();
const SECRET_TTL_MS = 5 * 60_000;

/** A secret of the app's vault, cached for five minutes (a rotation is picked up within that). */
async function cachedSecret(svc: Services, name: string): Promise<string | undefined> {
  const hit = secretCache.get(name);
  if (hit && hit.until > Date.now()) return hit.value;
  let value: string | undefined;
  try {
    value = (await svc.secrets.getSecret(name)).value;
  } catch (err) {
    if (!isStatus(err, 404, 403)) throw err;
    value = undefined;
  }
  secretCache.set(name, { value, until: Date.now() + SECRET_TTL_MS });
  return value;
}

export async function deliverTenant(svc: Services, tenantId: string, log: Logger): Promise<DeliveryRunResult> {
  const marker = await getMarker(svc, tenantId);
  const result: DeliveryRunResult = { destinations: {}, clean: false };
  if (!marker) {
    result.clean = true;
    return result;
  }
  const tenant = await getTenant(svc.storage.table(TABLES.tenants), tenantId);
  // Every enabled destination, not only the routed ones: entries carry flags only for the
  // destinations routed when the version was stored, or asked for by a replay, and a
  // destination with no flagged entry costs one range query.
  const configs = svc.config.destinations.filter((d) => d.enabled);
  const customerName = tenant?.displayName ?? tenantId;
  await Promise.all(
    configs.map(async (config) => {
      try {
        result.destinations[config.name] = await deliverToDestination(svc, config, tenantId, customerName, log);
      } catch (err) {
        const code = err instanceof LeaseLost ? "LeaseLost" : errorName(err);
        log.error(`delivery.failed destination=${config.name} tenantId=${tenantId} code=${code}`);
        result.destinations[config.name] = { delivered: 0, parked: 0, outcome: "failed", code };
      }
    }),
  );
  // Entries for destinations disabled in the settings keep a flag nobody clears; they do
  // not hold the marker, or it would never go (a replay once re-enabled sends them).
  if (Object.values(result.destinations).every((d) => d.outcome === "drained")) {
    result.clean = await clearMarker(svc, marker);
  }
  return result;
}

async function deliverToDestination(
  svc: Services,
  config: DestinationConfig,
  tenantId: string,
  customerName: string,
  log: Logger,
): Promise<DeliveryRunResult["destinations"][string]> {
  const state = svc.storage.table(TABLES.deliveryState);
  const name = config.name;
  const now = svc.now();
  const destinationRow = await getState(state, destinationPartition(name), DESTINATION_ROW);
  if (destinationRow?.disabledAt) return { delivered: 0, parked: 0, outcome: "skipped", code: `Disabled:${destinationRow.disabledCode}` };
  const pair = await getState(state, destinationPartition(name), tenantId);
  if (pair?.backoffUntil && Date.parse(pair.backoffUntil) > now.getTime()) {
    return { delivered: 0, parked: 0, outcome: "skipped", code: "Backoff" };
  }
  const lease = await Lease.acquire<DeliveryStateEntity>(state, destinationPartition(name), tenantId, leaseTiming(), svc.now);
  if (lease === "busy") return { delivered: 0, parked: 0, outcome: "skipped", code: "Busy" };

  const destination = destinationFor(svc, config, log);
  const tables: AlertTables = { alerts: svc.storage.table(TABLES.alerts), bodies: svc.storage.table(TABLES.alertBodies) };
  let delivered = 0;
  let parked = 0;
  let failure: { code: string; retryAfterMs?: number } | undefined;
  let disabled: string | undefined;
  try {
    for (;;) {
      const batch: (OutboxEntry & { etag: string })[] = [];
      for await (const entry of pendingEntries(tables.alerts, tenantId, name)) {
        batch.push(entry);
        if (batch.length >= destination.batchSize) break;
      }
      if (batch.length === 0) break;
      const items = await readItems(svc, tables, tenantId, customerName, batch);
      const sendable = items.filter((i) => i.item !== undefined) as { entry: OutboxEntry & { etag: string }; item: DeliveryItem }[];
      let report: SendReport;
      await lease.beforeWrite();
      try {
        report = sendable.length > 0 ? await destination.send(sendable.map((s) => s.item)) : { delivered: [], failed: [] };
      } catch (err) {
        const code = err instanceof DestinationError ? err.code : errorName(err);
        failure = { code, ...(err instanceof DestinationError && err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}) };
        break;
      }
      const done = new Set(report.delivered);
      const refused = new Map(report.failed.filter((f) => f.permanent).map((f) => [f.deliveryKey, f.code]));
      // Entries whose alert row is gone (purged) are done with nothing to send.
      const clear = items.filter((i) => !i.item || done.has(i.item.deliveryKey) || refused.has(i.item.deliveryKey));
      for (const { entry, item } of items.filter((i) => i.item && refused.has(i.item.deliveryKey))) {
        await park(svc, name, tenantId, entry, item!, refused.get(item!.deliveryKey)!);
        log.warn(`delivery.parked destination=${name} tenantId=${tenantId} alertId=${entry.alertId} code=${refused.get(item!.deliveryKey)}`);
        parked++;
      }
      await Promise.all(clear.map(({ entry }) => clearFlag(tables.alerts, entry, name)));
      delivered += report.delivered.length;
      if (report.disabled) {
        disabled = report.disabled.code;
        break;
      }
      const transient = report.failed.filter((f) => !f.permanent);
      if (transient.length > 0 || report.retryAfterMs !== undefined) {
        failure = { code: transient[0]?.code ?? "Throttled", ...(report.retryAfterMs !== undefined ? { retryAfterMs: report.retryAfterMs } : {}) };
        break;
      }
    }
  } catch (err) {
    await lease.release({}).catch(() => undefined);
    throw err;
  }
  const at = svc.now().toISOString();
  if (disabled) {
    await state.upsertEntity(
      { partitionKey: destinationPartition(name), rowKey: DESTINATION_ROW, disabledAt: at, disabledCode: disabled },
      "Merge",
    );
    log.error(`delivery.disabled destination=${name} code=${disabled}`);
  }
  if (failure) {
    const failures = (pair?.failures ?? 0) + 1;
    const backoff = failure.retryAfterMs ?? Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (failures - 1));
    await lease.release({
      failures,
      backoffUntil: new Date(svc.now().getTime() + backoff).toISOString(),
      lastErrorCode: failure.code,
      lastErrorAt: at,
      pendingSince: pair?.pendingSince || at,
      delivered: (pair?.delivered ?? 0) + delivered,
    });
    await markDestination(state, name, { lastErrorCode: failure.code, lastErrorAt: at });
    log.warn(`delivery.retry destination=${name} tenantId=${tenantId} code=${failure.code} waitMs=${backoff} delivered=${delivered}`);
    return { delivered, parked, outcome: "pending", code: failure.code };
  }
  const drained = !disabled;
  await lease.release({
    failures: 0,
    backoffUntil: "",
    pendingSince: drained ? "" : pair?.pendingSince || at,
    delivered: (pair?.delivered ?? 0) + delivered,
    ...(delivered > 0 || drained ? { lastSuccessAt: at } : {}),
  });
  if (delivered > 0) {
    await markDestination(state, name, { lastSuccessAt: at });
    log.info(`delivery.succeeded destination=${name} tenantId=${tenantId} alerts=${delivered}`);
  }
  return { delivered, parked, outcome: drained ? "drained" : "pending", ...(disabled ? { code: `Disabled:${disabled}` } : {}) };
}

/** Reads each entry's alert row as it is now (the current version: superseded ones are coalesced). */
async function readItems(
  svc: Services,
  tables: AlertTables,
  tenantId: string,
  customerName: string,
  entries: (OutboxEntry & { etag: string })[],
): Promise<{ entry: OutboxEntry & { etag: string }; item?: DeliveryItem }[]> {
  const limit = pLimit(READ_CONCURRENCY);
  return Promise.all(
    entries.map((entry) =>
      limit(async () => {
        const stored = await readStoredAlert(tables, tenantId, entry.rowKey.slice(3));
        if (!stored) return { entry };
        const { row, json } = stored;
        const alertId = String(row.alertId);
        const exact = String(row.lastUpdateTimeExact);
        const columns: Record<string, string | undefined> = {};
        for (const [k, v] of Object.entries(row)) {
          if (/^body\d+$/.test(k) || k === "partitionKey" || k === "rowKey" || k === "etag") continue;
          columns[k] = v instanceof Date ? v.toISOString() : v === undefined || v === null ? undefined : String(v);
        }
        const source = (row.source as "defender" | "graph" | undefined) ?? "defender";
        const item: DeliveryItem = {
          deliveryKey: `${tenantId}:${source}:${alertId}:${exact}`,
          tenantId,
          customerName,
          source,
          alertId,
          providerAlertId: String(row.providerAlertId ?? alertId),
          lastUpdateTimeExact: exact,
          json: json.toString("utf8"),
          columns,
          collectorUrl: `${svc.config.publicBaseUrl}/api/tenants/${tenantId}/alerts/${encodeURIComponent(alertId)}`,
        };
        return { entry, item };
      }),
    ),
  );
}

/**
 * Clears a destination's flag on an entry, unless a newer version replaced the entry since
 * it was read (then it stays pending and the newer version goes out next). An entry with
 * no flag left is deleted.
 */
async function clearFlag(alerts: TableClient, entry: OutboxEntry & { etag: string }, destination: string): Promise<void> {
  let current: (OutboxEntry & { etag: string }) | undefined = entry;
  for (let attempt = 0; attempt < 5 && current; attempt++) {
    if (current.lastUpdateTimeExact !== entry.lastUpdateTimeExact || current.bodySha256 !== entry.bodySha256) return;
    const flag = flagOf(destination);
    const others = Object.entries(current).some(([k, v]) => k.startsWith("d_") && k !== flag && v === true);
    try {
      if (others) {
        await alerts.updateEntity({ partitionKey: current.partitionKey, rowKey: current.rowKey, [flag]: false }, "Merge", {
          etag: current.etag,
        });
      } else {
        await alerts.deleteEntity(current.partitionKey, current.rowKey, { etag: current.etag });
      }
      return;
    } catch (err) {
      if (!isStatus(err, 404, 412)) throw err;
    }
    try {
      current = (await alerts.getEntity<OutboxEntry>(entry.partitionKey, entry.rowKey)) as OutboxEntry & { etag: string };
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
      current = undefined;
    }
  }
}

async function park(
  svc: Services,
  destination: string,
  tenantId: string,
  entry: OutboxEntry,
  item: DeliveryItem,
  code: string,
): Promise<void> {
  await svc.storage.table(TABLES.deliveryState).upsertEntity(
    {
      partitionKey: parkedPartition(destination),
      rowKey: `${tenantId}|${entry.rowKey.slice(3)}`,
      tenantId,
      alertId: entry.alertId,
      deliveryKey: item.deliveryKey,
      code,
      parkedAt: svc.now().toISOString(),
    },
    "Replace",
  );
}

async function getState(table: TableClient, partitionKey: string, rowKey: string): Promise<DeliveryStateEntity | undefined> {
  try {
    return await table.getEntity<DeliveryStateEntity>(partitionKey, rowKey);
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
}

async function markDestination(table: TableClient, name: string, patch: Partial<DeliveryStateEntity>): Promise<void> {
  await table.upsertEntity({ partitionKey: destinationPartition(name), rowKey: DESTINATION_ROW, ...patch }, "Merge");
}
