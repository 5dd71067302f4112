/**
 * `npm run sandbox -- --walkthrough`: the README journey, run by itself on this machine,
 * as proof that everything works. It starts the simulators and the app on the dev host
 * (dev/host, a separate process, as `func start` would run it), then over plain HTTP:
 *   1. onboards the simulated tenants Contoso in delegated mode and Fabrikam in application
 *      mode (POST /api/tenants with the function key);
 *   2. completes Contoso's consent: opens the consent link, reads the simulated Entra ID
 *      page and submits its form with Accept, and follows the redirect back to the callback;
 *   3. completes Fabrikam's admin consent the same way, on the admin consent page (no
 *      refresh token is stored: the app verifies with client credentials);
 *   4. pulls both (POST /api/tenants/{id}/pull; the dev host's queue listener runs the worker);
 *   5. reads the alerts (GET /api/alerts);
 *   6. checks health (GET /api/health);
 * and stops everything. It never needs Core Tools.
 */
import { readFileSync } from "node:fs";
import { Agent, request } from "undici";
import { repoRoot } from "../simulators/https.js";
import { INTERFERING_ENV } from "../simulators/managed-identity.js";
import { hostProcessEnv, spawnDevHost } from "./host-process.js";
import { DEV_KEY_SETTING, type Sandbox, type SandboxOptions, startSandboxServers } from "./sandbox-servers.js";

export interface WalkthroughOptions extends SandboxOptions {
  /** Progress lines (default: console.log). */
  out?: (line: string) => void;
  /** Also print the dev host's own output. */
  verbose?: boolean;
  /** How long to wait for the pull (default 60 s). */
  pullTimeoutMs?: number;
}

export interface WalkthroughSummary {
  tenantId: string;
  tenantName: string;
  consentedBy: string;
  alertsInSimulator: number;
  alertsStored: number;
  /** The application-mode tenant: onboarded by admin consent, pulled with client credentials. */
  appTenantId: string;
  appTenantName: string;
  appAlertsInSimulator: number;
  appAlertsStored: number;
  alertsRead: number;
  health: string;
  baseUrl: string;
  seconds: number;
  lines: string[];
}

/** A step that did not go as the README says; names the step and what came back. */
export class WalkthroughError extends Error {
  override name = "WalkthroughError";
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  text: string;
}

export async function runWalkthrough(options: WalkthroughOptions = {}): Promise<WalkthroughSummary> {
  const out = options.out ?? ((line: string) => console.log(line));
  const started = Date.now();
  const sandbox = await startSandboxServers({ activityMinutes: 0, ...options, checkAppPort: true });
  const host = spawnDevHost({
    root: options.root ?? repoRoot(import.meta.url),
    port: sandbox.appPort,
    ...(sandbox.settingsPath ? { settingsPath: sandbox.settingsPath } : {}),
    env: hostProcessEnv(sandbox.settings, INTERFERING_ENV),
    stdio: "pipe",
    ...(options.verbose ? { onLine: (line: string) => out(`  [dev host] ${line}`) } : {}),
  });
  const tls = new Agent({ connect: { ca: readFileSync(sandbox.caPath, "utf8") } });
  try {
    await Promise.race([
      host.ready,
      new Promise((_, fail) => setTimeout(() => fail(new WalkthroughError("the dev host did not start within 60 s")), 60_000).unref()),
    ]);
    return await journey(sandbox, tls, out, options.pullTimeoutMs ?? 60_000, started);
  } catch (err) {
    if (err instanceof Error && !options.verbose) err.message += `\n--- dev host output (last lines) ---\n${host.output.slice(-25).join("\n")}`;
    throw err;
  } finally {
    await host.stop();
    await tls.close();
    await sandbox.stop();
  }
}

async function journey(sandbox: Sandbox, tls: Agent, out: (line: string) => void, pullTimeoutMs: number, started: number): Promise<WalkthroughSummary> {
  const base = `http://localhost:${sandbox.appPort}`;
  const key = sandbox.settings[DEV_KEY_SETTING]!;
  const tenant = sandbox.tenants.find((t) => t.mode === "delegated")!;
  const appTenant = sandbox.tenants.find((t) => t.mode === "application")!;
  const operator = { "x-functions-key": key };
  const lines: string[] = [];
  const say = (line: string) => {
    lines.push(line);
    out(line);
  };
  const expect = (step: string, reply: Reply, status: number[]) => {
    if (!status.includes(reply.status)) throw new WalkthroughError(`${step}: expected HTTP ${status.join(" or ")}, got ${reply.status}: ${reply.text.slice(0, 500)}`);
  };

  // 1. Onboard one tenant of each mode
  const links = new Map<string, string>();
  for (const t of [tenant, appTenant]) {
    const registered = await call("POST", `${base}/api/tenants`, {
      headers: { ...operator, "content-type": "application/json" },
      body: JSON.stringify({ tenantId: t.id, displayName: t.name, mode: t.mode }),
    });
    expect(`1. onboard ${t.name} (POST /api/tenants)`, registered, [200, 201]);
    const consentUrl = (JSON.parse(registered.text) as { consentUrl?: string }).consentUrl;
    if (!consentUrl) throw new WalkthroughError(`1. onboard: the answer has no consentUrl: ${registered.text}`);
    links.set(t.id, consentUrl);
  }
  say(`1/6 onboarded ${tenant.name} (delegated mode) and ${appTenant.name} (application mode): consent links ${new URL(links.get(tenant.id)!).pathname}`);

  /** Opens the link and accepts on the simulated Entra page, as the customer's admin in a browser would. */
  const consent = async (step: string, consentUrl: string): Promise<{ user: string; done: Reply }> => {
    const started2 = await call("GET", consentUrl);
    expect(`${step} open the consent link`, started2, [302]);
    const entraPage = started2.headers.location ?? "";
    const page = await call("GET", entraPage, { dispatcher: tls });
    expect(`${step} the simulated Entra ID consent page`, page, [200]);
    const form = readForm(page.text, entraPage);
    const user = form.users.find((u) => u.checked) ?? form.users[0];
    if (!user) throw new WalkthroughError(`${step} the consent page offers no user to sign in as`);
    const accept = form.buttons.find((b) => b.text === "Accept");
    if (!accept) throw new WalkthroughError(`${step} the consent page has no Accept button`);
    const body = new URLSearchParams(form.hidden);
    body.set("user", user.value);
    body.set(accept.name, accept.value);
    const decided = await call("POST", form.action, {
      dispatcher: tls,
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: body.toString(),
    });
    expect(`${step} Accept on the consent page`, decided, [302]);
    const callback = decided.headers.location ?? "";
    if (!callback.startsWith(`${sandbox.publicBaseUrl}/api/consent/callback?`)) {
      throw new WalkthroughError(`${step} Entra ID redirected to ${callback.slice(0, 200)}, not to the app's callback`);
    }
    const done = await call("GET", callback);
    expect(`${step} the app's consent callback`, done, [200]);
    if (!/Consent complete/.test(done.text)) throw new WalkthroughError(`${step} the callback page does not say "Consent complete": ${done.text.slice(0, 300)}`);
    return { user: user.value, done };
  };

  // 2. Delegated consent
  const delegated = await consent("2.", links.get(tenant.id)!);
  const status = await tenantStatus(base, operator, tenant.id);
  if (status.status !== "active") throw new WalkthroughError(`2. after consent the tenant is ${status.status}, not active`);
  const upn = tenant.users.find((u) => delegated.user.endsWith(u.oid))?.upn ?? delegated.user;
  say(`2/6 consent completed on the simulated Entra ID page as ${upn}; ${tenant.name} is active (delegated)`);

  // 3. Admin consent (application mode)
  await consent("3.", links.get(appTenant.id)!);
  const appStatus = await tenantStatus(base, operator, appTenant.id);
  if (appStatus.status !== "active" || appStatus.mode !== "application") {
    throw new WalkthroughError(`3. after admin consent the tenant is ${appStatus.status} (${appStatus.mode}), not active in application mode`);
  }
  say(`3/6 admin consent completed for ${appTenant.name}; verified with client credentials, no refresh token stored; active (application)`);

  // 4. Pull both
  const stored = new Map<string, number>();
  for (const t of [tenant, appTenant]) {
    const queued = await call("POST", `${base}/api/tenants/${t.id}/pull`, { headers: operator });
    expect(`4. pull ${t.name} (POST /api/tenants/{id}/pull)`, queued, [202]);
  }
  for (const t of [tenant, appTenant]) {
    const until = Date.now() + pullTimeoutMs;
    let pulled = await tenantStatus(base, operator, t.id);
    while (!pulled.lastSuccessAt && !pulled.lastError) {
      if (Date.now() > until) throw new WalkthroughError(`4. no pull of ${t.name} finished within ${pullTimeoutMs / 1000} s of queueing it`);
      await new Promise((resolve) => setTimeout(resolve, 250));
      pulled = await tenantStatus(base, operator, t.id);
    }
    if (pulled.lastError) throw new WalkthroughError(`4. the pull of ${t.name} failed: ${JSON.stringify(pulled.lastError)}`);
    stored.set(t.id, Number(pulled.alertsStored ?? 0));
  }
  const inSimulator = sandbox.defender.getAlerts(tenant.id).length;
  const appInSimulator = sandbox.defender.getAlerts(appTenant.id).length;
  say(
    `4/6 pulled through the queue worker: ${stored.get(tenant.id)} alerts of ${tenant.name} (the simulator holds ${inSimulator}), ` +
      `${stored.get(appTenant.id)} of ${appTenant.name} (${appInSimulator})`,
  );

  // 5. Read alerts
  const alerts = await call("GET", `${base}/api/alerts?tenantId=${tenant.id}&top=10`, { headers: operator });
  expect("5. read alerts (GET /api/alerts)", alerts, [200]);
  const read = (JSON.parse(alerts.text) as { alerts?: unknown[] }).alerts ?? [];
  if (inSimulator > 0 && read.length === 0) throw new WalkthroughError("5. GET /api/alerts returned no alerts after the pull");
  say(`5/6 read ${read.length} alerts with GET /api/alerts?tenantId=...&top=10`);

  // 6. Health
  const health = await call("GET", `${base}/api/health`);
  expect("6. health (GET /api/health)", health, [200]);
  const healthStatus = (JSON.parse(health.text) as { status?: string }).status ?? "?";
  say(`6/6 GET /api/health: ${health.status} ${healthStatus}`);

  return {
    tenantId: tenant.id,
    tenantName: tenant.name,
    consentedBy: upn,
    alertsInSimulator: inSimulator,
    alertsStored: stored.get(tenant.id) ?? 0,
    appTenantId: appTenant.id,
    appTenantName: appTenant.name,
    appAlertsInSimulator: appInSimulator,
    appAlertsStored: stored.get(appTenant.id) ?? 0,
    alertsRead: read.length,
    health: healthStatus,
    baseUrl: base,
    seconds: Math.round((Date.now() - started) / 100) / 10,
    lines,
  };
}

async function tenantStatus(base: string, headers: Record<string, string>, tenantId: string): Promise<Record<string, unknown>> {
  const reply = await call("GET", `${base}/api/tenants/${tenantId}`, { headers });
  if (reply.status !== 200) throw new WalkthroughError(`GET /api/tenants/${tenantId} answered ${reply.status}: ${reply.text.slice(0, 300)}`);
  return JSON.parse(reply.text) as Record<string, unknown>;
}

async function call(method: string, url: string, init: { headers?: Record<string, string>; body?: string; dispatcher?: Agent } = {}): Promise<Reply> {
  let response: Awaited<ReturnType<typeof request>>;
  try {
    response = await request(url, {
      method: method as "GET",
      ...(init.headers ? { headers: init.headers } : {}),
      ...(init.body !== undefined ? { body: init.body } : {}),
      ...(init.dispatcher ? { dispatcher: init.dispatcher } : {}),
    });
  } catch (err) {
    throw new WalkthroughError(`${method} ${url.split("?")[0]} failed: ${(err as Error).message}`);
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(response.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
  return { status: response.statusCode, headers, text: await response.body.text() };
}

interface Form {
  action: string;
  hidden: Record<string, string>;
  users: { value: string; checked: boolean }[];
  buttons: { name: string; value: string; text: string }[];
}

/** The one form of the simulated consent page, read as a browser would submit it. */
export function readForm(html: string, pageUrl: string): Form {
  const attrs = (tag: string) => {
    const out: Record<string, string> = {};
    for (const m of tag.matchAll(/([\w-]+)(?:="([^"]*)")?/g)) out[m[1]!.toLowerCase()] = unescapeHtml(m[2] ?? "");
    return out;
  };
  const form = /<form\b([^>]*)>/i.exec(html);
  if (!form) throw new WalkthroughError("2. the consent page has no form");
  const inputs = [...html.matchAll(/<input\b([^>]*)>/gi)].map((m) => attrs(m[1]!));
  return {
    action: new URL(attrs(form[1]!).action ?? "", pageUrl).href,
    hidden: Object.fromEntries(inputs.filter((i) => i.type === "hidden" && i.name).map((i) => [i.name!, i.value ?? ""])),
    users: inputs.filter((i) => i.type === "radio" && i.name === "user").map((i) => ({ value: i.value ?? "", checked: "checked" in i })),
    buttons: [...html.matchAll(/<button\b([^>]*)>([^<]*)<\/button>/gi)].map((m) => {
      const a = attrs(m[1]!);
      return { name: a.name ?? "", value: a.value ?? "", text: unescapeHtml(m[2]!.trim()) };
    }),
  };
}

function unescapeHtml(text: string): string {
  return text
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&amp;/g, "&");
}

/** The summary the command prints. */
export function formatSummary(s: WalkthroughSummary): string {
  return [
    "",
    `Walkthrough passed in ${s.seconds} s, without Azure Functions Core Tools (the app ran on the dev host at ${s.baseUrl}):`,
    `  delegated     ${s.tenantName} (${s.tenantId}), consented by ${s.consentedBy}`,
    `  application   ${s.appTenantName} (${s.appTenantId}), admin consent, no refresh token stored`,
    `  pull          ${s.alertsStored} of ${s.alertsInSimulator} and ${s.appAlertsStored} of ${s.appAlertsInSimulator} alerts stored`,
    `  read          ${s.alertsRead} alerts from GET /api/alerts`,
    `  health        ${s.health}`,
    "Everything works. Run `npm run sandbox` to try it yourself (README, docs/sandbox.md).",
    "",
  ].join("\n");
}
