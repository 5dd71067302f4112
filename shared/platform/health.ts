import { credentialFailureReason } from "./client-credential.js";
import { type AppConfig, type ClientCredentialKind, ConfigError } from "./config.js";
import { CHECK_PARTITION, CHECK_ROW, type ExpiryCheckEntity } from "./credential-expiry.js";
import { errorName } from "./http.js";
import type { Logger, Services } from "./services.js";
import { isStatus, TABLES } from "./storage.js";

/**
 * Health: the app settings are valid, storage and Key Vault answer, and Entra has not
 * rejected the app's own client credential.
 *
 * - The credential state is a row in storage, read on every call, so a rejection seen by
 *   any instance (a pull or a consent) shows on every instance at once.
 * - Only the Key Vault probe is cached, for 30 s per instance, so callers of the anonymous
 *   route cannot drive traffic to Key Vault.
 * - Each cause is logged once when it appears (and once when it clears), naming the part
 *   and the setting to look at, never a value.
 */
export const HEALTH_CACHE_MS = 30_000;
const APP_PARTITION = "app";
const CLIENT_ROW = "client-credential";

export const HEALTH_PARTS = ["config", "storage", "keyVault", "clientCredential"] as const;
export type HealthPart = (typeof HEALTH_PARTS)[number];

/** The setting an operator fixes for each part (named in the log, never its value). */
const PART_SETTING: Record<HealthPart, string> = {
  config: "",
  storage: "ALERTS_STORAGE",
  keyVault: "KEY_VAULT_URL",
  clientCredential: "MSSP_CLIENT_SECRET",
};

/** The setting behind the app's credential, per MSSP_CLIENT_CREDENTIAL. */
const CREDENTIAL_SETTING: Record<AppConfig["credential"]["kind"], string> = {
  secret: "MSSP_CLIENT_SECRET",
  "managed-identity": "MSSP_FIC_CLIENT_ID",
  certificate: "MSSP_CLIENT_CERTIFICATE_KEY_ID",
};

export interface HealthCause {
  part: HealthPart;
  /** e.g. MissingSetting:KEY_VAULT_URL, RestError/403, AADSTS7000222: a kind, never a value. */
  code: string;
  /** When the cause was first seen (by this instance; for clientCredential, by any instance). */
  since: string;
}

/**
 * The app's own credential at customer tenants (MSSP_CLIENT_CREDENTIAL), and for a secret
 * its expiry as the timer's daily check last read it (credential-expiry.ts): health itself
 * never calls Key Vault for it.
 */
export interface CredentialInfo {
  type: ClientCredentialKind;
  /** For `secret`: the expiry of the Key Vault secret MSSP_CLIENT_SECRET_NAME, when it has one. */
  expiresOn?: string;
  daysLeft?: number;
  /** For `secret`: `unknown` before the first daily check, `none` when the secret has no expiry or is not in the vault. */
  expiry?: "unknown" | "none";
}

/** GET /api/health/details. The anonymous GET /api/health shows `status` only. */
export interface HealthReport {
  status: "ok" | "unhealthy";
  failing: HealthPart[];
  causes: HealthCause[];
  /** Absent when the settings are invalid. */
  credential?: CredentialInfo;
}

/** The short form some callers use. */
export interface Health {
  status: "ok" | "unhealthy";
  failing?: HealthPart[];
}

interface ClientCredentialRow {
  failing?: boolean;
  code?: string;
  at?: string;
  since?: string;
}

let vaultProbe: { at: number; value: Promise<string | undefined> } | undefined;
const DAY_MS = 24 * 3600_000;
/** Causes currently failing on this instance -> since; also what was already logged. */
const seen = new Map<string, string>();

/**
 * Checks every part. `load` returns the app's services and throws a ConfigError when the
 * settings are bad; health then reports the bad settings instead of failing itself.
 */
export async function healthReport(load: () => Services, log: Logger): Promise<HealthReport> {
  let svc: Services;
  try {
    svc = load();
  } catch (err) {
    const causes =
      err instanceof ConfigError
        ? err.problems.map((p) => ({
            part: "config" as const,
            code: `${p.kind === "missing" ? "MissingSetting" : "InvalidSetting"}:${p.setting}`,
          }))
        : [{ part: "config" as const, code: errorName(err) }];
    return settle(causes, new Date(), log);
  }
  const [storage, vault, credential] = await Promise.all([storageCauses(svc), vaultCause(svc), credentialInfo(svc)]);
  return { ...settle([...storage, ...vault], svc.now(), log, svc.config), credential };
}

/** The credential type, and for a secret its expiry from the last daily check (a storage read). */
async function credentialInfo(svc: Services): Promise<CredentialInfo> {
  const type = svc.config.credential.kind;
  if (type !== "secret") return { type };
  try {
    const row = await svc.storage.table(TABLES.appState).getEntity<ExpiryCheckEntity>(CHECK_PARTITION, CHECK_ROW);
    if (row.result === "expires" && row.expiresOn) {
      const daysLeft = Math.floor((Date.parse(row.expiresOn) - svc.now().getTime()) / DAY_MS);
      return { type, expiresOn: row.expiresOn, daysLeft };
    }
    return { type, expiry: row.result ? "none" : "unknown" };
  } catch {
    return { type, expiry: "unknown" };
  }
}

/** The short form: status and the failing parts (no log). */
export async function checkHealth(svc: Services): Promise<Health> {
  const silent: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };
  const report = await healthReport(() => svc, silent);
  return report.status === "ok" ? { status: "ok" } : { status: "unhealthy", failing: report.failing };
}

/** Forgets the cached Key Vault probe and the causes seen (tests). */
export function resetHealthCache(): void {
  vaultProbe = undefined;
  seen.clear();
}

type FoundCause = { part: HealthPart; code: string; since?: string };

async function storageCauses(svc: Services): Promise<FoundCause[]> {
  try {
    await svc.storage.ensure();
    const row = await svc.storage
      .table(TABLES.appState)
      .getEntity<ClientCredentialRow>(APP_PARTITION, CLIENT_ROW)
      .catch((err) => {
        if (isStatus(err, 404)) return undefined;
        throw err;
      });
    if (!row?.failing) return [];
    const since = row.since || row.at;
    return [{ part: "clientCredential", code: row.code || "Rejected", ...(since ? { since } : {}) }];
  } catch (err) {
    return [{ part: "storage", code: errorName(err) }];
  }
}

async function vaultCause(svc: Services): Promise<FoundCause[]> {
  const now = svc.now().getTime();
  if (!vaultProbe || now - vaultProbe.at >= HEALTH_CACHE_MS) {
    vaultProbe = {
      at: now,
      value: svc.vault.ping().then(
        () => undefined,
        (err: unknown) => errorName(err),
      ),
    };
  }
  const code = await vaultProbe.value;
  return code === undefined ? [] : [{ part: "keyVault", code }];
}

function settle(found: FoundCause[], now: Date, log: Logger, config?: AppConfig): HealthReport {
  const current = new Set<string>();
  const causes: HealthCause[] = [];
  for (const cause of found) {
    const key = `${cause.part} ${cause.code}`;
    current.add(key);
    let since = seen.get(key);
    if (since === undefined) {
      since = cause.since ?? now.toISOString();
      seen.set(key, since);
      log.warn(`health.failing part=${cause.part}${settingOf(cause.part, config)} code=${cause.code}`);
    }
    causes.push({ part: cause.part, code: cause.code, since: cause.since ?? since });
  }
  for (const key of [...seen.keys()]) {
    if (current.has(key)) continue;
    seen.delete(key);
    const [part, code] = key.split(" ") as [HealthPart, string];
    log.info(`health.recovered part=${part}${settingOf(part, config)} code=${code}`);
  }
  const failing = HEALTH_PARTS.filter((part) => causes.some((c) => c.part === part));
  return failing.length === 0 ? { status: "ok", failing, causes } : { status: "unhealthy", failing, causes };
}

function settingOf(part: HealthPart, config?: AppConfig): string {
  const setting = part === "clientCredential" && config ? CREDENTIAL_SETTING[config.credential.kind] : PART_SETTING[part];
  return setting ? ` setting=${setting}` : "";
}

/**
 * Entra rejected the app's own credential (or its assertion could not be made): logs
 * `app.credential.failed code=<code> credential=<type> reason=<reason>` and turns health's
 * clientCredential part failing on every instance. No tenant's status changes.
 */
export async function reportCredentialFailure(svc: Services, log: Logger, code: string): Promise<void> {
  log.error(`app.credential.failed code=${code} credential=${svc.config.credential.kind} reason=${credentialFailureReason(code)}`);
  await recordClientCredential(svc, true, code);
}

/**
 * Records whether Entra accepted the app's own client credential (pulls and consents).
 * Writes only on a change, so `since` stays the time the current state began.
 */
export async function recordClientCredential(svc: Services, failing: boolean, code?: string): Promise<void> {
  const table = svc.storage.table(TABLES.appState);
  const row = await table.getEntity<ClientCredentialRow>(APP_PARTITION, CLIENT_ROW).catch((err) => {
    if (isStatus(err, 404)) return undefined;
    throw err;
  });
  const sameState = Boolean(row?.failing) === failing && (!failing || (row?.code ?? "") === (code ?? ""));
  if (row && sameState) return;
  if (!row && !failing) return;
  const at = svc.now().toISOString();
  await table.upsertEntity(
    { partitionKey: APP_PARTITION, rowKey: CLIENT_ROW, failing, code: code ?? "", at, since: at },
    "Replace",
  );
}
