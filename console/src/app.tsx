import { useState } from "preact/hooks";
import type { Session } from "./auth.js";
import { AlertsView } from "./views/alerts.js";
import { AuditView } from "./views/audit.js";
import { HealthView } from "./views/health.js";
import { OnboardView } from "./views/onboard.js";
import { TenantView } from "./views/tenant.js";
import { TenantsView } from "./views/tenants.js";

export type View = { name: "tenants" } | { name: "tenant"; tenantId: string } | { name: "onboard" } | { name: "alerts"; tenantId?: string } | { name: "health" } | { name: "audit" };

export function App({ session }: { session: Session }) {
  const [view, setView] = useState<View>({ name: "tenants" });
  const tabs: { name: View["name"]; label: string; show: boolean }[] = [
    { name: "tenants", label: "Tenants", show: true },
    { name: "onboard", label: "Onboard", show: session.can("Operator") },
    { name: "alerts", label: "Alerts", show: true },
    { name: "health", label: "Health", show: true },
    { name: "audit", label: "Audit", show: session.can("Admin") },
  ];
  const current = view.name === "tenant" ? "tenants" : view.name;
  return (
    <>
      <header>
        <div class="brand">MSSP Defender collector</div>
        <nav>
          {tabs
            .filter((t) => t.show)
            .map((t) => (
              <button
                type="button"
                key={t.name}
                class={current === t.name ? "tab active" : "tab"}
                data-view={t.name}
                onClick={() => setView({ name: t.name } as View)}
              >
                {t.label}
              </button>
            ))}
        </nav>
        <div class="who">
          <span id="user">{session.account.name || session.account.username}</span>
          <span class={`role role-${session.role ?? "none"}`} id="role">
            {session.role ?? "no role"}
          </span>
          <button type="button" class="link" onClick={() => void session.signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main>
        {!session.role && (
          <p class="error">Your account has no operator role. Ask an Admin to assign you Reader, Operator or Admin on the operator API.</p>
        )}
        {view.name === "tenants" && <TenantsView session={session} open={(tenantId) => setView({ name: "tenant", tenantId })} />}
        {view.name === "tenant" && <TenantView session={session} tenantId={view.tenantId} go={setView} />}
        {view.name === "onboard" && <OnboardView session={session} />}
        {view.name === "alerts" && <AlertsView session={session} {...(view.tenantId ? { tenantId: view.tenantId } : {})} />}
        {view.name === "health" && <HealthView session={session} />}
        {view.name === "audit" && <AuditView session={session} />}
      </main>
    </>
  );
}
