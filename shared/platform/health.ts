import { odata } from "@azure/data-tables";
import type { Services } from "./services.js";
import { TABLES } from "./storage.js";

/**
 * GET /api/health: storage and Key Vault answer, and the app's own Entra credential has not
 * been rejected. Checks run at most every 30 s per instance; callers get the cached answer,
 * so they cannot drive traffic to Key Vault. The answer names failing parts, never errors.
 */
export const HEALTH_CACHE_MS = 30_000;
const APP_PARTITION = "app";
const CLIENT_ROW = "client-credential";

export interface Health {
  status: "ok" | "unhealthy";
  failing?: ("storage" | "keyVault" | "clientCredential")[];
}

let cached: { at: number; value: Promise<Health> } | undefined;

export function checkHealth(svc: Services): Promise<Health> {
  const now = svc.now().getTime();
  if (!cached || now - cached.at >= HEALTH_CACHE_MS) {
    cached = { at: now, value: runChecks(svc) };
  }
  return cached.value;
}

export function resetHealthCache(): void {
  cached = undefined;
}

async function runChecks(svc: Services): Promise<Health> {
  const failing: NonNullable<Health["failing"]> = [];
  const storage = (async () => {
    const table = svc.storage.table(TABLES.appState);
    const filter = odata`PartitionKey eq ${APP_PARTITION} and RowKey eq ${CLIENT_ROW}`;
    for await (const row of table.listEntities<{ failing?: boolean }>({ queryOptions: { filter } })) {
      if (row.failing) failing.push("clientCredential");
    }
  })().catch(() => failing.push("storage"));
  const vault = svc.vault.ping().catch(() => failing.push("keyVault"));
  await Promise.all([storage, vault]);
  return failing.length === 0 ? { status: "ok" } : { status: "unhealthy", failing: failing.sort() };
}

/** Records whether Entra accepted the app's own client credential (set by pulls). */
export async function recordClientCredential(svc: Services, failing: boolean, code?: string): Promise<void> {
  await svc.storage.table(TABLES.appState).upsertEntity(
    {
      partitionKey: APP_PARTITION,
      rowKey: CLIENT_ROW,
      failing,
      code: code ?? "",
      at: svc.now().toISOString(),
    },
    "Replace",
  );
}
