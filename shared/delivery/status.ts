import { odata } from "@azure/data-tables";
import type { Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { DESTINATION_ROW, type DeliveryStateEntity, destinationPartition, parkedPartition } from "./deliver.js";
import { oldestMarker } from "./outbox.js";

/** What operators see of delivery, per destination (in `GET /api/health/details`). */
export interface DestinationStatus {
  name: string;
  type: string;
  enabled: boolean;
  /** Set while a webhook's 410 keeps it disabled (POST /api/destinations/{name}/enable lifts it). */
  disabled?: { at: string; code: string };
  /** Since when the oldest undelivered work of this destination waits (absent: nothing waits). */
  backlogSince?: string;
  backlogAgeSeconds?: number;
  lastSuccessAt?: string;
  lastError?: { code: string; at: string };
  parked: number;
}

export async function deliveryStatus(svc: Services): Promise<{ destinations: DestinationStatus[]; oldestUndelivered?: string }> {
  const table = svc.storage.table(TABLES.deliveryState);
  const now = svc.now().getTime();
  const destinations = await Promise.all(
    svc.config.destinations.map(async (config) => {
      const status: DestinationStatus = { name: config.name, type: config.type, enabled: config.enabled, parked: 0 };
      const filter = odata`PartitionKey eq ${destinationPartition(config.name)}`;
      for await (const row of table.listEntities<DeliveryStateEntity>({ queryOptions: { filter } })) {
        if (row.rowKey === DESTINATION_ROW) {
          if (row.disabledAt) status.disabled = { at: row.disabledAt, code: row.disabledCode ?? "" };
          if (row.lastSuccessAt) status.lastSuccessAt = row.lastSuccessAt;
          if (row.lastErrorCode) status.lastError = { code: row.lastErrorCode, at: row.lastErrorAt ?? "" };
        } else if (row.pendingSince && (!status.backlogSince || row.pendingSince < status.backlogSince)) {
          status.backlogSince = row.pendingSince;
        }
      }
      if (status.backlogSince) status.backlogAgeSeconds = Math.max(0, Math.round((now - Date.parse(status.backlogSince)) / 1000));
      const parked = odata`PartitionKey eq ${parkedPartition(config.name)}`;
      for await (const _ of table.listEntities({ queryOptions: { filter: parked, select: ["RowKey"] } })) status.parked++;
      return status;
    }),
  );
  const oldest = await oldestMarker(svc);
  return oldest ? { destinations, oldestUndelivered: oldest } : { destinations };
}
