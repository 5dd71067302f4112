/**
 * One interface for every place alerts are delivered to (Microsoft Sentinel through the
 * Logs Ingestion API, Splunk HEC, signed webhooks). The outbox (outbox.ts) decides what to
 * send and records what was delivered; a destination only sends a batch and says, per
 * item, what happened.
 */

export const DESTINATION_TYPES = ["sentinel", "splunk", "webhook"] as const;
export type DestinationType = (typeof DESTINATION_TYPES)[number];

/** One alert version to deliver: the alert row's current version when the batch was read. */
export interface DeliveryItem {
  /** `{tenantId}:{source}:{alertId}:{lastUpdateTimeExact}`: the idempotency key every destination carries. */
  deliveryKey: string;
  tenantId: string;
  /** The tenant's display name. */
  customerName: string;
  source: "defender" | "graph";
  alertId: string;
  /** The provider's own id (a Defender alert's `id`). */
  providerAlertId: string;
  /** The alert's lastUpdateTime as the source wrote it (up to 7 fractional digits). */
  lastUpdateTimeExact: string;
  /** The alert JSON exactly as the source sent it. */
  json: string;
  /** The alert row's query columns (title, severity, status, category, classification, determination, firstEventTime, lastEventTime, incidentId, computerDnsName, ...). */
  columns: Record<string, string | undefined>;
  /** `GET /api/tenants/{tenantId}/alerts/{alertId}` on this collector (for records that cannot carry the whole alert). */
  collectorUrl: string;
}

export interface SendReport {
  /** Delivery keys the destination accepted (acknowledged, where it acknowledges). */
  delivered: string[];
  /** Items that were not delivered; `permanent` ones (the destination refuses them as they are) are parked for replay. */
  failed: { deliveryKey: string; permanent: boolean; code: string }[];
  /** The destination asked to wait (Retry-After). */
  retryAfterMs?: number;
  /** The destination asked to be disabled (a webhook's 410): nothing more is sent until an operator enables it. */
  disabled?: { code: string };
}

export interface Destination {
  readonly name: string;
  readonly type: DestinationType;
  /** Items per `send` call. */
  readonly batchSize: number;
  /** Sends a batch. Throws only for a failure of the whole call that says nothing per item (network, 5xx): all items are then retried. */
  send(items: DeliveryItem[]): Promise<SendReport>;
}

/** A failure of a whole send call, with what the destination said (status or network). */
export class DestinationError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = "DestinationError";
  }
}

/** What a destination module may use; passed in by the outbox (no globals). */
export interface DestinationDeps {
  /** The app's own identity (managed identity in Azure), e.g. for the Logs Ingestion API. */
  credential: import("@azure/identity").TokenCredential;
  /** A secret of the app's vault (KEY_VAULT_URL) by name, or undefined when it does not exist. Cached briefly by the caller. */
  secret(name: string): Promise<string | undefined>;
  now(): Date;
  sleep(ms: number): Promise<void>;
  log: import("../platform/services.js").Logger;
}
