import { useState } from "preact/hooks";
import { ApiProblem, callApi, type Registered } from "../api.js";
import type { Session } from "../auth.js";
import { when } from "../format.js";
import { ErrorLine, problem, Section } from "./common.js";

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Register a tenant by its ID and name, then copy or e-mail the consent link. */
export function OnboardView({ session }: { session: Session }) {
  const [tenantId, setTenantId] = useState("");
  const [name, setName] = useState("");
  const [relink, setRelink] = useState(false);
  const [mode, setMode] = useState("");
  const [source, setSource] = useState("");
  const [failure, setFailure] = useState<string>();
  const [needsRelink, setNeedsRelink] = useState(false);
  const [registered, setRegistered] = useState<Registered>();
  const [busy, setBusy] = useState(false);
  const valid = GUID.test(tenantId.trim());
  const submit = async (e: Event) => {
    e.preventDefault();
    setFailure(undefined);
    setRegistered(undefined);
    setBusy(true);
    try {
      const body: Record<string, unknown> = { tenantId: tenantId.trim() };
      if (name.trim()) body.displayName = name.trim();
      if (relink) body.relink = true;
      // Empty: the app's defaults (ONBOARDING_DEFAULT_MODE, DEFAULT_ALERT_SOURCE).
      if (mode) body.mode = mode;
      if (source) body.source = source;
      setRegistered(await callApi<Registered>(session.token, "tenants", { method: "POST", body }));
      setNeedsRelink(false);
    } catch (err) {
      setNeedsRelink(err instanceof ApiProblem && err.code === "RelinkRequired");
      setFailure(problem(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Section title="Onboard a customer tenant">
      <form class="form" onSubmit={(e) => void submit(e)} id="onboard-form">
        <label>
          Tenant ID
          <input type="text" id="tenant-id" value={tenantId} placeholder="00000000-0000-0000-0000-000000000000" onInput={(e) => setTenantId((e.target as HTMLInputElement).value)} required />
        </label>
        <label>
          Name
          <input type="text" id="tenant-name" value={name} maxLength={256} placeholder="Contoso" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Mode
          <select id="tenant-mode" value={mode} onChange={(e) => setMode((e.target as HTMLSelectElement).value)}>
            <option value="">The app's default</option>
            <option value="delegated">Delegated: an admin signs in, their refresh token is kept</option>
            <option value="application">Application: admin consent, nothing stored</option>
          </select>
        </label>
        <label>
          Alerts from
          <select id="tenant-source" value={source} onChange={(e) => setSource((e.target as HTMLSelectElement).value)}>
            <option value="">The app's default</option>
            <option value="defender">Defender for Endpoint API</option>
            <option value="graph">Microsoft Graph (security alerts_v2)</option>
          </select>
        </label>
        {needsRelink && (
          <label class="check">
            <input type="checkbox" id="relink-check" checked={relink} onChange={(e) => setRelink((e.target as HTMLInputElement).checked)} /> Replace the link of this
            tenant (whoever consents through the new link becomes the account alerts are collected with)
          </label>
        )}
        <div class="actions">
          <button type="submit" class="primary" id="create-link" disabled={!valid || busy}>
            Create consent link
          </button>
        </div>
        {!valid && tenantId.trim() !== "" && <p class="muted">A tenant ID is a GUID.</p>}
      </form>
      <ErrorLine error={failure} />
      {registered && <LinkBox registered={registered} />}
    </Section>
  );
}

/** The consent link, with its expiry, to copy or send by e-mail. */
export function LinkBox({ registered }: { registered: Registered }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    await navigator.clipboard.writeText(registered.consentUrl);
    setCopied(true);
  };
  const mail = `mailto:?subject=${encodeURIComponent(`Consent for ${registered.displayName}`)}&body=${encodeURIComponent(
    `Please open this link and consent as an administrator of ${registered.displayName}:\n\n${registered.consentUrl}\n\nThe link works until ${when(registered.consentUrlExpiresAt)}.`,
  )}`;
  return (
    <div class="linkbox" id="consent-link">
      <p>
        Send this link to an administrator of <strong>{registered.displayName}</strong>. It works until{" "}
        <strong id="link-expiry">{when(registered.consentUrlExpiresAt)}</strong>, or until someone consents through it.
      </p>
      <input type="text" readOnly value={registered.consentUrl} id="consent-url" onFocus={(e) => (e.target as HTMLInputElement).select()} />
      <div class="actions">
        <button type="button" id="copy-link" onClick={() => void copy()}>
          {copied ? "Copied" : "Copy link"}
        </button>
        <a class="button" href={mail} id="mail-link">
          E-mail link
        </a>
      </div>
    </div>
  );
}
