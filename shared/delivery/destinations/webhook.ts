import { createHmac } from "node:crypto";
import pLimit from "p-limit";
import { fetch as undiciFetch } from "undici";
import type { WebhookConfig } from "../config.js";
import { type DeliveryItem, type Destination, type DestinationDeps, DestinationError, type SendReport } from "../destination.js";
import { retryAfterMs } from "./retry-after.js";

/**
 * A signed webhook, following Standard Webhooks v1: one POST per alert version with
 * `webhook-id` (the delivery key, so receivers can de-duplicate), `webhook-timestamp` (Unix
 * seconds) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
 * keyed with the bytes after `whsec_` of the secret named by SECRET_NAME. While a secret
 * `<SECRET_NAME>-previous` exists (rotation), the header carries both signatures.
 * 2xx: delivered. 410: the receiver asks to be disabled. 429, 502, 503, 504 and other
 * 5xx or network failures: retried later (Retry-After honoured). Other 4xx: parked.
 */

const CONCURRENCY = 4;
const TIMEOUT_MS = 30_000;

export function createWebhookDestination(config: WebhookConfig, deps: DestinationDeps): Destination {
  const keys = async (): Promise<Buffer[]> => {
    const current = await deps.secret(config.secretName);
    if (!current) throw new DestinationError("SecretMissing", `Key Vault has no secret ${config.secretName}`);
    const previous = await deps.secret(`${config.secretName}-previous`);
    return [current, ...(previous ? [previous] : [])].map((s) => Buffer.from(s.replace(/^whsec_/, ""), "base64"));
  };
  return {
    name: config.name,
    type: "webhook",
    batchSize: 20,
    async send(items: DeliveryItem[]): Promise<SendReport> {
      const secrets = await keys();
      const report: SendReport = { delivered: [], failed: [] };
      let stop: { disabled?: string; retryAfterMs?: number } = {};
      const limit = pLimit(CONCURRENCY);
      await Promise.all(
        items.map((item) =>
          limit(async () => {
            if (stop.disabled !== undefined || stop.retryAfterMs !== undefined) {
              report.failed.push({ deliveryKey: item.deliveryKey, permanent: false, code: "NotSent" });
              return;
            }
            const outcome = await post(config.url, item, secrets);
            if (outcome.status >= 200 && outcome.status < 300) report.delivered.push(item.deliveryKey);
            else if (outcome.status === 410) {
              stop = { disabled: "HTTP410" };
              report.failed.push({ deliveryKey: item.deliveryKey, permanent: false, code: "HTTP410" });
            } else {
              const transient = outcome.status === 0 || outcome.status === 429 || outcome.status >= 500 || outcome.status === 408;
              if (transient && outcome.retryAfterMs !== undefined) stop = { retryAfterMs: outcome.retryAfterMs };
              report.failed.push({
                deliveryKey: item.deliveryKey,
                permanent: !transient,
                code: outcome.status === 0 ? "NetworkError" : `HTTP${outcome.status}`,
              });
            }
          }),
        ),
      );
      if (stop.disabled) report.disabled = { code: stop.disabled };
      if (stop.retryAfterMs !== undefined) report.retryAfterMs = stop.retryAfterMs;
      return report;
    },
  };
}

/** The event body; `data.alert` is the alert JSON embedded exactly as the source sent it. */
export function webhookBody(item: DeliveryItem, at: Date): string {
  const envelope = {
    type: "alert.version",
    timestamp: at.toISOString(),
    data: {
      deliveryKey: item.deliveryKey,
      tenantId: item.tenantId,
      customerName: item.customerName,
      source: item.source,
      alertId: item.alertId,
      providerAlertId: item.providerAlertId,
      lastUpdateTime: item.lastUpdateTimeExact,
      collectorUrl: item.collectorUrl,
    },
  };
  const head = JSON.stringify(envelope);
  return `${head.slice(0, -2)},"alert":${item.json}}}`;
}

export function sign(id: string, timestamp: number, body: string, keys: Buffer[]): string {
  return keys.map((key) => `v1,${createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64")}`).join(" ");
}

async function post(
  url: string,
  item: DeliveryItem,
  keys: Buffer[],
): Promise<{ status: number; retryAfterMs?: number }> {
  // The wall clock, not the app's: receivers check the timestamp against theirs (replay protection).
  const now = new Date();
  const timestamp = Math.floor(now.getTime() / 1000);
  const body = webhookBody(item, now);
  try {
    const response = await undiciFetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "webhook-id": item.deliveryKey,
        "webhook-timestamp": String(timestamp),
        "webhook-signature": sign(item.deliveryKey, timestamp, body, keys),
      },
      body,
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    await response.arrayBuffer();
    const wait = retryAfterMs(response.headers.get("retry-after"), now);
    return wait !== undefined ? { status: response.status, retryAfterMs: wait } : { status: response.status };
  } catch {
    return { status: 0 };
  }
}
