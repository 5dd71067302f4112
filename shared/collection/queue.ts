import pLimit from "p-limit";
import { isGuid } from "../platform/http.js";
import { encodeQueueMessage, queueMessageFields } from "../platform/queue-message.js";
import type { Logger, Services } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { listTenants } from "../onboarding/tenants.js";

/**
 * The scale-out path: the timer queues one message per active tenant and the
 * queue-triggered worker pulls one tenant per message (platform/queue-message.ts).
 */
export interface PullMessage {
  tenantId: string;
  /** `verify`: not a pull, a probe of an application-mode consent that is still propagating. */
  reason: "schedule" | "manual" | "reconcile" | "verify";
}

/** Validates a queue message as the host hands it over (parsed JSON, or text). */
export function parseMessage(raw: unknown): PullMessage | undefined {
  const { tenantId, reason: given } = queueMessageFields(raw);
  if (!isGuid(tenantId)) return undefined;
  const reason = given === "manual" || given === "reconcile" || given === "verify" ? given : "schedule";
  return { tenantId: tenantId.toLowerCase(), reason };
}

/** Messages in flight at once while the timer queues every tenant. */
export const QUEUE_CONCURRENCY = 32;

export async function enqueuePull(svc: Services, message: PullMessage): Promise<void> {
  await svc.storage.pullQueue.sendMessage(encodeQueueMessage(message));
}

/**
 * Queues a pull for every active tenant; returns how many were queued. Every run also logs
 * `tenant.state tenantId=<guid> status=<status>` for each tenant that is neither active nor
 * offboarded: the re-consent alert rule (infra/modules/alerts.bicep) reads the latest such
 * line per tenant, so it stays fired exactly while a tenant is reconsent-required.
 *
 * It also queues a verification probe (`reason: verify`) for every tenant whose
 * application-mode consent is still propagating (`consentVerifyUntil` set), including one
 * last probe once that time has passed, which ends the verification.
 */
export async function enqueueActiveTenants(svc: Services, log: Logger): Promise<number> {
  const rows = await listTenants(svc.storage.table(TABLES.tenants));
  for (const row of rows) {
    if (row.status !== "active" && row.status !== "offboarded") log.info(`tenant.state tenantId=${row.rowKey} status=${row.status}`);
  }
  const active = rows.filter((row) => row.status === "active");
  const verify = rows.filter((row) => row.consentVerifyUntil && row.status !== "offboarded");
  // Bounded: thousands of tenants must not open thousands of sockets at once.
  const limit = pLimit(QUEUE_CONCURRENCY);
  await Promise.all([
    ...active.map((row) => limit(() => enqueuePull(svc, { tenantId: row.rowKey, reason: "schedule" }))),
    ...verify.map((row) => limit(() => enqueuePull(svc, { tenantId: row.rowKey, reason: "verify" }))),
  ]);
  log.info(`schedule.queued tenants=${active.length}${verify.length > 0 ? ` verifications=${verify.length}` : ""}`);
  return active.length;
}
