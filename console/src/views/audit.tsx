import { type AuditEntry, callApi } from "../api.js";
import type { Session } from "../auth.js";
import { when } from "../format.js";
import { actorName, ErrorLine, Section, useLoad } from "./common.js";

/** The audit trail (Admins): who did what, to which tenant, and how it ended. */
export function AuditView({ session }: { session: Session }) {
  const { data, error } = useLoad(() => callApi<{ entries: AuditEntry[] }>(session.token, "audit?top=100"));
  return (
    <Section title="Audit trail">
      <ErrorLine error={error} />
      {data && (
        <table class="cards" id="audit">
          <thead>
            <tr>
              <th>When</th>
              <th>Who</th>
              <th>Action</th>
              <th>Tenant</th>
              <th>Result</th>
            </tr>
          </thead>
          <tbody>
            {data.entries.map((e) => (
              <tr key={e.id}>
                <td data-label="When">{when(e.at)}</td>
                <td data-label="Who">
                  {actorName(e.actor)} <span class="muted">({e.role})</span>
                </td>
                <td data-label="Action">{e.action}</td>
                <td data-label="Tenant" class="mono">
                  {e.tenantId ?? "–"}
                </td>
                <td data-label="Result">
                  {e.result}
                  {e.status ? ` (${e.status})` : ""}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}
