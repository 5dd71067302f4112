import type { SecretClient } from "@azure/keyvault-secrets";
import { isStatus } from "./storage.js";

/**
 * Refresh tokens in Key Vault, one secret per tenant: `tenant-<tenant GUID>-refresh-token`.
 * Every write creates a new version; the tenant row names the version in use
 * (`refreshTokenVersion`), and every other version is disabled, because Entra does not
 * revoke old refresh tokens and an enabled old version is a live credential.
 */
export function refreshTokenSecretName(tenantId: string): string {
  return `tenant-${tenantId.toLowerCase()}-refresh-token`;
}

export interface StoredToken {
  value: string;
  version: string;
}

export class SecretUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SecretUnavailableError";
  }
}

export class TokenVault {
  constructor(
    private readonly client: SecretClient,
    private readonly pollIntervalMs = 500,
  ) {}

  /** Reads a version (or the latest), re-enabling the version the tenant row names if a race disabled it. */
  async read(tenantId: string, version: string | undefined): Promise<StoredToken | undefined> {
    const name = refreshTokenSecretName(tenantId);
    for (let attempt = 0; ; attempt++) {
      try {
        const secret = await this.client.getSecret(name, version ? { version } : {});
        if (!secret.value || !secret.properties.version) return undefined;
        return { value: secret.value, version: secret.properties.version };
      } catch (err) {
        if (isStatus(err, 404)) return undefined;
        if (isStatus(err, 403) && version && attempt === 0 && (await this.isDisabled(name, version))) {
          await this.client.updateSecretProperties(name, version, { enabled: true });
          continue;
        }
        throw err;
      }
    }
  }

  private async isDisabled(name: string, version: string): Promise<boolean> {
    for await (const props of this.client.listPropertiesOfSecretVersions(name)) {
      if (props.version === version) return props.enabled === false;
    }
    return false;
  }

  /**
   * Writes a new version. A name in the soft-deleted state answers 409, and purging may be
   * forbidden by purge protection, so the deleted secret is recovered first; its old
   * versions come back enabled and the caller disables them with `disableAllExcept`.
   * With `allowRecover: false` (refresh-token write-backs) a deleted secret stays deleted:
   * an offboarding must never be undone by a pull that was already running.
   */
  async write(
    tenantId: string,
    value: string,
    tags: Record<string, string>,
    allowRecover: boolean,
  ): Promise<string | undefined> {
    const name = refreshTokenSecretName(tenantId);
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const secret = await this.client.setSecret(name, value, { tags, contentType: "application/x-refresh-token" });
        if (!secret.properties.version) throw new SecretUnavailableError("Key Vault returned no secret version");
        return secret.properties.version;
      } catch (err) {
        if (!isStatus(err, 409)) throw err;
        if (!allowRecover) return undefined;
        try {
          const poller = await this.client.beginRecoverDeletedSecret(name, { intervalInMs: this.pollIntervalMs });
          await poller.pollUntilDone();
        } catch (recoverErr) {
          // 409 again while a deletion is still in progress: try once more after a pause.
          if (!isStatus(recoverErr, 404, 409)) throw recoverErr;
          await new Promise((resolve) => setTimeout(resolve, this.pollIntervalMs));
        }
      }
    }
    throw new SecretUnavailableError("Key Vault kept answering 409 for the tenant's secret");
  }

  /** Disables every enabled version except `keep`. */
  async disableAllExcept(tenantId: string, keep: string): Promise<void> {
    const name = refreshTokenSecretName(tenantId);
    const stale: string[] = [];
    for await (const props of this.client.listPropertiesOfSecretVersions(name)) {
      if (props.version && props.version !== keep && props.enabled !== false) stale.push(props.version);
    }
    for (const version of stale) await this.disable(tenantId, version);
  }

  async disable(tenantId: string, version: string): Promise<void> {
    try {
      await this.client.updateSecretProperties(refreshTokenSecretName(tenantId), version, { enabled: false });
    } catch (err) {
      if (!isStatus(err, 404, 409)) throw err;
    }
  }

  /** Soft-deletes the tenant's secret (all versions). A missing secret is fine. */
  async remove(tenantId: string): Promise<void> {
    try {
      const poller = await this.client.beginDeleteSecret(refreshTokenSecretName(tenantId), {
        intervalInMs: this.pollIntervalMs,
      });
      await poller.pollUntilDone();
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
  }

  /** A cheap call that proves the vault answers and the identity is allowed in. */
  async ping(): Promise<void> {
    try {
      await this.client.getSecret("health-probe");
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
  }
}
