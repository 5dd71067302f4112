/** The operator API, called with the signed-in operator's token. Errors carry the API's code and message. */

export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export type TokenSource = () => Promise<string>;

/** `/api/` next to `/api/console/`, whatever host the console was opened on. */
const API = new URL("..", window.location.href);

export async function callApi<T>(token: TokenSource, path: string, init: { method?: string; body?: unknown; accept?: number[] } = {}): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${await token()}` };
  if (init.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(new URL(path, API), {
    method: init.method ?? "GET",
    headers,
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
    cache: "no-store",
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!response.ok && !init.accept?.includes(response.status)) {
    const error = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw new ApiProblem(response.status, error?.code ?? `HTTP${response.status}`, error?.message ?? `The API answered ${response.status}.`);
  }
  return json as T;
}

/** The alert JSON exactly as stored, pretty-printed for reading. */
export async function alertJson(token: TokenSource, tenantId: string, alertId: string): Promise<string> {
  const response = await fetch(new URL(`tenants/${encodeURIComponent(tenantId)}/alerts/${encodeURIComponent(alertId)}`, API), {
    headers: { Authorization: `Bearer ${await token()}` },
    cache: "no-store",
  });
  const text = await response.text();
  if (!response.ok) throw new ApiProblem(response.status, `HTTP${response.status}`, "The alert could not be read.");
  return JSON.stringify(JSON.parse(text), null, 2);
}

export interface TenantStatus {
  tenantId: string;
  displayName: string;
  status: "pending" | "active" | "reconsent-required" | "offboarded";
  health: "ok" | "degraded";
  cloud?: string;
  source?: string;
  mode?: string;
  consentedAt?: string;
  consentedBy?: string;
  lastPullAt?: string;
  lastSuccessAt?: string;
  lastError?: { code: string; message: string; at: string };
  alertsStored?: number;
  watermark?: string;
  lateness?: { p99Seconds: number; maxSeconds: number; foundBySweep24h: number };
  overlapMinutes?: number;
  skippedSlices?: { from: string; to: string; attempts: number; lastCode: string }[];
  warnings?: string[];
}

export interface Registered extends TenantStatus {
  consentUrl: string;
  consentUrlExpiresAt: string;
}

export interface AlertSummary {
  tenantId: string;
  id: string;
  title?: string;
  severity?: string;
  status?: string;
  lastUpdateTime?: string;
  storedAt: string;
  computerDnsName?: string;
}

export interface AuditEntry {
  id: string;
  at: string;
  actor: { type: string; oid: string; upn?: string; appId?: string };
  role: string;
  action: string;
  tenantId?: string;
  result: string;
  status?: number;
  detail?: Record<string, unknown>;
}

export interface HealthDetails {
  status: string;
  failing: string[];
  causes: { part: string; code: string; since: string }[];
  /** The app's credential at customer tenants (MSSP_CLIENT_CREDENTIAL), and a secret's expiry. */
  credential?: { type: string; expiresOn?: string; daysLeft?: number; expiry?: "unknown" | "none" };
  /** Delivery, reported when the app itself is healthy (shared/delivery/status.ts). */
  delivery?: { destinations: DestinationStatus[]; oldestUndelivered?: string };
}

export interface DestinationStatus {
  name: string;
  type: string;
  enabled: boolean;
  /** A webhook's 410 disabled it until an Admin enables it again. */
  disabled?: { at: string; code: string };
  backlogSince?: string;
  backlogAgeSeconds?: number;
  lastSuccessAt?: string;
  lastError?: { code: string; at: string };
  parked: number;
}

export interface PurgeStatus {
  purgeId: string;
  state: string;
  waitingFor?: string;
  deleted: Record<string, number>;
  alertsDeleted: number;
  completedAt?: string;
}
