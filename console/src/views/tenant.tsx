import { useState } from "preact/hooks";
import type { View } from "../app.js";
import { type AuditEntry, callApi, type PurgeStatus, type Registered, type TenantStatus } from "../api.js";
import type { Session } from "../auth.js";
import { ago, duration, lag, STATUS_WORDS, when } from "../format.js";
import { actorName, ErrorLine, problem, Section, useLoad } from "./common.js";
import { LinkBox } from "./onboard.js";

/** One tenant: its history, pull now, reconcile, re-link, and offboard (with a typed confirmation). */
export function TenantView({ session, tenantId, go }: { session: Session; tenantId: string; go: (view: View) => void }) {
  const path = `tenants/${tenantId}`;
  const { data: t, error, reload } = useLoad(() => callApi<TenantStatus>(session.token, path), [tenantId]);
  const history = useLoad(
    () => (session.can("Admin") ? callApi<{ entries: AuditEntry[] }>(session.token, `audit?tenantId=${tenantId}&top=20`) : Promise.resolve({ entries: [] })),
    [tenantId],
  );
  const [message, setMessage] = useState<string>();
  const [failure, setFailure] = useState<string>();
  const [link, setLink] = useState<Registered>();
  const [hours, setHours] = useState(24);
  const [confirming, setConfirming] = useState(false);
  const act = async (what: string, run: () => Promise<string>) => {
    setMessage(undefined);
    setFailure(undefined);
    try {
      setMessage(await run());
      reload();
      history.reload();
    } catch (err) {
      setFailure(`${what}: ${problem(err)}`);
    }
  };
  if (error) return <ErrorLine error={error} />;
  if (!t) return <p class="muted">Loading…</p>;
  return (
    <>
      <Section
        title={t.displayName}
        actions={
          <button type="button" class="link" onClick={() => go({ name: "tenants" })}>
            ← All tenants
          </button>
        }
      >
        <dl class="facts" id="tenant-facts">
          <dt>Tenant ID</dt>
          <dd class="mono">{t.tenantId}</dd>
          <dt>Status</dt>
          <dd>
            <span class={`badge status-${t.status}`}>{STATUS_WORDS[t.status] ?? t.status}</span> {t.health === "degraded" && <span class="badge degraded">degraded</span>}
          </dd>
          <dt>Consented</dt>
          <dd>{t.consentedAt ? `${when(t.consentedAt)} by ${t.consentedBy ?? "?"}` : "not yet"}</dd>
          <dt>Last pull</dt>
          <dd>{ago(t.lastPullAt)}</dd>
          <dt>Last success</dt>
          <dd>{ago(t.lastSuccessAt)}</dd>
          <dt>Lag</dt>
          <dd>{lag(t.watermark)}</dd>
          <dt>Lateness</dt>
          <dd>{t.lateness ? `p99 ${duration(t.lateness.p99Seconds)}, max ${duration(t.lateness.maxSeconds)}, ${t.lateness.foundBySweep24h} found by the sweep in 24 h` : "–"}</dd>
          <dt>Alerts stored</dt>
          <dd>{t.alertsStored?.toLocaleString() ?? "–"}</dd>
          <dt>Last error</dt>
          <dd class="last-error">{t.lastError ? `${t.lastError.message || t.lastError.code} (${t.lastError.code}, ${ago(t.lastError.at)})` : "none"}</dd>
        </dl>
        {t.warnings?.map((w) => (
          <p class="warning" key={w}>
            {w}
          </p>
        ))}
        <div class="actions">
          <button type="button" onClick={() => go({ name: "alerts", tenantId })}>
            Alerts
          </button>
          {session.can("Operator") && t.status === "active" && (
            <>
              <button type="button" id="pull" onClick={() =>
                  void act("Pull", async () => {
                    await callApi(session.token, `${path}/pull`, { method: "POST" });
                    return "A pull is queued.";
                  })
                }
              >
                Pull now
              </button>
              <span class="inline">
                <input type="number" min={1} max={4320} value={hours} aria-label="Reconcile hours" onInput={(e) => setHours(Number((e.target as HTMLInputElement).value))} />
                <button
                  type="button"
                  id="reconcile"
                  onClick={() =>
                    void act("Reconcile", async () => {
                      await callApi(session.token, `${path}/reconcile`, { method: "POST", body: { lookbackHours: hours } });
                      return `A reconcile of the last ${hours} h is queued.`;
                    })
                  }
                >
                  Reconcile
                </button>
              </span>
            </>
          )}
          {session.can("Operator") && t.status !== "offboarded" && (
            <button
              type="button"
              id="relink"
              onClick={() =>
                void act("Re-link", async () => {
                  // The tenant's own mode and source: left out, the API would use the defaults (a switch).
                  const body = { tenantId, relink: true, ...(t.mode ? { mode: t.mode } : {}), ...(t.source ? { source: t.source } : {}) };
                  const registered = await callApi<Registered>(session.token, "tenants", { method: "POST", body });
                  setLink(registered);
                  return "A new consent link is ready; the previous one stopped working.";
                })
              }
            >
              Re-link
            </button>
          )}
          {session.can("Admin") && (
            <button type="button" class="danger" id="offboard" onClick={() => setConfirming(true)}>
              Offboard…
            </button>
          )}
        </div>
        {message && <p class="ok" role="status">{message}</p>}
        <ErrorLine error={failure} />
        {link && <LinkBox registered={link} />}
        {confirming && (
          <Offboard
            tenant={t}
            cancel={() => setConfirming(false)}
            done={(text) => {
              setConfirming(false);
              setMessage(text);
              reload();
            }}
            session={session}
          />
        )}
        <PurgeProgress session={session} tenantId={tenantId} />
      </Section>
      <Section title="History">
        <ul class="history">
          <li>Last pull {ago(t.lastPullAt)}; last success {ago(t.lastSuccessAt)}.</li>
          {t.skippedSlices?.map((s) => (
            <li key={s.from}>
              Skipped {when(s.from)} – {when(s.to)}: {s.lastCode}, {s.attempts} attempts; the sweep retries it.
            </li>
          ))}
          {history.data?.entries.map((e) => (
            <li key={e.id}>
              {when(e.at)}: {e.action} by {actorName(e.actor)} ({e.role}) – {e.result}
              {e.status ? ` ${e.status}` : ""}
            </li>
          ))}
        </ul>
        {!session.can("Admin") && <p class="muted">Admins also see every operator action on this tenant here.</p>}
      </Section>
    </>
  );
}

/** Offboarding asks for the tenant's name (or ID) typed out; purge deletes all of its data too. */
function Offboard({ tenant, session, cancel, done }: { tenant: TenantStatus; session: Session; cancel: () => void; done: (text: string) => void }) {
  const [typed, setTyped] = useState("");
  const [purge, setPurge] = useState(false);
  const [failure, setFailure] = useState<string>();
  const matches = typed.trim() === tenant.displayName || typed.trim().toLowerCase() === tenant.tenantId;
  const submit = async () => {
    try {
      const path = `tenants/${tenant.tenantId}${purge ? "?purge=true" : ""}`;
      const answer = await callApi<{ purgeId?: string; accessEnds?: string } | undefined>(session.token, path, { method: "DELETE" });
      // Application mode: the app cannot revoke an admin consent, and the answer says how the customer does.
      const access = answer?.accessEnds ? ` ${answer.accessEnds}` : "";
      done(purge ? `Offboarded; purge ${answer?.purgeId ?? ""} deletes all of its data.${access}` : `Offboarded.${access || " Its refresh token is deleted."}`);
    } catch (err) {
      setFailure(problem(err));
    }
  };
  return (
    <div class="dialog" role="dialog" aria-labelledby="offboard-title" id="offboard-dialog">
      <h3 id="offboard-title">Offboard {tenant.displayName}</h3>
      <p>
        Collection stops and the refresh token is deleted. Entra ID keeps the customer's consent until their admin removes the enterprise
        application.
      </p>
      <label class="check">
        <input type="checkbox" id="purge" checked={purge} onChange={(e) => setPurge((e.target as HTMLInputElement).checked)} /> Also purge all
        of its data (alerts, sync state, consent states). The audit trail stays.
      </label>
      <label>
        Type <strong>{tenant.displayName}</strong> (or the tenant ID) to confirm
        <input type="text" id="confirm-name" value={typed} onInput={(e) => setTyped((e.target as HTMLInputElement).value)} autoComplete="off" />
      </label>
      <ErrorLine error={failure} />
      <div class="actions">
        <button type="button" onClick={cancel}>
          Cancel
        </button>
        <button type="button" class="danger" id="confirm-offboard" disabled={!matches} onClick={() => void submit()}>
          {purge ? "Offboard and purge" : "Offboard"}
        </button>
      </div>
    </div>
  );
}

function PurgeProgress({ session, tenantId }: { session: Session; tenantId: string }) {
  const { data } = useLoad(() => callApi<PurgeStatus>(session.token, `tenants/${tenantId}/purge`).catch(() => undefined), [tenantId]);
  if (!data) return null;
  return (
    <p class="muted" id="purge-status">
      Purge {data.purgeId}: {data.state}
      {data.waitingFor ? ` (waiting for ${data.waitingFor})` : ""}, {data.alertsDeleted.toLocaleString()} alerts deleted
      {data.completedAt ? `, done ${when(data.completedAt)}` : ""}.
    </p>
  );
}
