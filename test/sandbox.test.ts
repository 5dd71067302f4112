import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { QueueServiceClient } from "@azure/storage-queue";
import {
  chooseFunctionKey,
  DEV_KEY_SETTING,
  FREE_PORTS,
  PortInUseError,
  portTaken,
  SANDBOX_TENANTS,
  type Sandbox,
  type SandboxTenant,
  sourceOf,
  startSandboxServers,
} from "../dev/sandbox-servers.js";
import { SANDBOX_DESTINATION_NAMES } from "../dev/sandbox-destinations.js";
import { loadConfig } from "../shared/platform/config.js";
import { resetHealthCache } from "../shared/platform/health.js";
import { resetServices, services } from "../shared/platform/services.js";
import { PULL_QUEUE } from "../shared/platform/storage.js";
import { loadLoopbackDns, repoRoot } from "../simulators/https.js";
import { INTERFERING_ENV } from "../simulators/managed-identity.js";
import { type AppHost, type HttpCall, type HttpResult, startAppHost, useOperatorTokens } from "./support/functions.js";
import { operatorTokenSource } from "./support/operators.js";
import { artifact, launchChromium, signIn } from "./support/browser.js";
import { watchParts } from "./support/leaks.js";

/**
 * `npm run sandbox`: the simulators are started exactly as dev/sandbox.ts starts them (on
 * free ports), the local.settings.json they produce is put into process.env as Core Tools
 * would, and the app runs on the dev host in this process, on the app port, so requests
 * are real HTTP and the browser reaches the app at PUBLIC_BASE_URL: consent through the
 * simulated consent page, the timer, the queue worker (through the host's queue listener),
 * the read API, plus the sandbox's knobs (activity, throttling, a large alert,
 * revocation, Splunk acknowledgement), the tenant on Microsoft Graph and the three delivery
 * destinations (the deliver worker through the host's queue listener). Waits (Retry-After,
 * the revocation delay, HEC ack polls) are recorded or stepped, never slept.
 */

const ALERTS = 120;
const LARGE_MIB = 2;
const REVOKE_MINUTES = 10;
const [CONTOSO, FABRIKAM, NORTHWIND, WOODGROVE] = SANDBOX_TENANTS as [SandboxTenant, SandboxTenant, SandboxTenant, SandboxTenant];

let sandbox: Sandbox;
let app: AppHost;
let dir: string;
let values: Record<string, string>;
let file: { IsEncrypted: boolean; Values: Record<string, string>; Host?: { LocalHttpPort?: number } };
const logs: string[] = [];
const sandboxLog: string[] = [];
/** Waits the app asked for (Retry-After, backoff), recorded instead of slept. */
const slept: number[] = [];

function http(name: string, call: HttpCall): Promise<HttpResult> {
  return app.http(name, call);
}

function pathOf(url: string): string {
  const u = new URL(url);
  return `${u.pathname.replace(/^\/api\//, "")}${u.search}`;
}

function recentLogs(): string {
  return `\n--- app log ---\n${logs.slice(-15).join("\n")}\n--- sandbox log ---\n${sandboxLog.slice(-5).join("\n")}`;
}

async function register(tenantId: string): Promise<string> {
  const tenant = SANDBOX_TENANTS.find((t) => t.id === tenantId);
  const mode = tenant?.mode ?? "delegated";
  const source = tenant ? sourceOf(tenant) : "defender";
  const result = await http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId, relink: true, mode, source }) });
  assert.ok(result.status === 201 || result.status === 200, result.text);
  return (result.json as { consentUrl: string }).consentUrl;
}

/** GET /api/consent/start: the Entra authorize URL it redirects to. */
async function openLink(consentUrl: string): Promise<string> {
  const started = await http("consent-start", { path: pathOf(consentUrl) });
  assert.equal(started.status, 302, started.text + recentLogs());
  return started.headers.location!;
}

async function tenantStatus(tenantId: string): Promise<Record<string, unknown>> {
  const result = await http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } });
  assert.equal(result.status, 200, result.text);
  return result.json as Record<string, unknown>;
}

async function storedAlerts(tenantId: string): Promise<{ id: string; status?: string; source?: string; providerAlertId?: string }[]> {
  const result = await http("alerts-list", { path: `alerts?tenantId=${tenantId}&top=1000` });
  assert.equal(result.status, 200, result.text);
  const body = result.json as { alerts: { id: string; status?: string; source?: string; providerAlertId?: string }[]; continuationToken?: string };
  assert.equal(body.continuationToken, undefined);
  return body.alerts;
}

// -----------------------------------------------------------------------------------------
// The simulated consent page, read like a browser would.

interface Tag {
  name: string;
  attrs: Record<string, string>;
  text: string;
}

function decodeEntities(value: string): string {
  return value
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&amp;/g, "&");
}

function tags(html: string, name: string): Tag[] {
  const out: Tag[] = [];
  const re = new RegExp(`<${name}\\b([^>]*)>(?:([^<]*)</${name}>)?`, "gi");
  for (const m of html.matchAll(re)) {
    const attrs: Record<string, string> = {};
    for (const a of (m[1] ?? "").matchAll(/([\w-]+)(?:="([^"]*)")?/g)) attrs[a[1]!.toLowerCase()] = decodeEntities(a[2] ?? "");
    out.push({ name, attrs, text: decodeEntities((m[2] ?? "").trim()) });
  }
  return out;
}

interface ConsentForm {
  action: string;
  method: string;
  hidden: Record<string, string>;
  users: { value: string; checked: boolean }[];
  buttons: { name: string; value: string; text: string }[];
  html: string;
}

async function consentPage(authorizeUrl: string): Promise<ConsentForm> {
  const response = await fetch(authorizeUrl);
  const html = await response.text();
  assert.equal(response.status, 200, html);
  assert.match(response.headers.get("content-type") ?? "", /text\/html/);
  const forms = tags(html, "form");
  assert.equal(forms.length, 1, "the consent page has one form");
  const form = forms[0]!;
  const inputs = tags(html, "input");
  return {
    action: new URL(form.attrs.action ?? "", authorizeUrl).href,
    method: (form.attrs.method ?? "get").toLowerCase(),
    hidden: Object.fromEntries(inputs.filter((i) => i.attrs.type === "hidden").map((i) => [i.attrs.name!, i.attrs.value ?? ""])),
    users: inputs
      .filter((i) => i.attrs.type === "radio" && i.attrs.name === "user")
      .map((i) => ({ value: i.attrs.value ?? "", checked: "checked" in i.attrs })),
    buttons: tags(html, "button")
      .filter((b) => (b.attrs.type ?? "submit") === "submit")
      .map((b) => ({ name: b.attrs.name ?? "", value: b.attrs.value ?? "", text: b.text })),
    html,
  };
}

/** Submits the form with one of its buttons, as a browser does; returns the redirect Location. */
async function press(form: ConsentForm, buttonText: string, user?: string): Promise<string> {
  const button = form.buttons.find((b) => b.text === buttonText);
  assert.ok(button, `no ${buttonText} button`);
  const body = new URLSearchParams(form.hidden);
  const chosen = user ?? form.users.find((u) => u.checked)?.value;
  if (chosen) body.set("user", chosen);
  body.set(button.name, button.value);
  const response = await fetch(form.action, {
    method: "POST",
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body,
  });
  await response.arrayBuffer();
  assert.equal(response.status, 302, `${buttonText} should redirect`);
  return response.headers.get("location")!;
}

/** Registers, opens the link and clicks Accept on the simulated page; returns the callback result. */
async function onboard(tenant: SandboxTenant, user?: string): Promise<HttpResult> {
  const authorize = await openLink(await register(tenant.id));
  const location = await press(await consentPage(authorize), "Accept", user);
  return http("consent-callback", { path: pathOf(location) });
}

// -----------------------------------------------------------------------------------------
// The host's part: the timer fills the queue, the worker drains it.

function pullQueue() {
  return QueueServiceClient.fromConnectionString(values.ALERTS_STORAGE!).getQueueClient(PULL_QUEUE);
}

/** Lets the dev host's queue listener run the worker on every queued pull; returns the tenants queued. */
async function drainPulls(): Promise<string[]> {
  const queue = pullQueue();
  const peeked = await queue.peekMessages({ numberOfMessages: 32 });
  const queued = peeked.peekedMessageItems.map(
    (m) => (JSON.parse(Buffer.from(m.messageText, "base64").toString("utf8")) as { tenantId: string }).tenantId,
  );
  await app.host.drainQueues("pull-worker");
  assert.equal((await queue.getProperties()).approximateMessagesCount, 0, `every pull was handled${recentLogs()}`);
  return queued;
}

async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

before(async () => {
  loadLoopbackDns();
  for (const name of INTERFERING_ENV) delete process.env[name];
  dir = mkdtempSync(join(tmpdir(), "sandbox-test-"));
  sandbox = await startSandboxServers({
    ports: FREE_PORTS,
    appPort: await freePort(),
    settingsPath: join(dir, "local.settings.json"),
    alertsPerTenant: ALERTS,
    activityMinutes: 0,
    largeAlertMiB: LARGE_MIB,
    revokeAfterMinutes: REVOKE_MINUTES,
    throttle: true,
    splunkAck: true,
    // The test calls reportDeliveries() itself, so no timer can log the line first.
    deliveryStatusSeconds: 0,
    log: (line) => sandboxLog.push(line),
  });
  file = JSON.parse(readFileSync(join(dir, "local.settings.json"), "utf8")) as typeof file;
  values = file.Values;
  // What Core Tools does with local.settings.json: every value becomes an environment variable.
  Object.assign(process.env, values);
  resetServices();
  resetHealthCache();
  app = await startAppHost(values, { logs, port: sandbox.appPort });
  useOperatorTokens(operatorTokenSource(sandbox.entra, sandbox.operators));
  // The suite-wide leak check: no token or secret of the simulators (the HEC token and the
  // webhook secret included) in the app's log or the sandbox's.
  const webhookSecret = sandbox.destinations.webhook.secret;
  watchParts({
    sources: [
      sandbox.entra,
      sandbox.vault,
      sandbox.identity,
      sandbox.destinations.splunk,
      sandbox.destinations.logsIngestion,
      { secretsSeen: () => [webhookSecret, webhookSecret.slice("whsec_".length)] },
    ],
    logs: [logs, sandboxLog],
    stop: stopAll,
  });
  (await services()).sleep = async (ms) => {
    slept.push(ms);
  };
});

async function stopAll(): Promise<void> {
  useOperatorTokens(undefined);
  await app?.stop();
  await sandbox?.stop();
  resetServices();
  if (dir) rmSync(dir, { recursive: true, force: true });
}

after(async () => {
  const ports = sandbox ? Object.values(sandbox.ports) : [];
  await stopAll();
  for (const port of ports) assert.equal(await portTaken(port), false, `port ${port} still in use after stop()`);
});

describe("sandbox", () => {
  it("writes local.settings.json with every app setting pointing at the simulators", () => {
    const root = repoRoot(import.meta.url);
    assert.equal(file.IsEncrypted, false);
    assert.equal(file.Host?.LocalHttpPort, sandbox.appPort);
    assert.equal(values.FUNCTIONS_WORKER_RUNTIME, "node");
    assert.equal(values.PUBLIC_BASE_URL, `http://localhost:${sandbox.appPort}`);
    assert.equal(values.KEY_VAULT_URL, `https://sandbox.vault.localhost:${sandbox.ports.keyVault}`);
    assert.equal(values.ENTRA_AUTHORITY_HOST, `https://127.0.0.1:${sandbox.ports.entra}`);
    assert.equal(values.DEFENDER_API_BASE_URL, `https://127.0.0.1:${sandbox.ports.defender}`);
    assert.equal(values.IDENTITY_ENDPOINT, `http://127.0.0.1:${sandbox.ports.identity}/msi/token`);
    assert.ok(values.IDENTITY_HEADER);
    assert.equal(values.AzureWebJobsStorage, values.ALERTS_STORAGE);
    assert.match(values.ALERTS_STORAGE!, new RegExp(`QueueEndpoint=http://127\\.0\\.0\\.1:${sandbox.ports.azuriteQueue}/devstoreaccount1;`));
    assert.equal(values.PULL_SCHEDULE, "0 */5 * * * *");
    assert.equal(values.AzureFunctionsJobHost__extensions__queues__maxPollingInterval, "00:00:02");
    assert.equal(app.host.config.queues.maxPollingIntervalMs, 2000, "the host applies it over host.json");
    assert.match(values[DEV_KEY_SETTING]!, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(app.host.key, values[DEV_KEY_SETTING], "the dev host checks the key the sandbox wrote");
    assert.equal(values.NODE_EXTRA_CA_CERTS, join(root, ".cache", "tls", "ca.pem"));
    assert.ok(existsSync(values.NODE_EXTRA_CA_CERTS!));
    // The test runner trusts the same CA, the way the worker trusts it from local.settings.json.
    if (process.env.NODE_EXTRA_CA_CERTS) assert.equal(process.env.NODE_EXTRA_CA_CERTS, values.NODE_EXTRA_CA_CERTS);
    const preload = join(root, "dev", "loopback-dns.cjs");
    assert.equal(values.languageWorkers__node__arguments, `--require ${/\s/.test(preload) ? `"${preload}"` : preload}`);
    assert.ok(existsSync(preload));
    for (const value of Object.values(values)) assert.equal(typeof value, "string");
    const config = loadConfig(values);
    assert.equal(config.redirectUri, `http://localhost:${sandbox.appPort}/api/consent/callback`);
    assert.equal(config.storage.kind, "connectionString");

    // Microsoft Graph and the three destinations, each on its own port.
    assert.equal(values.GRAPH_BASE_URL, `https://127.0.0.1:${sandbox.ports.graph}`);
    assert.deepEqual(
      config.destinations.map((d) => `${d.name} ${d.type} ${d.enabled}`),
      ["sentinel sentinel true", "splunk splunk true", "webhook webhook true"],
    );
    assert.equal(values.DESTINATIONS__sentinel__DCR_ENDPOINT, `https://127.0.0.1:${sandbox.ports.logsIngestion}`);
    assert.equal(values.DESTINATIONS__sentinel__STREAM, "Custom-MsspDefenderAlerts_CL");
    assert.equal(values.DESTINATIONS__splunk__URL, `https://127.0.0.1:${sandbox.ports.splunkHec}`);
    assert.equal(values.DESTINATIONS__splunk__USE_ACK, "true", "--splunk-ack");
    assert.equal(values.DESTINATIONS__webhook__URL, `https://127.0.0.1:${sandbox.ports.webhook}/hooks/alerts`);
    // The settings name the secrets; the values are in the simulated vault only.
    const hecToken = sandbox.vault.inspect(values.DESTINATIONS__splunk__TOKEN_SECRET_NAME!)?.versions.at(-1)?.value ?? "";
    const webhookSecret = sandbox.vault.inspect(values.DESTINATIONS__webhook__SECRET_NAME!)?.versions.at(-1)?.value ?? "";
    assert.ok(sandbox.destinations.splunk.secretsSeen().includes(hecToken), "the vault holds the token the HEC accepts");
    assert.equal(webhookSecret, sandbox.destinations.webhook.secret, "the vault holds the secret the receiver verifies with");
    assert.match(webhookSecret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    const written = readFileSync(join(dir, "local.settings.json"), "utf8");
    assert.ok(!written.includes(hecToken) && !written.includes(webhookSecret.slice("whsec_".length)), "no secret in local.settings.json");
  });

  it("keeps the function key across runs, and writes a new one on --new-key", () => {
    const path = join(dir, "local.settings.json");
    const key = values[DEV_KEY_SETTING]!;
    assert.equal(chooseFunctionKey(path, false), key);
    const renewed = chooseFunctionKey(path, true);
    assert.notEqual(renewed, key);
    assert.match(renewed, /^[A-Za-z0-9_-]{43}$/);
    const foreign = join(dir, "foreign.settings.json");
    writeFileSync(foreign, JSON.stringify({ Values: { KEY_VAULT_URL: "https://mine.vault.azure.net", [DEV_KEY_SETTING]: "k".repeat(30) } }));
    assert.notEqual(chooseFunctionKey(foreign, false), "k".repeat(30), "only a sandbox-written file's key is kept");
  });

  it("answers operator routes only with an operator token of the simulated MSSP tenant; the function key grants nothing", async () => {
    assert.equal((await http("tenants-list", { path: "tenants", as: null })).status, 401);
    const keyOnly = await http("tenants-list", { path: "tenants", as: null, headers: { "x-functions-key": values[DEV_KEY_SETTING]! } });
    assert.equal(keyOnly.status, 401, "a function key is no operator credential");
    assert.equal((await http("tenants-list", { path: "tenants" })).status, 200);
    assert.equal((await http("tenants-list", { path: "tenants", as: "Reader" })).status, 200);
    assert.equal((await http("tenants-create", { method: "POST", path: "tenants", as: "Reader", body: "{}" })).status, 403);
    assert.equal((await http("health", { path: "health", key: null })).status, 200, "health is anonymous");
    assert.deepEqual(
      Object.fromEntries(Object.entries(sandbox.operators.users).map(([role, user]) => [role, user.upn])),
      { Reader: "reader@mssp-sandbox.example", Operator: "operator@mssp-sandbox.example", Admin: "admin@mssp-sandbox.example" },
      "three users sign in to the console, one per role",
    );
  });

  it("refuses to start when a port is taken, naming the port and how to change it", async () => {
    const busy = createNetServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", () => resolve()));
    const port = (busy.address() as AddressInfo).port;
    try {
      await assert.rejects(startSandboxServers({ ports: { ...FREE_PORTS, entra: port }, settingsPath: null, log: () => {} }), (err: unknown) => {
        assert.ok(err instanceof PortInUseError);
        assert.match(err.message, new RegExp(`Port ${port} \\(Entra ID simulator\\) is already in use`));
        assert.match(err.message, /--entra-port <port> or SANDBOX_ENTRA_PORT=<port>/);
        return true;
      });
      await assert.rejects(
        startSandboxServers({ ports: FREE_PORTS, appPort: port, checkAppPort: true, settingsPath: null, log: () => {} }),
        /Port \d+ \(the app \(func start or the dev host\)\) is already in use/,
      );
      for (const [name, pattern] of [
        ["graph", /\(Microsoft Graph simulator\) is already in use.*--graph-port <port> or SANDBOX_GRAPH_PORT=<port>/],
        ["logsIngestion", /\(Logs Ingestion simulator \(Sentinel destination\)\) is already in use.*--logs-ingestion-port <port> or SANDBOX_LOGS_INGESTION_PORT=<port>/],
        ["splunkHec", /\(Splunk HEC simulator\) is already in use.*--splunk-port <port> or SANDBOX_SPLUNK_PORT=<port>/],
        ["webhook", /\(webhook receiver\) is already in use.*--webhook-port <port> or SANDBOX_WEBHOOK_PORT=<port>/],
      ] as const) {
        await assert.rejects(startSandboxServers({ ports: { ...FREE_PORTS, [name]: port }, settingsPath: null, log: () => {} }), pattern);
      }
    } finally {
      await new Promise<void>((resolve) => busy.close(() => resolve()));
    }
  });

  it("serves a consent page whose Cancel and Accept buttons lead to the right callback requests", async () => {
    const consentUrl = await register(CONTOSO.id);
    const authorize = await openLink(consentUrl);
    assert.ok(authorize.startsWith(`${values.ENTRA_AUTHORITY_HOST}/${CONTOSO.id}/oauth2/v2.0/authorize?`), authorize);
    const state = new URL(authorize).searchParams.get("state");
    assert.ok(state);

    const page = await consentPage(authorize);
    assert.equal(page.method, "post");
    assert.ok(page.action.startsWith(`${values.ENTRA_AUTHORITY_HOST}/`), page.action);
    assert.deepEqual(
      page.buttons.map((b) => b.text),
      ["Cancel", "Accept"],
    );
    assert.deepEqual(
      page.users.map((u) => u.value),
      CONTOSO.users.map((u) => `${CONTOSO.id}|${u.oid}`),
    );
    for (const user of CONTOSO.users) assert.ok(page.html.includes(user.upn));
    assert.match(page.html, /api\.securitycenter\.microsoft\.com\/\.default/);
    assert.match(page.html, /offline_access/);

    const callbackBase = `${values.PUBLIC_BASE_URL}/api/consent/callback?`;
    const cancelled = await press(page, "Cancel");
    assert.ok(cancelled.startsWith(callbackBase), cancelled);
    const cancelParams = new URL(cancelled).searchParams;
    assert.equal(cancelParams.get("error"), "access_denied");
    assert.equal(cancelParams.get("state"), state);
    assert.equal(cancelParams.get("code"), null);
    const declined = await http("consent-callback", { path: pathOf(cancelled) });
    assert.equal(declined.status, 400);
    assert.match(declined.text, /Consent was not given/);
    assert.equal((await tenantStatus(CONTOSO.id)).status, "pending");

    // The link is still valid: open it again and accept as the second user.
    const again = await openLink(consentUrl);
    const secondState = new URL(again).searchParams.get("state");
    const second = CONTOSO.users[1]!;
    const accepted = await press(await consentPage(again), "Accept", `${CONTOSO.id}|${second.oid}`);
    assert.ok(accepted.startsWith(callbackBase), accepted);
    const acceptParams = new URL(accepted).searchParams;
    assert.ok(acceptParams.get("code"));
    assert.equal(acceptParams.get("state"), secondState);
    assert.equal(acceptParams.get("error"), null);
    const done = await http("consent-callback", { path: pathOf(accepted) });
    assert.equal(done.status, 200, done.text + recentLogs());
    assert.match(done.text, /Consent complete/);
    const status = await tenantStatus(CONTOSO.id);
    assert.equal(status.status, "active");
    assert.equal(status.consentedBy, second.upn);
  });

  it("pulls every active tenant through the timer and the queue worker, despite 429s", async () => {
    const fabrikam = await onboard(FABRIKAM);
    assert.equal(fabrikam.status, 200, fabrikam.text + recentLogs());

    await app.host.runTimer("pull-timer");
    const pulled = await drainPulls();
    assert.deepEqual(pulled.sort(), [CONTOSO.id, FABRIKAM.id].sort(), recentLogs());

    for (const tenant of [CONTOSO, FABRIKAM]) {
      const expected = sandbox.defender.getAlerts(tenant.id).length;
      assert.equal(expected, tenant === CONTOSO ? ALERTS + 1 : ALERTS);
      const status = await tenantStatus(tenant.id);
      assert.equal(status.status, "active");
      assert.ok(status.lastSuccessAt, `no successful pull${recentLogs()}`);
      assert.equal(status.alertsStored, expected);
      const stored = await storedAlerts(tenant.id);
      assert.equal(stored.length, expected);
      // --throttle: the fake answered 429 to every other request and the pull retried.
      assert.ok(sandbox.defender.requests(tenant.id).some((r) => r.status === 429));
    }
    assert.ok(slept.some((ms) => ms >= 2000), `the pulls waited out Retry-After: 2 (recorded: ${slept.join(", ")})`);
    const list = await http("tenants-list", { path: "tenants" });
    const tenants = (list.json as { tenants: { tenantId: string; status: string }[] }).tenants;
    assert.deepEqual(
      tenants.map((t) => `${t.tenantId} ${t.status}`).sort(),
      [`${CONTOSO.id} active`, `${FABRIKAM.id} active`].sort(),
    );
    const health = await http("health", { path: "health" });
    assert.equal(health.status, 200, health.text);
  });

  it("serves the large alert whole", async () => {
    assert.ok(sandbox.largeAlertId);
    const result = await http("alerts-get", {
      path: `tenants/${CONTOSO.id}/alerts/${encodeURIComponent(sandbox.largeAlertId)}`,
      params: { tenantId: CONTOSO.id, alertId: sandbox.largeAlertId },
    });
    assert.equal(result.status, 200);
    assert.ok(Buffer.byteLength(result.text) >= LARGE_MIB * 1024 * 1024);
    assert.deepEqual(JSON.parse(result.text), sandbox.defender.getAlert(CONTOSO.id, sandbox.largeAlertId));
  });

  it("shows new and updated alerts of the simulated activity on the next pull", async () => {
    // Older than the app's 60 s pull lag, so this very pull sees the changes.
    const reports = sandbox.tick(new Date(Date.now() - 90_000));
    const contoso = reports.find((r) => r.tenantId === CONTOSO.id)!;
    assert.ok(contoso.added.length >= 1 && contoso.updated.length >= 2, JSON.stringify(contoso));

    const queued = await http("tenants-pull", { method: "POST", path: `tenants/${CONTOSO.id}/pull`, params: { tenantId: CONTOSO.id } });
    assert.equal(queued.status, 202, queued.text);
    assert.deepEqual(await drainPulls(), [CONTOSO.id]);

    const stored = new Map((await storedAlerts(CONTOSO.id)).map((a) => [a.id, a]));
    assert.equal(stored.size, contoso.total);
    for (const id of contoso.added) assert.ok(stored.has(id), `new alert ${id} not stored`);
    for (const id of contoso.updated) {
      assert.equal(stored.get(id)?.status, sandbox.defender.getAlert(CONTOSO.id, id)?.status, `alert ${id} not updated`);
    }
  });

  it("onboards the Graph tenant with source graph, pulls it from the simulated Graph API and reads it through the same API", async () => {
    assert.equal(sourceOf(WOODGROVE), "graph");
    const authorize = await openLink(await register(WOODGROVE.id));
    assert.match(new URL(authorize).searchParams.get("scope") ?? "", /^https:\/\/graph\.microsoft\.com\/\.default\b/, "the consent asks for Graph's scope");
    const page = await consentPage(authorize);
    assert.deepEqual(
      page.users.map((u) => u.value),
      WOODGROVE.users.map((u) => `${WOODGROVE.id}|${u.oid}`),
    );
    const done = await http("consent-callback", { path: pathOf(await press(page, "Accept")) });
    assert.equal(done.status, 200, done.text + recentLogs());
    let status = await tenantStatus(WOODGROVE.id);
    assert.deepEqual([status.status, status.source, status.mode], ["active", "graph", "delegated"]);

    const queued = await http("tenants-pull", { method: "POST", path: `tenants/${WOODGROVE.id}/pull`, params: { tenantId: WOODGROVE.id } });
    assert.equal(queued.status, 202, queued.text);
    assert.deepEqual(await drainPulls(), [WOODGROVE.id]);
    // The seeded alerts, plus those the activity round of the test above added.
    const inGraph = sandbox.graph.getAlerts(WOODGROVE.id);
    assert.ok(inGraph.length > ALERTS, `${inGraph.length} alerts in Graph`);
    status = await tenantStatus(WOODGROVE.id);
    assert.equal(status.alertsStored, inGraph.length, recentLogs());
    const stored = await storedAlerts(WOODGROVE.id);
    assert.deepEqual(stored.map((a) => a.id).sort(), inGraph.map((a) => a.id).sort());
    assert.ok(stored.every((a) => a.source === "graph" && a.providerAlertId), "graph rows, with the provider's id");
    const sample = inGraph.find((a) => a.evidence.length > 0)!;
    const one = await http("alerts-get", {
      path: `tenants/${WOODGROVE.id}/alerts/${encodeURIComponent(sample.id)}?source=graph`,
      params: { tenantId: WOODGROVE.id, alertId: sample.id },
    });
    assert.equal(one.status, 200, one.text);
    assert.equal(one.text, JSON.stringify(sample), "byte for byte as Graph sent it");
    assert.equal(sandbox.defender.requests(WOODGROVE.id).length, 0, "Defender is never asked about a Graph tenant");
    const lists = sandbox.graph.requests(WOODGROVE.id).filter((r) => r.query.$filter);
    assert.ok(lists.length > 0 && lists.every((r) => r.status === 200 && r.includeUnknownEnumMembers), "alerts_v2 windows, with Prefer: include-unknown-enum-members");

    // The simulated activity reaches Graph too, in Graph's vocabulary; the next pull stores it normalised.
    const reports = sandbox.tick(new Date(Date.now() - 90_000));
    assert.deepEqual(
      reports.map((r) => `${r.name} ${r.source}`),
      SANDBOX_TENANTS.map((t) => `${t.name} ${sourceOf(t)}`),
    );
    const woodgrove = reports.find((r) => r.tenantId === WOODGROVE.id)!;
    assert.ok(woodgrove.added.length >= 1 && woodgrove.updated.length >= 2, JSON.stringify(woodgrove));
    assert.equal(sandbox.defender.getAlerts(WOODGROVE.id).length, 0, "no Defender alerts for a Graph tenant");
    await http("tenants-pull", { method: "POST", path: `tenants/${WOODGROVE.id}/pull`, params: { tenantId: WOODGROVE.id } });
    assert.deepEqual(await drainPulls(), [WOODGROVE.id]);
    const after = new Map((await storedAlerts(WOODGROVE.id)).map((a) => [a.id, a]));
    assert.equal(after.size, woodgrove.total);
    for (const id of woodgrove.added) assert.equal(after.get(id)?.status, "New", `new alert ${id}`);
    for (const id of woodgrove.updated) {
      const graphStatus = sandbox.graph.getAlert(WOODGROVE.id, id)!.status;
      assert.ok(graphStatus === "inProgress" || graphStatus === "resolved", graphStatus);
      assert.equal(after.get(id)?.status, graphStatus === "inProgress" ? "InProgress" : "Resolved", `alert ${id} updated`);
    }
  });

  it("delivers every pulled alert, Defender's and Graph's, to Sentinel, Splunk and the webhook through the deliver worker, and shows the counts", async () => {
    // Everything of the active tenants pulled at its latest version (the activity above included)...
    await app.host.runTimer("pull-timer");
    assert.deepEqual((await drainPulls()).sort(), [CONTOSO.id, FABRIKAM.id, WOODGROVE.id].sort(), recentLogs());
    // ...and the wake-ups the pulls queued, run by the host's queue listener.
    await app.host.drainQueues("deliver-worker");

    const expected = new Map<string, string>();
    for (const t of [CONTOSO, FABRIKAM, WOODGROVE]) {
      const alerts =
        sourceOf(t) === "graph"
          ? sandbox.graph.getAlerts(t.id).map((a) => ({ id: a.id, lastUpdateTime: a.lastUpdateDateTime }))
          : sandbox.defender.getAlerts(t.id);
      for (const a of alerts) expected.set(`${t.id}|${sourceOf(t)}|${a.id}`, a.lastUpdateTime);
    }
    assert.ok(sandbox.largeAlertId && expected.has(`${CONTOSO.id}|defender|${sandbox.largeAlertId}`));
    for (const name of SANDBOX_DESTINATION_NAMES) {
      const got = sandbox.destinations.deliveredVersions(name);
      const missing = [...expected].filter(([key, version]) => got.get(key) !== version);
      assert.deepEqual(missing.slice(0, 3), [], `${name}: ${missing.length} alerts not at their latest version${recentLogs()}`);
      assert.equal(got.size, expected.size, `${name} received no other alerts`);
    }
    for (const d of sandbox.destinations.receipts()) {
      assert.ok(d.received >= expected.size, `${d.name} received ${d.received}`);
      assert.equal(d.faulty, 0, `${d.name}: no row off the stream's columns, no bad signature`);
      assert.equal(d.olderAfterNewer, 0, `${d.name}: never an older version after a newer one`);
    }
    assert.ok(
      sandbox.destinations.splunk.requestLog.some((r) => r.path === "/services/collector/ack" && r.status === 200),
      "with --splunk-ack the app waited for indexer acknowledgement",
    );

    const line = sandbox.reportDeliveries();
    const n = expected.size;
    assert.match(line ?? "", new RegExp(`^received: sentinel \\d+ rows \\(${n} alerts\\); splunk \\d+ events \\(${n} alerts\\); webhook \\d+ posts \\(${n} alerts\\)$`));
    assert.equal(sandboxLog.at(-1), line, "the sandbox logs it");
    assert.equal(sandbox.reportDeliveries(), undefined, "and only again once something changed");

    const details = await http("health-details", { path: "health/details" });
    const delivery = (details.json as { delivery: { destinations: { name: string; lastSuccessAt?: string; backlogSince?: string; lastError?: unknown }[] } }).delivery;
    assert.deepEqual(
      delivery.destinations.map((d) => `${d.name} ${Boolean(d.lastSuccessAt)} ${d.backlogSince ?? "no backlog"}`),
      ["sentinel true no backlog", "splunk true no backlog", "webhook true no backlog"],
      JSON.stringify(delivery),
    );
  });

  it("revokes the third tenant's grant after consent, and consenting again restores it", async () => {
    assert.equal(sandbox.revokeTenantId, NORTHWIND.id);
    assert.equal(sandbox.revocationState(), "waiting-for-consent");
    const consented = await onboard(NORTHWIND);
    assert.equal(consented.status, 200, consented.text + recentLogs());
    assert.equal(sandbox.checkRevocation(), "scheduled");
    assert.equal(sandbox.checkRevocation(new Date(Date.now() + (REVOKE_MINUTES - 1) * 60_000)), "scheduled");
    assert.equal(sandbox.checkRevocation(new Date(Date.now() + REVOKE_MINUTES * 60_000 + 1000)), "revoked");

    await app.trigger("pull-worker", { tenantId: NORTHWIND.id });
    let status = await tenantStatus(NORTHWIND.id);
    assert.equal(status.status, "reconsent-required", recentLogs());
    assert.equal((status.lastError as { code: string }).code, "AADSTS70043");

    const again = await onboard(NORTHWIND);
    assert.equal(again.status, 200, again.text + recentLogs());
    assert.equal(sandbox.checkRevocation(), "restored");
    await app.trigger("pull-worker", { tenantId: NORTHWIND.id });
    status = await tenantStatus(NORTHWIND.id);
    assert.equal(status.status, "active", recentLogs());
    assert.equal(status.alertsStored, sandbox.defender.getAlerts(NORTHWIND.id).length);
  });

  it("works in a real browser: Cancel and Accept on the admin consent page (Fabrikam, application mode)", async (t) => {
    const executablePath = "/usr/bin/chromium";
    if (!existsSync(executablePath)) return t.skip(`${executablePath} is not installed`);
    // A variable specifier: compiling does not need playwright-core, only running this part does.
    const specifier = "playwright-core";
    let chromium: PlaywrightChromium;
    try {
      chromium = ((await import(specifier)) as { chromium: PlaywrightChromium }).chromium;
    } catch {
      return t.skip("playwright-core is not installed");
    }
    const browser = await chromium.launch({
      executablePath,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    try {
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      const page = await context.newPage();
      const callback = /\/api\/consent\/callback\?/;
      const consentUrl = await register(FABRIKAM.id);

      await page.goto(consentUrl);
      await page.waitForSelector("button[value=cancel]");
      await Promise.all([page.waitForURL(callback), page.click("button[value=cancel]")]);
      assert.match(await page.textContent("body"), /Consent was not given/);
      assert.equal(new URL(page.url()).searchParams.get("error"), "access_denied");

      await page.goto(consentUrl);
      await page.check(`input[name=user][value="${FABRIKAM.id}|${FABRIKAM.users[0]!.oid}"]`);
      await Promise.all([page.waitForURL(callback), page.click("button[value=accept]")]);
      assert.match(await page.textContent("body"), /Consent complete/);
      assert.equal(new URL(page.url()).searchParams.get("admin_consent"), "True");
      const status = await tenantStatus(FABRIKAM.id);
      assert.equal(status.status, "active");
      assert.equal(status.mode, "application");
      assert.equal(status.consentedBy, undefined, "admin consent names nobody");
    } finally {
      await browser.close();
    }
  });

  it("opens the console signed in as the simulated admin, with the simulated tenants visible", async (t) => {
    const browser = await launchChromium();
    if (typeof browser === "string") return t.skip(browser);
    // The customers' names, as an operator gives them when onboarding (the README's screenshot shows them).
    // Each keeps its mode and source (a re-link without them would switch to the defaults).
    for (const tenant of [CONTOSO, FABRIKAM, NORTHWIND, WOODGROVE]) {
      const body = { tenantId: tenant.id, displayName: tenant.name.replace(" (sandbox)", ""), relink: true, mode: tenant.mode, source: sourceOf(tenant) };
      const named = await http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify(body) });
      assert.equal(named.status, 200, named.text);
    }
    try {
      const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 720 } });
      const page = await context.newPage();
      const admin = sandbox.operators.users.Admin;
      await signIn(page, `${values.PUBLIC_BASE_URL}/api/console/`, { tenantId: sandbox.operators.tenantId, oid: admin.oid, upn: admin.upn });
      assert.equal(await page.textContent("#role"), "Admin");
      // Every simulated customer the tests above onboarded, Woodgrove on Graph.
      for (const tenant of [CONTOSO, FABRIKAM, NORTHWIND, WOODGROVE]) await page.waitForSelector(`tr[data-tenant="${tenant.id}"]`);
      const rows = await page.locator("#tenants tbody tr").allTextContents();
      assert.equal(rows.length, 4);
      assert.ok(rows.some((r) => r.includes("graph")), "the Graph tenant shows its source");
      assert.ok(rows.some((r) => r.includes("collecting")), rows.join("\n"));
      await page.screenshot({ path: artifact("sandbox-console.png") });
    } finally {
      await browser.close();
    }
  });
});

/** The little of playwright-core's API this test uses, typed loosely. */
interface PlaywrightChromium {
  launch(options: Record<string, unknown>): Promise<{
    newContext(options: Record<string, unknown>): Promise<{ newPage(): Promise<PlaywrightPage> }>;
    close(): Promise<void>;
  }>;
}

interface PlaywrightPage {
  goto(url: string): Promise<unknown>;
  waitForSelector(selector: string): Promise<unknown>;
  waitForURL(url: RegExp): Promise<void>;
  click(selector: string): Promise<void>;
  check(selector: string): Promise<void>;
  textContent(selector: string): Promise<string>;
  url(): string;
}
