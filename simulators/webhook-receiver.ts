import type { IncomingMessage, ServerResponse } from "node:http";
import { Webhook } from "standardwebhooks";
import { type Listening, listenHttps, readBody } from "./https.js";
import type { TestCerts } from "./tls.js";

/**
 * A webhook receiver that checks each delivery with the official `standardwebhooks`
 * package (not the collector's own code), records what arrived, and answers what a test
 * or the sandbox asks for: 2xx, 500s for a while, 429 with Retry-After, 410 Gone.
 */

export interface ReceivedWebhook {
  id: string;
  timestamp: number;
  /** The verified payload (parsed JSON). */
  payload: {
    type: string;
    data: {
      deliveryKey: string;
      tenantId: string;
      alertId: string;
      lastUpdateTime: string;
      source: string;
      alert: { id: string; lastUpdateTime: string } & Record<string, unknown>;
    };
  };
  /** The raw body as it arrived. */
  body: string;
}

/** What to answer; `times` requests long (default 1). */
export type ReceiverFault = { status: number; retryAfterSeconds?: number; times?: number };

export interface WebhookReceiverOptions {
  /** Keep each delivery in `received` (default true); false keeps none (the sandbox counts them with onReceived). */
  keep?: boolean;
  /** Called with each verified delivery (also when keep is false). */
  onReceived?: (webhook: ReceivedWebhook) => void;
}

export class WebhookReceiver {
  readonly received: ReceivedWebhook[] = [];
  /** Requests whose signature did not verify (they are answered 401). */
  readonly rejected: { id: string; reason: string }[] = [];
  /** Answer every request with this until cleared (e.g. a destination down for an hour). */
  down: { status: number; retryAfterSeconds?: number } | undefined;
  private readonly faults: ReceiverFault[] = [];
  private listening: Listening | undefined;
  private readonly verifier: Webhook;

  constructor(
    private readonly certs: TestCerts,
    /** The signing secret as the collector's vault holds it: `whsec_<base64>`. */
    readonly secret: string,
    private readonly path = "/hooks/alerts",
    private readonly options: WebhookReceiverOptions = {},
  ) {
    this.verifier = new Webhook(secret.replace(/^whsec_/, ""));
  }

  get url(): string {
    if (!this.listening) throw new Error("WebhookReceiver is not started");
    return `${this.listening.url}${this.path}`;
  }

  async start(port = 0): Promise<void> {
    this.listening = await listenHttps(this.certs, (req, res) => void this.handle(req, res), { port });
  }

  async stop(): Promise<void> {
    await this.listening?.close();
    this.listening = undefined;
  }

  inject(fault: ReceiverFault): void {
    this.faults.push(fault);
  }

  /** The latest version received of each alert, by `tenantId|alertId`. */
  latest(): Map<string, ReceivedWebhook> {
    const out = new Map<string, ReceivedWebhook>();
    for (const r of this.received) out.set(`${r.payload.data.tenantId}|${r.payload.data.alertId}`, r);
    return out;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, 64 * 1024 * 1024);
    if (req.method !== "POST" || req.url !== this.path) {
      res.writeHead(404).end();
      return;
    }
    const fault = this.down ?? this.nextFault();
    if (fault) {
      const headers: Record<string, string> = fault.retryAfterSeconds !== undefined ? { "retry-after": String(fault.retryAfterSeconds) } : {};
      res.writeHead(fault.status, headers).end();
      return;
    }
    const headers = {
      "webhook-id": String(req.headers["webhook-id"] ?? ""),
      "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""),
      "webhook-signature": String(req.headers["webhook-signature"] ?? ""),
    };
    let payload: ReceivedWebhook["payload"];
    try {
      payload = this.verifier.verify(body, headers) as ReceivedWebhook["payload"];
    } catch (err) {
      this.rejected.push({ id: headers["webhook-id"], reason: (err as Error).message });
      res.writeHead(401).end();
      return;
    }
    const webhook: ReceivedWebhook = { id: headers["webhook-id"], timestamp: Number(headers["webhook-timestamp"]), payload, body };
    if (this.options.keep !== false) this.received.push(webhook);
    this.options.onReceived?.(webhook);
    res.writeHead(204).end();
  }

  private nextFault(): ReceiverFault | undefined {
    const fault = this.faults[0];
    if (!fault) return undefined;
    fault.times = (fault.times ?? 1) - 1;
    if (fault.times <= 0) this.faults.shift();
    return fault;
  }
}
