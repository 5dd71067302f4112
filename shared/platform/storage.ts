import { TableClient as TableClientClass, type TableClient, TableServiceClient } from "@azure/data-tables";
import { DefaultAzureCredential, ManagedIdentityCredential, type TokenCredential } from "@azure/identity";
import { type QueueClient, QueueServiceClient } from "@azure/storage-queue";
import type { StorageConnection } from "./config.js";

/** Names of everything the app keeps in the ALERTS_STORAGE account. */
export const TABLES = {
  tenants: "tenants",
  consentStates: "consentstates",
  alerts: "alerts",
  alertBodies: "alertbodies",
  appState: "appstate",
  syncState: "syncstate",
  /** Who did what (shared/operator/audit.ts) and purge records; kept for AUDIT_RETENTION_DAYS, never purged with a tenant. */
  audit: "audit",
  deliveryState: "deliverystate",
} as const;
export type TableName = (typeof TABLES)[keyof typeof TABLES];

/** The queue the timer fills and the worker drains (one message per tenant pull). */
export const PULL_QUEUE = "tenant-pulls";
/** One message per tenant purge (DELETE /api/tenants/{id}?purge=true); the purge worker drains it. */
export const PURGE_QUEUE = "tenant-purges";
/** Wake-ups of the delivery worker (one message per tenant with alerts to deliver, or a replay). */
export const DELIVERY_QUEUE = "tenant-deliveries";

export interface Storage {
  table(name: TableName): TableClient;
  pullQueue: QueueClient;
  purgeQueue: QueueClient;
  deliveryQueue: QueueClient;
  /** Creates the tables and the queue if they are missing (idempotent). */
  ensure(): Promise<void>;
}

/**
 * Builds the table and queue clients from ALERTS_STORAGE: a connection string (Azurite:
 * UseDevelopmentStorage=true), or the identity-based form that Azure Functions itself
 * uses for bindings (service URIs plus a managed identity).
 */
export function createStorage(connection: StorageConnection): Storage {
  let table: (name: TableName) => TableClient;
  let queues: QueueServiceClient;
  let service: TableServiceClient;
  if (connection.kind === "connectionString") {
    const cs = connection.connectionString;
    // Plain http is only ever reachable through an explicit emulator connection string.
    const insecure = /UseDevelopmentStorage=true|DefaultEndpointsProtocol=http;|Endpoint=http:/i.test(cs);
    const options = insecure ? { allowInsecureConnection: true } : {};
    table = (name) => TableClientClass.fromConnectionString(cs, name, options);
    service = TableServiceClient.fromConnectionString(cs, options);
    queues = QueueServiceClient.fromConnectionString(cs);
  } else {
    const credential: TokenCredential = connection.clientId
      ? new ManagedIdentityCredential({ clientId: connection.clientId })
      : new DefaultAzureCredential();
    const tableUri = connection.tableServiceUri; // https only (config)
    table = (name) => new TableClientClass(tableUri, name, credential);
    service = new TableServiceClient(tableUri, credential);
    queues = new QueueServiceClient(connection.queueServiceUri, credential);
  }
  const pullQueue = queues.getQueueClient(PULL_QUEUE);
  const deliveryQueue = queues.getQueueClient(DELIVERY_QUEUE);
  const purgeQueue = queues.getQueueClient(PURGE_QUEUE);
  const clients = new Map<TableName, TableClient>();
  let ensured: Promise<void> | undefined;
  return {
    table(name) {
      let client = clients.get(name);
      if (!client) {
        client = table(name);
        clients.set(name, client);
      }
      return client;
    },
    pullQueue,
    purgeQueue,
    deliveryQueue,
    ensure() {
      ensured ??= (async () => {
        await Promise.all([
          ...Object.values(TABLES).map((name) => service.createTable(name)),
          pullQueue.createIfNotExists(),
          purgeQueue.createIfNotExists(),
          deliveryQueue.createIfNotExists(),
        ]);
      })().catch((err) => {
        ensured = undefined;
        throw err;
      });
      return ensured;
    },
  };
}

export function isStatus(err: unknown, ...statuses: number[]): boolean {
  const status = (err as { statusCode?: number } | null)?.statusCode;
  return typeof status === "number" && statuses.includes(status);
}
