import { useState } from "preact/hooks";
import { type AlertSummary, alertJson, callApi, type TenantStatus } from "../api.js";
import type { Session } from "../auth.js";
import { when } from "../format.js";
import { ErrorLine, problem, Section, useLoad } from "./common.js";

const SEVERITIES = ["", "Informational", "Low", "Medium", "High", "UnSpecified"];
const STATUSES = ["", "New", "InProgress", "Resolved", "Unknown"];

/** Alerts filtered by tenant, severity, status and time; one opens as its JSON. */
/** A labelled drop-down of fixed values; the empty value reads "Any". */
function Choice(props: { label: string; id: string; value: string; values: string[]; onChange: (e: Event) => void }) {
  return (
    <label>
      {props.label}
      <select value={props.value} onChange={props.onChange} id={props.id}>
        {props.values.map((v) => (
          <option value={v} key={v}>
            {v || "Any"}
          </option>
        ))}
      </select>
    </label>
  );
}

export function AlertsView({ session, tenantId: initial }: { session: Session; tenantId?: string }) {
  const tenants = useLoad(() => callApi<{ tenants: TenantStatus[] }>(session.token, "tenants"));
  const [filter, setFilter] = useState({ tenantId: initial ?? "", severity: "", status: "", since: "" });
  const [page, setPage] = useState<{ alerts: AlertSummary[]; next?: string }>();
  const [failure, setFailure] = useState<string>();
  const [open, setOpen] = useState<{ alert: AlertSummary; json?: string; error?: string }>();
  const search = async (continuation?: string) => {
    setFailure(undefined);
    const q = new URLSearchParams({ top: "50" });
    if (filter.tenantId) q.set("tenantId", filter.tenantId);
    if (filter.severity) q.set("severity", filter.severity);
    if (filter.status) q.set("status", filter.status);
    if (filter.since) q.set("since", new Date(filter.since).toISOString());
    if (continuation) q.set("continuationToken", continuation);
    try {
      const result = await callApi<{ alerts: AlertSummary[]; continuationToken?: string }>(session.token, `alerts?${q}`);
      setPage({ alerts: result.alerts, ...(result.continuationToken ? { next: result.continuationToken } : {}) });
    } catch (err) {
      setFailure(problem(err));
    }
  };
  const show = async (alert: AlertSummary) => {
    setOpen({ alert });
    try {
      setOpen({ alert, json: await alertJson(session.token, alert.tenantId, alert.id) });
    } catch (err) {
      setOpen({ alert, error: problem(err) });
    }
  };
  const names = new Map((tenants.data?.tenants ?? []).map((t) => [t.tenantId, t.displayName]));
  const set = (key: keyof typeof filter) => (e: Event) => setFilter({ ...filter, [key]: (e.target as HTMLInputElement).value });
  return (
    <Section title="Alerts">
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          void search();
        }}
      >
        <label>
          Tenant
          <select value={filter.tenantId} onChange={set("tenantId")} id="filter-tenant">
            <option value="">All tenants</option>
            {(tenants.data?.tenants ?? []).map((t) => (
              <option value={t.tenantId} key={t.tenantId}>
                {t.displayName}
              </option>
            ))}
          </select>
        </label>
        <Choice label="Severity" id="filter-severity" value={filter.severity} values={SEVERITIES} onChange={set("severity")} />
        <Choice label="Status" id="filter-status" value={filter.status} values={STATUSES} onChange={set("status")} />
        <label>
          Stored since
          <input type="datetime-local" value={filter.since} onInput={set("since")} />
        </label>
        <button type="submit" class="primary" id="search">
          Show
        </button>
      </form>
      <ErrorLine error={failure} />
      {page && page.alerts.length === 0 && <p class="muted">No alert matches.</p>}
      {page && page.alerts.length > 0 && (
        <table class="cards" id="alerts">
          <thead>
            <tr>
              <th>Alert</th>
              <th>Tenant</th>
              <th>Severity</th>
              <th>Status</th>
              <th>Updated</th>
            </tr>
          </thead>
          <tbody>
            {page.alerts.map((a) => (
              <tr key={`${a.tenantId}/${a.id}`}>
                <td data-label="Alert">
                  <button type="button" class="link" onClick={() => void show(a)}>
                    {a.title ?? a.id}
                  </button>
                  <div class="muted">{a.computerDnsName}</div>
                </td>
                <td data-label="Tenant">{names.get(a.tenantId) ?? a.tenantId}</td>
                <td data-label="Severity">
                  <span class={`badge sev-${(a.severity ?? "").toLowerCase()}`}>{a.severity ?? "–"}</span>
                </td>
                <td data-label="Status">{a.status ?? "–"}</td>
                <td data-label="Updated">{when(a.lastUpdateTime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {page?.next && (
        <button type="button" onClick={() => void search(page.next)}>
          Next page
        </button>
      )}
      {open && (
        <div class="dialog wide" role="dialog" aria-label="Alert JSON" id="alert-json">
          <div class="section-head">
            <h3>{open.alert.title ?? open.alert.id}</h3>
            <button type="button" onClick={() => setOpen(undefined)}>
              Close
            </button>
          </div>
          <ErrorLine error={open.error} />
          <pre>{open.json ?? "Loading…"}</pre>
        </div>
      )}
    </Section>
  );
}
