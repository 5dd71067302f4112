import pLimit from "p-limit";
import { QUEUE_CONCURRENCY } from "../collection/queue.js";
import { isGuid } from "../platform/http.js";
import { encodeQueueMessage, queueMessageFields } from "../platform/queue-message.js";
import type { Logger, Services } from "../platform/services.js";
import { overdueMarkers, REDELIVER_AFTER_MS } from "./outbox.js";

/**
 * Messages of the `tenant-deliveries` queue (base64 JSON, the host's default): a tenant
 * with alerts to deliver, or a replay to prepare. They only wake the delivery worker: what
 * to send is in the outbox, so a lost or duplicate message loses or repeats nothing.
 */
export type DeliveryMessage = { tenantId: string } | { replayId: string };

export async function enqueueDelivery(svc: Services, message: DeliveryMessage): Promise<void> {
  await svc.storage.deliveryQueue.sendMessage(encodeQueueMessage(message));
}

/** Validates a message as the host hands it over (parsed JSON, or text). */
export function parseDeliveryMessage(raw: unknown): DeliveryMessage | undefined {
  const { tenantId, replayId } = queueMessageFields(raw);
  if (isGuid(tenantId)) return { tenantId: tenantId.toLowerCase() };
  if (isGuid(replayId)) return { replayId };
  return undefined;
}

/**
 * The timer's part: wakes the delivery worker for every tenant whose undelivered work is
 * older than REDELIVER_AFTER_MS (a lost wake-up, a destination in backoff, a crash between
 * a write and its message). Returns how many tenants were queued.
 */
export async function queueOverdueDeliveries(svc: Services, log: Logger): Promise<number> {
  const overdue = await overdueMarkers(svc, new Date(svc.now().getTime() - REDELIVER_AFTER_MS));
  const limit = pLimit(QUEUE_CONCURRENCY);
  await Promise.all(overdue.map((m) => limit(() => enqueueDelivery(svc, { tenantId: m.tenantId }))));
  if (overdue.length > 0) log.info(`delivery.requeued tenants=${overdue.length}`);
  return overdue.length;
}
