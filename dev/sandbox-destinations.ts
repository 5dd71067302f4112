/**
 * The sandbox's delivery destinations (docs/delivery.md), one of each type, on loopback
 * ports: a fake Logs Ingestion endpoint standing in for Microsoft Sentinel's data
 * collection rule, a fake Splunk HTTP Event Collector, and a webhook receiver that checks
 * every signature with the official `standardwebhooks` package. Their secrets (the HEC
 * token, the webhook's `whsec_` secret) are made anew at every start and go into the
 * simulated Key Vault only; the app settings name them, as in Azure.
 *
 * What each destination received is counted per alert (the latest version, by delivery
 * key) without keeping the bodies, so a sandbox left running for a day stays small.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { SENTINEL_COLUMNS, SENTINEL_STREAM } from "../shared/delivery/destinations/sentinel.js";
import { toTicks } from "../simulators/alerts.js";
import type { FakeKeyVault } from "../simulators/keyvault.js";
import { FakeLogsIngestion } from "../simulators/logs-ingestion.js";
import type { FakeManagedIdentity } from "../simulators/managed-identity.js";
import { FakeSplunkHec } from "../simulators/splunk-hec.js";
import type { TestCerts } from "../simulators/tls.js";
import { WebhookReceiver } from "../simulators/webhook-receiver.js";

/** Immutable id of the simulated data collection rule (DESTINATIONS__sentinel__DCR_IMMUTABLE_ID). */
export const SANDBOX_DCR_IMMUTABLE_ID = "dcr-5a4d0b0c5e1f4a2b9c3d7e6f8a9b0c1d";
/** Key Vault secret names the settings give (the values never reach local.settings.json). */
export const SANDBOX_HEC_TOKEN_SECRET = "splunk-hec-token";
export const SANDBOX_WEBHOOK_SECRET_NAME = "webhook-signing-secret";
/** The Splunk index the sandbox's HEC token may write to. */
export const SANDBOX_SPLUNK_INDEX = "mssp";
export const SANDBOX_WEBHOOK_PATH = "/hooks/alerts";

export type SandboxDestinationName = "sentinel" | "splunk" | "webhook";
export const SANDBOX_DESTINATION_NAMES: readonly SandboxDestinationName[] = ["sentinel", "splunk", "webhook"];

export interface DestinationReceipt {
  /** The destination's name in the app settings (`DESTINATIONS__<name>__*`). */
  name: SandboxDestinationName;
  /** What the simulator stands in for. */
  label: string;
  /** What one received item is. */
  unit: string;
  url: string;
  /** Items received (rows, events, signed posts), resends and replays included. */
  received: number;
  /** Distinct alerts received. */
  alerts: number;
  /** Times an alert arrived at an older version than one received before (the outbox promises none). */
  olderAfterNewer: number;
  /** Items at fault: rows with columns or types the stream does not declare, webhooks whose signature did not verify (answered 401), unreadable delivery keys. */
  faulty: number;
}

/** `tenantId:source:alertId:lastUpdateTimeExact`, the delivery key every destination carries. */
const DELIVERY_KEY = /^([0-9a-f-]{36}):([a-z]+):(.+):(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,7})?(?:Z|[+-]\d\d:\d\d))$/i;

class Receipts {
  received = 0;
  faulty = 0;
  olderAfterNewer = 0;
  /** `tenantId|source|alertId` -> the latest version received. */
  readonly latest = new Map<string, { exact: string; ticks: bigint }>();

  add(deliveryKey: unknown): void {
    this.received++;
    const m = typeof deliveryKey === "string" ? DELIVERY_KEY.exec(deliveryKey) : null;
    if (!m) {
      this.faulty++;
      return;
    }
    const key = `${m[1]!.toLowerCase()}|${m[2]}|${m[3]}`;
    const exact = m[4]!;
    let ticks: bigint;
    try {
      ticks = toTicks(exact);
    } catch {
      ticks = 0n;
    }
    const before = this.latest.get(key);
    if (before && before.ticks > ticks) {
      this.olderAfterNewer++;
      return;
    }
    this.latest.set(key, { exact, ticks });
  }
}

export interface SandboxDestinationsOptions {
  certs: TestCerts;
  /** Requested ports (0 = any free one). */
  ports: { logsIngestion: number; splunkHec: number; webhook: number };
  /** The Logs Ingestion fake accepts only this identity's tokens for https://monitor.azure.com. */
  identity: FakeManagedIdentity;
  /** The HEC token uses indexer acknowledgement, and the app is told to wait for it (USE_ACK). */
  splunkAck?: boolean;
}

export interface SandboxDestinations {
  logsIngestion: FakeLogsIngestion;
  splunk: FakeSplunkHec;
  webhook: WebhookReceiver;
  /** The servers to start (each named by its port) and stop. */
  servers: { port: "logsIngestion" | "splunkHec" | "webhook"; start(): Promise<void>; stop(): Promise<void> }[];
  /** Puts the HEC token and the webhook secret into the vault, under the names the settings give. */
  storeSecrets(vault: FakeKeyVault): void;
  /** `DESTINATIONS__*` app settings for the three (after the servers started). */
  settings(): Record<string, string>;
  receipts(): DestinationReceipt[];
  /** The latest version each alert reached a destination at: `tenantId|source|alertId` -> lastUpdateTime as the source wrote it. */
  deliveredVersions(name: SandboxDestinationName): Map<string, string>;
  /** One line for the log: what each destination received. */
  statusLine(): string;
}

export function createSandboxDestinations(options: SandboxDestinationsOptions): SandboxDestinations {
  const receipts: Record<SandboxDestinationName, Receipts> = { sentinel: new Receipts(), splunk: new Receipts(), webhook: new Receipts() };
  const hecToken = randomUUID();
  const webhookSecret = `whsec_${randomBytes(32).toString("base64")}`;
  const ack = options.splunkAck === true;

  const logsIngestion = new FakeLogsIngestion({
    certs: options.certs,
    port: options.ports.logsIngestion,
    verifyToken: (token, audience) => options.identity.isValid(token, audience),
    keepRecords: false,
    onRecord: (r) => {
      receipts.sentinel.add(r.record.DeliveryKey);
      if (r.unknownColumns.length > 0 || r.typeProblems.length > 0) receipts.sentinel.faulty++;
    },
  });
  logsIngestion.addRule(SANDBOX_DCR_IMMUTABLE_ID, { [SENTINEL_STREAM]: SENTINEL_COLUMNS });

  const splunk = new FakeSplunkHec({
    certs: options.certs,
    port: options.ports.splunkHec,
    keepEvents: false,
    onEvent: (e) => receipts.splunk.add(e.fields?.deliveryKey),
  });
  splunk.addToken(hecToken, { name: "sandbox", ack, indexes: [SANDBOX_SPLUNK_INDEX], defaultIndex: SANDBOX_SPLUNK_INDEX });

  const webhook = new WebhookReceiver(options.certs, webhookSecret, SANDBOX_WEBHOOK_PATH, {
    keep: false,
    onReceived: (w) => receipts.webhook.add(w.id),
  });

  const describe = (): { name: SandboxDestinationName; label: string; unit: string; url: string }[] => [
    { name: "sentinel", label: "Microsoft Sentinel (Logs Ingestion)", unit: "rows", url: logsIngestion.url },
    { name: "splunk", label: "Splunk HTTP Event Collector", unit: "events", url: splunk.url },
    { name: "webhook", label: "signed webhook receiver", unit: "posts", url: webhook.url },
  ];

  const list = (): DestinationReceipt[] =>
    describe().map((d) => {
      const r = receipts[d.name];
      const faulty = d.name === "webhook" ? r.faulty + webhook.rejected.length : r.faulty;
      return { ...d, received: r.received, alerts: r.latest.size, olderAfterNewer: r.olderAfterNewer, faulty };
    });

  return {
    logsIngestion,
    splunk,
    webhook,
    servers: [
      { port: "logsIngestion", start: () => logsIngestion.start(), stop: () => logsIngestion.stop() },
      { port: "splunkHec", start: () => splunk.start(), stop: () => splunk.stop() },
      { port: "webhook", start: () => webhook.start(options.ports.webhook), stop: () => webhook.stop() },
    ],
    storeSecrets(vault) {
      vault.putSecret(SANDBOX_HEC_TOKEN_SECRET, hecToken, "Splunk HEC token (sandbox)");
      vault.putSecret(SANDBOX_WEBHOOK_SECRET_NAME, webhookSecret, "webhook signing secret (sandbox)");
    },
    settings: () => ({
      DESTINATIONS__sentinel__TYPE: "sentinel",
      DESTINATIONS__sentinel__DCR_ENDPOINT: logsIngestion.url,
      DESTINATIONS__sentinel__DCR_IMMUTABLE_ID: SANDBOX_DCR_IMMUTABLE_ID,
      DESTINATIONS__sentinel__STREAM: SENTINEL_STREAM,
      DESTINATIONS__splunk__TYPE: "splunk",
      DESTINATIONS__splunk__URL: splunk.url,
      DESTINATIONS__splunk__TOKEN_SECRET_NAME: SANDBOX_HEC_TOKEN_SECRET,
      DESTINATIONS__splunk__INDEX: SANDBOX_SPLUNK_INDEX,
      DESTINATIONS__splunk__USE_ACK: String(ack),
      DESTINATIONS__webhook__TYPE: "webhook",
      DESTINATIONS__webhook__URL: webhook.url,
      DESTINATIONS__webhook__SECRET_NAME: SANDBOX_WEBHOOK_SECRET_NAME,
    }),
    receipts: list,
    deliveredVersions(name) {
      return new Map([...receipts[name].latest].map(([key, v]) => [key, v.exact]));
    },
    statusLine() {
      const parts = list().map((d) => {
        const notes = [`${d.alerts} alerts`];
        if (d.faulty > 0) notes.push(`${d.faulty} faulty`);
        if (d.olderAfterNewer > 0) notes.push(`${d.olderAfterNewer} older after newer`);
        return `${d.name} ${d.received} ${d.unit} (${notes.join(", ")})`;
      });
      return `received: ${parts.join("; ")}`;
    },
  };
}
