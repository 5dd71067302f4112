import { callApi, type TenantStatus } from "../api.js";
import type { Session } from "../auth.js";
import { ago, duration, lag, STATUS_WORDS } from "../format.js";
import { ErrorLine, RefreshButton, Section, useLoad } from "./common.js";

/** Every tenant: status, mode, source, last success, lag, lateness, alerts stored, last error in words. */
export function TenantsView({ session, open }: { session: Session; open: (tenantId: string) => void }) {
  const { data, error, loading, reload } = useLoad(() => callApi<{ tenants: TenantStatus[] }>(session.token, "tenants"));
  const tenants = data?.tenants ?? [];
  return (
    <Section
      title="Tenants"
      actions={<RefreshButton reload={reload} loading={loading} />}
    >
      <ErrorLine error={error} />
      {!loading && tenants.length === 0 && !error && <p class="muted">No tenant is registered yet.</p>}
      {tenants.length > 0 && (
        <table class="cards" id="tenants">
          <thead>
            <tr>
              <th>Tenant</th>
              <th>Status</th>
              <th>Mode · source</th>
              <th>Last success</th>
              <th title="How old the newest stored alert is">Lag</th>
              <th>Lateness p99</th>
              <th>Alerts</th>
              <th>Last error</th>
            </tr>
          </thead>
          <tbody>
            {tenants.map((t) => (
              <tr key={t.tenantId} data-tenant={t.tenantId} class={t.lastError ? "failing" : ""}>
                <td data-label="Tenant">
                  <button type="button" class="link" onClick={() => open(t.tenantId)}>
                    {t.displayName}
                  </button>
                  <div class="muted mono">{t.tenantId}</div>
                </td>
                <td data-label="Status">
                  <span class={`badge status-${t.status}`}>{STATUS_WORDS[t.status] ?? t.status}</span>
                  {t.health === "degraded" && <span class="badge degraded">degraded</span>}
                </td>
                <td data-label="Mode · source">
                  {t.mode ?? "delegated"} · {t.source ?? "defender"}
                </td>
                <td data-label="Last success">{ago(t.lastSuccessAt)}</td>
                <td data-label="Lag">{lag(t.watermark)}</td>
                <td data-label="Lateness p99">{t.lateness ? duration(t.lateness.p99Seconds) : "–"}</td>
                <td data-label="Alerts">{t.alertsStored?.toLocaleString() ?? "–"}</td>
                <td data-label="Last error" class="last-error">
                  {t.lastError ? (
                    <>
                      {t.lastError.message || t.lastError.code}
                      <div class="muted">
                        {t.lastError.code} · {ago(t.lastError.at)}
                      </div>
                    </>
                  ) : (
                    "–"
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}
