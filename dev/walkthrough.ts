/**
 * `npm run sandbox -- --walkthrough`: the README journey, run by itself on this machine,
 * as proof that everything works. It starts the simulators and the app on the dev host
 * (dev/host, a separate process, as `func start` would run it), then over plain HTTP:
 *   0. gets an operator token (Admin) from the simulated Entra ID, as automation does
 *      (client credentials of an application assigned the operator API's Admin role);
 *   1. onboards the simulated tenants Contoso in delegated mode, Fabrikam in application
 *      mode and Woodgrove on Microsoft Graph (`"source": "graph"`) (POST /api/tenants with
 *      that token);
 *   2. completes Contoso's consent: opens the consent link, reads the simulated Entra ID
 *      page and submits its form with Accept, and follows the redirect back to the callback;
 *   3. completes Fabrikam's admin consent the same way, on the admin consent page (no
 *      refresh token is stored: the app verifies with client credentials);
 *   4. completes Woodgrove's consent, for Graph's scope;
 *   5. pulls all three (POST /api/tenants/{id}/pull; the dev host's queue listener runs the
 *      worker), Woodgrove's alerts from the simulated Graph alerts_v2 API;
 *   6. reads the alerts (GET /api/alerts), Woodgrove's through the same API with `source: "graph"`;
 *   7. waits until every pulled alert reached the three destinations (Sentinel's Logs
 *      Ingestion, Splunk HEC, the signed webhook): the pulls queue the deliver worker, and
 *      the dev host's queue listener runs it, as the Functions host would;
 *   8. checks health (GET /api/health);
 * and stops everything. It never needs Core Tools.
 */
import { readFileSync } from "node:fs";
import { Agent, fetch as undiciFetch, request } from "undici";
import { repoRoot } from "../simulators/https.js";
import { INTERFERING_ENV } from "../simulators/managed-identity.js";
import { hostProcessEnv, spawnDevHost } from "./host-process.js";
import { automationToken } from "../simulators/operators.js";
import type { DestinationReceipt } from "./sandbox-destinations.js";
import { type Sandbox, type SandboxOptions, type SandboxTenant, sourceOf, startSandboxServers } from "./sandbox-servers.js";

export interface WalkthroughOptions extends SandboxOptions {
  /** Progress lines (default: console.log). */
  out?: (line: string) => void;
  /** Also print the dev host's own output. */
  verbose?: boolean;
  /** How long to wait for the pull (default 60 s). */
  pullTimeoutMs?: number;
  /** How long to wait, after the pulls, for every alert to reach every destination (default 60 s). */
  deliveryTimeoutMs?: number;
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
  /** The tenant on Microsoft Graph: onboarded with `"source": "graph"`, pulled from alerts_v2. */
  graphTenantId: string;
  graphTenantName: string;
  graphAlertsInSimulator: number;
  graphAlertsStored: number;
  /** Alerts of the Graph tenant read with GET /api/alerts, every one with `source: "graph"`. */
  graphAlertsRead: number;
  /** What each destination had received when every pulled alert had arrived there. */
  deliveries: (DestinationReceipt & { expected: number })[];
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
  // No simulated activity (a change after the pulls would never reach the destinations, so
  // step 7 would wait in vain) and no "received:" log line (step 7 reports the deliveries).
  const sandbox = await startSandboxServers({ ...options, activityMinutes: 0, deliveryStatusSeconds: 0, checkAppPort: true });
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
    return await journey(sandbox, tls, out, { pull: options.pullTimeoutMs ?? 60_000, delivery: options.deliveryTimeoutMs ?? 60_000 }, started);
  } catch (err) {
    if (err instanceof Error && !options.verbose) err.message += `\n--- dev host output (last lines) ---\n${host.output.slice(-25).join("\n")}`;
    throw err;
  } finally {
    await host.stop();
    await tls.close();
    await sandbox.stop();
  }
}

async function journey(
  sandbox: Sandbox,
  tls: Agent,
  out: (line: string) => void,
  timeouts: { pull: number; delivery: number },
  started: number,
): Promise<WalkthroughSummary> {
  const pullTimeoutMs = timeouts.pull;
  const base = `http://localhost:${sandbox.appPort}`;
  const token = await automationToken(sandbox.entra.url, sandbox.operators, "Admin", (url, init) =>
    undiciFetch(url, { ...init, dispatcher: tls }),
  );
  const tenant = sandbox.tenants.find((t) => t.mode === "delegated" && sourceOf(t) === "defender")!;
  const appTenant = sandbox.tenants.find((t) => t.mode === "application")!;
  const graphTenant = sandbox.tenants.find((t) => sourceOf(t) === "graph")!;
  const alertsOf = (t: SandboxTenant): { id: string; lastUpdateTime: string }[] =>
    sourceOf(t) === "graph"
      ? sandbox.graph.getAlerts(t.id).map((a) => ({ id: a.id, lastUpdateTime: a.lastUpdateDateTime }))
      : sandbox.defender.getAlerts(t.id);
  const operator = { authorization: `Bearer ${token}` };
  const lines: string[] = [];
  const say = (line: string) => {
    lines.push(line);
    out(line);
  };
  const expect = (step: string, reply: Reply, status: number[]) => {
    if (!status.includes(reply.status)) throw new WalkthroughError(`${step}: expected HTTP ${status.join(" or ")}, got ${reply.status}: ${reply.text.slice(0, 500)}`);
  };

  // 1. Onboard one tenant of each mode, and one on Graph
  const links = new Map<string, string>();
  for (const t of [tenant, appTenant, graphTenant]) {
    const registered = await call("POST", `${base}/api/tenants`, {
      headers: { ...operator, "content-type": "application/json" },
      body: JSON.stringify({ tenantId: t.id, displayName: t.name, mode: t.mode, source: sourceOf(t) }),
    });
    expect(`1. onboard ${t.name} (POST /api/tenants)`, registered, [200, 201]);
    const consentUrl = (JSON.parse(registered.text) as { consentUrl?: string }).consentUrl;
    if (!consentUrl) throw new WalkthroughError(`1. onboard: the answer has no consentUrl: ${registered.text}`);
    links.set(t.id, consentUrl);
  }
  say(
    `1/8 onboarded ${tenant.name} (delegated mode), ${appTenant.name} (application mode) and ${graphTenant.name} ` +
      `(${graphTenant.mode} mode, source graph): consent links ${new URL(links.get(tenant.id)!).pathname}`,
  );

  /** Opens the link and accepts on the simulated Entra page, as the customer's admin in a browser would. */
  const consent = async (step: string, consentUrl: string): Promise<{ user: string; page: string; done: Reply }> => {
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
    return { user: user.value, page: page.text, done };
  };

  // 2. Delegated consent
  const delegated = await consent("2.", links.get(tenant.id)!);
  const status = await tenantStatus(base, operator, tenant.id);
  if (status.status !== "active") throw new WalkthroughError(`2. after consent the tenant is ${status.status}, not active`);
  const upn = tenant.users.find((u) => delegated.user.endsWith(u.oid))?.upn ?? delegated.user;
  say(`2/8 consent completed on the simulated Entra ID page as ${upn}; ${tenant.name} is active (delegated)`);

  // 3. Admin consent (application mode)
  await consent("3.", links.get(appTenant.id)!);
  const appStatus = await tenantStatus(base, operator, appTenant.id);
  if (appStatus.status !== "active" || appStatus.mode !== "application") {
    throw new WalkthroughError(`3. after admin consent the tenant is ${appStatus.status} (${appStatus.mode}), not active in application mode`);
  }
  say(`3/8 admin consent completed for ${appTenant.name}; verified with client credentials, no refresh token stored; active (application)`);

  // 4. Consent for Graph's scope
  const onGraph = await consent("4.", links.get(graphTenant.id)!);
  if (!onGraph.page.includes("graph.microsoft.com")) throw new WalkthroughError("4. the consent page does not ask for Microsoft Graph's permissions");
  const graphStatus = await tenantStatus(base, operator, graphTenant.id);
  if (graphStatus.status !== "active" || graphStatus.source !== "graph") {
    throw new WalkthroughError(`4. after consent ${graphTenant.name} is ${graphStatus.status} with source ${graphStatus.source}, not active on graph`);
  }
  const graphUpn = graphTenant.users.find((u) => onGraph.user.endsWith(u.oid))?.upn ?? onGraph.user;
  say(`4/8 consent for Microsoft Graph's scope (graph.microsoft.com) completed as ${graphUpn}; ${graphTenant.name} is active, source graph`);

  // 5. Pull all three
  const stored = new Map<string, number>();
  const pulled3 = [tenant, appTenant, graphTenant];
  for (const t of pulled3) {
    const queued = await call("POST", `${base}/api/tenants/${t.id}/pull`, { headers: operator });
    expect(`5. pull ${t.name} (POST /api/tenants/{id}/pull)`, queued, [202]);
  }
  for (const t of pulled3) {
    const until = Date.now() + pullTimeoutMs;
    let pulled = await tenantStatus(base, operator, t.id);
    while (!pulled.lastSuccessAt && !pulled.lastError) {
      if (Date.now() > until) throw new WalkthroughError(`5. no pull of ${t.name} finished within ${pullTimeoutMs / 1000} s of queueing it`);
      await new Promise((resolve) => setTimeout(resolve, 250));
      pulled = await tenantStatus(base, operator, t.id);
    }
    if (pulled.lastError) throw new WalkthroughError(`5. the pull of ${t.name} failed: ${JSON.stringify(pulled.lastError)}`);
    stored.set(t.id, Number(pulled.alertsStored ?? 0));
  }
  const inSimulator = sandbox.defender.getAlerts(tenant.id).length;
  const appInSimulator = sandbox.defender.getAlerts(appTenant.id).length;
  const graphInSimulator = sandbox.graph.getAlerts(graphTenant.id).length;
  say(
    `5/8 pulled through the queue worker: ${stored.get(tenant.id)} alerts of ${tenant.name} (the simulator holds ${inSimulator}), ` +
      `${stored.get(appTenant.id)} of ${appTenant.name} (${appInSimulator}), ${stored.get(graphTenant.id)} of ${graphTenant.name} from Graph (${graphInSimulator})`,
  );

  // 6. Read alerts, the Graph tenant's through the same API
  const alerts = await call("GET", `${base}/api/alerts?tenantId=${tenant.id}&top=10`, { headers: operator });
  expect("6. read alerts (GET /api/alerts)", alerts, [200]);
  const read = (JSON.parse(alerts.text) as { alerts?: unknown[] }).alerts ?? [];
  if (inSimulator > 0 && read.length === 0) throw new WalkthroughError("6. GET /api/alerts returned no alerts after the pull");
  const graphAlerts = await call("GET", `${base}/api/alerts?tenantId=${graphTenant.id}&top=10`, { headers: operator });
  expect("6. read the Graph tenant's alerts (GET /api/alerts)", graphAlerts, [200]);
  const graphRead = (JSON.parse(graphAlerts.text) as { alerts?: { id: string; source?: string }[] }).alerts ?? [];
  if (graphInSimulator > 0 && graphRead.length === 0) throw new WalkthroughError(`6. GET /api/alerts returned no alerts of ${graphTenant.name} after the pull`);
  const notGraph = graphRead.find((a) => a.source !== "graph");
  if (notGraph) throw new WalkthroughError(`6. alert ${notGraph.id} of ${graphTenant.name} has source ${notGraph.source}, not graph`);
  const sample = graphRead[0];
  if (sample) {
    const one = await call("GET", `${base}/api/tenants/${graphTenant.id}/alerts/${encodeURIComponent(sample.id)}?source=graph`, { headers: operator });
    expect("6. read one Graph alert (GET /api/tenants/{id}/alerts/{alertId}?source=graph)", one, [200]);
    if (one.text !== JSON.stringify(sandbox.graph.getAlert(graphTenant.id, sample.id))) {
      throw new WalkthroughError(`6. alert ${sample.id} of ${graphTenant.name} does not read back as Graph sent it`);
    }
  }
  say(
    `6/8 read ${read.length} alerts of ${tenant.name} and ${graphRead.length} of ${graphTenant.name} (source graph) with GET /api/alerts?tenantId=...&top=10; ` +
      "one Graph alert read back byte for byte",
  );

  // 7. Deliveries: the pulls queued the deliver worker; the dev host's queue listener runs it.
  const expected = new Map<string, string>();
  for (const t of pulled3) for (const a of alertsOf(t)) expected.set(`${t.id}|${sourceOf(t)}|${a.id}`, a.lastUpdateTime);
  const missing = () =>
    sandbox.destinations.receipts().map((d) => {
      const got = sandbox.destinations.deliveredVersions(d.name);
      return { name: d.name, missing: [...expected].filter(([k, version]) => got.get(k) !== version).length };
    });
  const deliveryUntil = Date.now() + timeouts.delivery;
  for (let left = missing(); left.some((d) => d.missing > 0); left = missing()) {
    if (Date.now() > deliveryUntil) {
      const details = await call("GET", `${base}/api/health/details`, { headers: operator });
      throw new WalkthroughError(
        `7. within ${timeouts.delivery / 1000} s of the pulls, not every alert reached every destination (${left.map((d) => `${d.name}: ${d.missing} missing`).join(", ")}); ` +
          `GET /api/health/details: ${details.text.slice(0, 1500)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const deliveries = sandbox.destinations.receipts().map((d) => ({ ...d, expected: expected.size }));
  const wrong = deliveries.find((d) => d.faulty > 0 || d.olderAfterNewer > 0);
  if (wrong) throw new WalkthroughError(`7. ${wrong.name} received ${wrong.faulty} faulty items and ${wrong.olderAfterNewer} older versions after newer ones`);
  say(
    `7/8 every one of the ${expected.size} pulled alerts reached all three destinations through the deliver worker: ` +
      deliveries.map((d) => `${d.name} ${d.received} ${d.unit}`).join(", ") +
      " (webhook signatures verified with standardwebhooks)",
  );

  // 8. Health
  const health = await call("GET", `${base}/api/health`);
  expect("8. health (GET /api/health)", health, [200]);
  const healthStatus = (JSON.parse(health.text) as { status?: string }).status ?? "?";
  say(`8/8 GET /api/health: ${health.status} ${healthStatus}`);

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
    graphTenantId: graphTenant.id,
    graphTenantName: graphTenant.name,
    graphAlertsInSimulator: graphInSimulator,
    graphAlertsStored: stored.get(graphTenant.id) ?? 0,
    graphAlertsRead: graphRead.length,
    deliveries,
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
    `  graph         ${s.graphTenantName} (${s.graphTenantId}), alerts from Microsoft Graph alerts_v2, same API`,
    `  pull          ${s.alertsStored} of ${s.alertsInSimulator}, ${s.appAlertsStored} of ${s.appAlertsInSimulator} and ${s.graphAlertsStored} of ${s.graphAlertsInSimulator} alerts stored`,
    `  read          ${s.alertsRead} alerts from GET /api/alerts, and ${s.graphAlertsRead} of the Graph tenant with source graph`,
    `  deliver       ${s.deliveries.map((d) => `${d.name} ${d.alerts} of ${d.expected}`).join(", ")} alerts (${s.deliveries.map((d) => `${d.received} ${d.unit}`).join(", ")})`,
    `  health        ${s.health}`,
    "Everything works. Run `npm run sandbox` to try it yourself (README, docs/sandbox.md).",
    "",
  ].join("\n");
}
