import { odata, type TableClient, type TableEntityResult } from "@azure/data-tables";
import type { Cloud, TenantMode } from "../platform/config.js";
import { isStatus } from "../platform/storage.js";

export const TENANT_STATUSES = ["pending", "active", "reconsent-required", "offboarded"] as const;
export type TenantStatusValue = (typeof TENANT_STATUSES)[number];

/** The `tenants` table row: PartitionKey "tenant", RowKey = lowercase tenant GUID. */
export interface TenantEntity {
  partitionKey: string;
  rowKey: string;
  displayName: string;
  status: TenantStatusValue;
  cloud?: Cloud;
  /**
   * How the tenant is pulled: `delegated` (a user's refresh token in Key Vault) or
   * `application` (client credentials, nothing stored). Set when a consent is verified;
   * absent on rows written before modes existed, which are delegated.
   */
  mode?: TenantMode;
  /** The mode the current consent link onboards with (may differ from `mode` while a switch waits for consent). */
  linkMode?: TenantMode | "";
  /**
   * An application-mode consent was recorded but not yet verified (consent propagating):
   * the timer queues a verification probe until this time.
   */
  consentVerifyUntil?: string;
  /** The last verification failure's code (an AADSTS code, or Forbidden for a 401/403 probe). */
  consentVerifyCode?: string;
  /** Changes on every consent and offboarding; guards refresh-token write-backs. */
  generation: string;
  /** SHA-256 (base64url) of the consent link's secret part, while a link is valid. */
  consentLinkHash?: string;
  consentLinkExpiresAt?: string;
  consentedAt?: string;
  consentedBy?: string;
  /** When the stored refresh token was last written (consent or write-back). */
  refreshTokenWrittenAt?: string;
  /** The Key Vault secret version in use; every other version is disabled. */
  refreshTokenVersion?: string;
  lastErrorCode?: string;
  lastErrorMessage?: string;
  lastErrorAt?: string;
  /** Set while a purge of the tenant's data runs (shared/operator/purge.ts); the purge deletes this row last. */
  purgeId?: string;
  /** The alert source pulled for this tenant; absent: DEFAULT_ALERT_SOURCE. */
  source?: "defender" | "graph";
  /** The source the current consent link grants (a relink may change it); `source` takes it once consent is verified. "" when none. */
  linkSource?: "defender" | "graph" | "";
  /** JSON array of delivery destination names; absent: every enabled destination (shared/delivery/outbox.ts). */
  destinations?: string;
  /**
   * Pull state that versions before the `syncstate` table kept here. The first run of the
   * current engine carries it over once (shared/collection/engine.ts) and never writes it.
   */
  lastPullAt?: string;
  lastSuccessAt?: string;
  alertsStored?: number;
  watermark?: string;
  apiCalls?: string;
}

export type TenantRow = TableEntityResult<TenantEntity>;

export interface TenantStatus {
  tenantId: string;
  displayName: string;
  status: TenantStatusValue;
  /** How the tenant is (or, before its first consent, will be) pulled. */
  mode: TenantMode;
  /** The mode of the pending consent link, when it differs from `mode` (a switch in progress). */
  requestedMode?: TenantMode;
  /** Until when an application-mode consent that is still propagating is verified automatically. */
  consentVerifyUntil?: string;
  cloud?: Cloud;
  consentedAt?: string;
  consentedBy?: string;
  lastPullAt?: string;
  lastSuccessAt?: string;
  lastError?: { code: string; message: string; at: string };
  alertsStored?: number;
  watermark?: string;
}

export const TENANT_PARTITION = "tenant";

export function toStatus(row: TenantEntity): TenantStatus {
  const mode = tenantMode(row);
  const status: TenantStatus = {
    tenantId: row.rowKey,
    displayName: row.displayName,
    status: row.status,
    mode,
  };
  if (row.linkMode && row.linkMode !== mode) status.requestedMode = row.linkMode;
  if (row.consentVerifyUntil) status.consentVerifyUntil = row.consentVerifyUntil;
  if (row.cloud) status.cloud = row.cloud;
  if (row.consentedAt) status.consentedAt = row.consentedAt;
  if (row.consentedBy) status.consentedBy = row.consentedBy;
  if (row.lastPullAt) status.lastPullAt = row.lastPullAt;
  if (row.lastSuccessAt) status.lastSuccessAt = row.lastSuccessAt;
  if (row.lastErrorCode) {
    status.lastError = { code: row.lastErrorCode, message: row.lastErrorMessage ?? "", at: row.lastErrorAt ?? "" };
  }
  if (typeof row.alertsStored === "number") status.alertsStored = row.alertsStored;
  if (row.watermark) status.watermark = row.watermark;
  return status;
}

/** The mode a tenant is pulled with; before its first consent, the mode its link onboards with. */
export function tenantMode(row: Pick<TenantEntity, "mode" | "linkMode" | "consentedAt">): TenantMode {
  if (row.mode) return row.mode;
  if (!row.consentedAt && row.linkMode) return row.linkMode;
  return "delegated";
}

export async function getTenant(table: TableClient, tenantId: string): Promise<TenantRow | undefined> {
  try {
    return await table.getEntity<TenantEntity>(TENANT_PARTITION, tenantId);
  } catch (err) {
    if (isStatus(err, 404)) return undefined;
    throw err;
  }
}

export async function listTenants(table: TableClient): Promise<TenantRow[]> {
  const rows: TenantRow[] = [];
  const filter = odata`PartitionKey eq ${TENANT_PARTITION}`;
  for await (const row of table.listEntities<TenantEntity>({ queryOptions: { filter } })) rows.push(row);
  return rows.sort((a, b) => a.rowKey.localeCompare(b.rowKey));
}

/**
 * A Merge update. Table Storage cannot drop a column in a Merge, so an empty string
 * means "cleared" for the optional text columns; `toStatus` hides empty values.
 */
export type TenantPatch = Partial<Omit<TenantEntity, "partitionKey" | "rowKey">>;

export const CLEARED_ERROR = { lastErrorCode: "", lastErrorMessage: "", lastErrorAt: "" } as const;

/**
 * Merges a patch into a tenant row if its ETag still matches. Returns the new ETag, or
 * undefined when the row changed (412) or disappeared (404) in the meantime.
 */
export async function patchTenant(
  table: TableClient,
  tenantId: string,
  etag: string,
  patch: TenantPatch,
): Promise<string | undefined> {
  try {
    const result = await table.updateEntity(
      { partitionKey: TENANT_PARTITION, rowKey: tenantId, ...patch } as TenantEntity,
      "Merge",
      { etag },
    );
    return result.etag;
  } catch (err) {
    if (isStatus(err, 404, 412)) return undefined;
    throw err;
  }
}
