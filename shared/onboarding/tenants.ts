import { odata, type TableClient, type TableEntityResult } from "@azure/data-tables";
import type { Cloud } from "../platform/config.js";
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
  const status: TenantStatus = {
    tenantId: row.rowKey,
    displayName: row.displayName,
    status: row.status,
  };
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
