import { callApi, type HealthDetails } from "../api.js";
import type { Session } from "../auth.js";
import { ago, duration } from "../format.js";
import { ErrorLine, Section, useLoad } from "./common.js";

const PARTS: Record<string, string> = {
  config: "App settings",
  storage: "Table Storage",
  keyVault: "Key Vault",
  clientCredential: "The app's credential at Entra ID",
};

/** The app's parts (its credential among them) and each delivery destination's backlog. */
export function HealthView({ session }: { session: Session }) {
  // A failing app answers 503 with the same report.
  const { data, error, reload, loading } = useLoad(() => callApi<HealthDetails>(session.token, "health/details", { accept: [503] }));
  return (
    <Section
      title="Health"
      actions={
        <button type="button" onClick={reload} disabled={loading}>
          Refresh
        </button>
      }
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
          <h3>Delivery destinations</h3>
          {data.destinations && data.destinations.length > 0 ? (
            <table class="cards">
              <thead>
                <tr>
                  <th>Destination</th>
                  <th>Backlog</th>
                  <th>Last success</th>
                  <th>Last error</th>
                </tr>
              </thead>
              <tbody>
                {data.destinations.map((d) => (
                  <tr key={d.name}>
                    <td data-label="Destination">{d.name}</td>
                    <td data-label="Backlog">
                      {d.backlog ?? 0} {d.oldestAgeSeconds !== undefined ? `(oldest ${duration(d.oldestAgeSeconds)})` : ""}
                    </td>
                    <td data-label="Last success">{ago(d.lastSuccessAt)}</td>
                    <td data-label="Last error">{d.lastError ?? "–"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : (
            <p class="muted">No delivery destination is configured.</p>
          )}
        </>
      )}
    </Section>
  );
}
