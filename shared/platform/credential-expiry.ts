import type { SecretProperties } from "@azure/keyvault-secrets";
import { errorName } from "./http.js";
import type { Logger, Services } from "./services.js";
import { isStatus, TABLES } from "./storage.js";

/**
 * Expiry of the MSSP app's client secret, read from the `expires` attribute that
 * infra/scripts/register-app.sh sets on the Key Vault secret (MSSP_CLIENT_SECRET_NAME,
 * default `mssp-client-secret`). Only the secret's properties are read, never its value.
 *
 * Nothing here assumes the secret exists: an app that authenticates without one (a
 * managed identity as federated credential) simply has `kind: "none"`. With
 * MSSP_CLIENT_CREDENTIAL other than `secret` the daily check does nothing at all.
 */
export const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 24 * 60 * 60 * 1000;

export type CredentialExpiry =
  /** The secret exists and carries an expiry. `daysLeft` is negative once it has passed. */
  | { kind: "expires"; secretName: string; expiresOn: string; daysLeft: number; warn: boolean }
  /** The secret exists without an expiry (stored by hand). */
  | { kind: "no-expiry"; secretName: string }
  /** No enabled version of the secret: the app does not use a client secret from Key Vault. */
  | { kind: "none"; secretName: string };

/** What this module needs of a SecretClient. */
export interface SecretVersions {
  listPropertiesOfSecretVersions(name: string): AsyncIterable<SecretProperties>;
}

/**
 * The expiry of the version Key Vault references resolve to (the newest enabled one).
 * Reusable by any caller with a SecretClient, for example a health details route.
 */
export async function readCredentialExpiry(secrets: SecretVersions, secretName: string, now: Date): Promise<CredentialExpiry> {
  let current: SecretProperties | undefined;
  try {
    for await (const version of secrets.listPropertiesOfSecretVersions(secretName)) {
      if (version.enabled === false) continue;
      const created = version.createdOn?.getTime() ?? 0;
      if (!current || created >= (current.createdOn?.getTime() ?? 0)) current = version;
    }
  } catch (err) {
    if (isStatus(err, 404)) return { kind: "none", secretName };
    throw err;
  }
  if (!current) return { kind: "none", secretName };
  if (!current.expiresOn) return { kind: "no-expiry", secretName };
  const daysLeft = Math.floor((current.expiresOn.getTime() - now.getTime()) / DAY_MS);
  return {
    kind: "expires",
    secretName,
    expiresOn: current.expiresOn.toISOString(),
    daysLeft,
    warn: daysLeft < EXPIRY_WARNING_DAYS,
  };
}

export const CHECK_PARTITION = "app";
export const CHECK_ROW = "credential-expiry-check";

/** The last daily check's result, as the timer stored it (health reads it: no Key Vault call). */
export interface ExpiryCheckEntity {
  checkedOn?: string;
  result?: CredentialExpiry["kind"];
  expiresOn?: string;
}

/**
 * Called by the pull timer on every run; reads Key Vault at most once a day (UTC) per app.
 * While fewer than 30 days remain it logs `app.credential.expiring days=<n>`, which the
 * alert rule of infra/modules/alerts.bicep matches. The day is claimed with an ETag, so
 * two timer runs never both log it. Never throws: a failed check logs
 * `app.credential.check-failed error=<name>` and is retried on the next run.
 */
export async function checkCredentialExpiry(svc: Services, log: Logger): Promise<CredentialExpiry | undefined> {
  if (svc.config.credential.kind !== "secret") return undefined;
  const now = svc.now();
  const today = now.toISOString().slice(0, 10);
  const table = svc.storage.table(TABLES.appState);
  try {
    let etag: string | undefined;
    try {
      const row = await table.getEntity<{ checkedOn?: string }>(CHECK_PARTITION, CHECK_ROW);
      if (row.checkedOn === today) return undefined;
      etag = row.etag;
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
    const expiry = await readCredentialExpiry(svc.secrets, svc.config.clientSecretName, now);
    const entity = {
      partitionKey: CHECK_PARTITION,
      rowKey: CHECK_ROW,
      checkedOn: today,
      result: expiry.kind,
      expiresOn: expiry.kind === "expires" ? expiry.expiresOn : "",
    };
    try {
      if (etag) await table.updateEntity(entity, "Replace", { etag });
      else await table.createEntity(entity);
    } catch (err) {
      if (isStatus(err, 409, 412)) return undefined; // another run checked today
      throw err;
    }
    if (expiry.kind === "expires" && expiry.warn) log.warn(`app.credential.expiring days=${expiry.daysLeft}`);
    return expiry;
  } catch (err) {
    log.warn(`app.credential.check-failed error=${errorName(err)}`);
    return undefined;
  }
}
