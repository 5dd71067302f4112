import { callApi, type HealthDetails } from "../api.js";
import type { Session } from "../auth.js";
import { ago, duration, when } from "../format.js";
import { ErrorLine, RefreshButton, Section, useLoad } from "./common.js";

const PARTS: Record<string, string> = {
  config: "App settings",
  storage: "Table Storage",
  keyVault: "Key Vault",
  clientCredential: "The app's credential at Entra ID",
};

const CREDENTIALS: Record<string, string> = {
  "managed-identity": "its managed identity (a federated credential, no secret)",
  certificate: "a Key Vault certificate",
  secret: "a client secret",
};

function secretExpiry(c: NonNullable<HealthDetails["credential"]>): string {
  if (c.expiry === "unknown") return "its expiry is read by the daily check, which has not run yet";
  if (c.expiry === "none" || !c.expiresOn) return "it has no expiry date in Key Vault";
  return `it expires ${when(c.expiresOn)} (${c.daysLeft ?? "?"} days left)`;
}

/** The app's parts (its credential among them) and each delivery destination's backlog. */
export function HealthView({ session }: { session: Session }) {
  // A failing app answers 503 with the same report.
  const { data, error, reload, loading } = useLoad(() => callApi<HealthDetails>(session.token, "health/details", { accept: [503] }));
  return (
    <Section
      title="Health"
      actions={<RefreshButton reload={reload} loading={loading} />}
    >
      <ErrorLine error={error} />
      {data && (
        <>
          <p id="health-status" class={data.status === "ok" ? "ok" : "error"}>
            {data.status === "ok" ? "Everything works." : `Failing: ${data.failing.map((p) => PARTS[p] ?? p).join(", ")}`}
          </p>
          <table class="cards">
            <thead>
              <tr>
                <th>Part</th>
                <th>State</th>
              </tr>
            </thead>
            <tbody>
              {Object.entries(PARTS).map(([part, label]) => {
                const causes = data.causes.filter((c) => c.part === part);
                return (
                  <tr key={part} data-part={part}>
                    <td data-label="Part">{label}</td>
                    <td data-label="State">{causes.length === 0 ? "ok" : causes.map((c) => `${c.code} since ${ago(c.since)}`).join("; ")}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          {data.credential && (
            <p id="credential">
              The app signs in to customer tenants with <strong>{CREDENTIALS[data.credential.type] ?? data.credential.type}</strong>
              {data.credential.type === "secret" && `: ${secretExpiry(data.credential)}`}.
            </p>
          )}
          <h3>Delivery destinations</h3>
          {data.delivery && data.delivery.destinations.length > 0 ? (
            <table class="cards" id="destinations">
              <thead>
                <tr>
                  <th>Destination</th>
                  <th>State</th>
                  <th>Backlog</th>
                  <th>Parked</th>
                  <th>Last success</th>
                  <th>Last error</th>
                </tr>
              </thead>
              <tbody>
                {data.delivery.destinations.map((d) => (
                  <tr key={d.name} data-destination={d.name}>
                    <td data-label="Destination">
                      {d.name} <span class="muted">({d.type})</span>
                    </td>
                    <td data-label="State">{d.disabled ? `disabled (${d.disabled.code}) ${ago(d.disabled.at)}` : d.enabled ? "enabled" : "off"}</td>
                    <td data-label="Backlog">{d.backlogAgeSeconds !== undefined ? `oldest ${duration(d.backlogAgeSeconds)}` : "none"}</td>
                    <td data-label="Parked">{d.parked}</td>
                    <td data-label="Last success">{ago(d.lastSuccessAt)}</td>
                    <td data-label="Last error">{d.lastError ? `${d.lastError.code} ${ago(d.lastError.at)}` : "–"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : (
            <p class="muted">{data.status === "ok" ? "No delivery destination is configured." : "Shown once the app is healthy."}</p>
          )}
        </>
      )}
    </Section>
  );
}
