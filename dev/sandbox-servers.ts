/**
 * The simulated cloud behind `npm run sandbox`: real Azurite plus the local HTTPS fakes of
 * Entra ID, Key Vault, the App Service managed identity endpoint, the Defender alerts API
 * and the Microsoft Graph security API, and the three delivery destinations (Sentinel's
 * Logs Ingestion, Splunk HEC, a webhook receiver: dev/sandbox-destinations.ts), as
 * long-running servers on fixed loopback ports. It pre-creates four customer tenants (one
 * on Graph) with users and a few hundred alerts each, keeps those alerts changing on a
 * timer, and writes the `local.settings.json` that points the Functions app at all of it.
 *
 * Dev tooling only: it lives under dev/ and test/, which .funcignore keeps out of the
 * deployment package, and the app code has no sandbox branches (only app settings).
 * `test/sandbox.test.ts` starts it exactly like `dev/sandbox.ts` does, on free ports.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { createRng, type DefenderAlert, formatTimestamp, makeAlert, makeAlerts, makeLargeAlert, type Rng, toTicks } from "../simulators/alerts.js";
import { FakeDefender, type RequestContext } from "../simulators/defender.js";
import { DEFENDER_RESOURCE, defenderAuthenticator, type EntraUser, FakeEntra, GRAPH_RESOURCE } from "../simulators/entra.js";
import { FakeGraph, GRAPH_ALERTS_REQUESTS_PER_MINUTE } from "../simulators/graph.js";
import { repoRoot } from "../simulators/https.js";
import { FakeKeyVault } from "../simulators/keyvault.js";
import { FakeManagedIdentity } from "../simulators/managed-identity.js";
import { type OperatorSetup, setupOperators } from "../simulators/operators.js";
import { ensureCerts } from "../simulators/tls.js";
import type { TenantMode } from "../shared/platform/config.js";
import type { SourceName } from "../shared/collection/source.js";
import { isFunctionKey, newFunctionKey } from "./host/keys.js";
import { createSandboxDestinations, type SandboxDestinations } from "./sandbox-destinations.js";
import { createGraphActivity, graphAuthenticator, graphSeedAlerts } from "./sandbox-graph.js";

// ---------------------------------------------------------------------------------------
// Fixed dev values. Stable across runs, so local.settings.json, dev/sandbox.http and the
// docs stay valid; none of them is a secret outside this machine.

/** Client id of the simulated multi-tenant app registration (MSSP_CLIENT_ID). */
export const SANDBOX_CLIENT_ID = "9d252484-fa05-4381-b462-f2bde6cafb8c";
/** Its client secret (MSSP_CLIENT_SECRET); only the local Entra simulator accepts it. */
export const SANDBOX_CLIENT_SECRET = "sandbox-client-secret-only-valid-for-the-local-entra-simulator";
/** The MSSP's own tenant, where operators sign in (OPERATOR_TENANT_ID), and its two registrations. */
export const SANDBOX_OPERATOR_TENANT_ID = "5e1f0c7a-3b2d-4a69-8c4e-2f7d9a0b1c3d";
export const SANDBOX_OPERATOR_API_CLIENT_ID = "0a7c3e91-6d5b-4f28-9e1a-7b4c2d8f6e05";
export const SANDBOX_CONSOLE_CLIENT_ID = "7f2b9d44-1c8e-4a3f-b6d5-9e0a2c4f8b17";
/** X-IDENTITY-HEADER the simulated managed identity endpoint expects (IDENTITY_HEADER). */
export const SANDBOX_IDENTITY_HEADER = "sandbox-identity-header";
/** The Key Vault SDK wants `<vault>.<resource host>`; dev/loopback-dns.cjs resolves it to 127.0.0.1. */
export const SANDBOX_VAULT_HOST = "sandbox.vault.localhost";
export const SANDBOX_VAULT_RESOURCE = "https://vault.localhost";
export const SANDBOX_PULL_SCHEDULE = "0 */5 * * * *";
/** Overrides host.json's queue polling interval in both hosts (the Functions host reads AzureFunctionsJobHost__* settings). */
export const QUEUE_POLLING_SETTING = "AzureFunctionsJobHost__extensions__queues__maxPollingInterval";
export const SANDBOX_QUEUE_POLLING = "00:00:02";
/** The app setting that holds the sandbox's function key (the dev host checks it; Core Tools ignores keys locally). */
export const DEV_KEY_SETTING = "DEV_FUNCTION_KEY";
/** Azurite's published development account and key (only valid for the emulator). */
const AZURITE_ACCOUNT = "devstoreaccount1";
const AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export interface SandboxTenant {
  id: string;
  name: string;
  users: EntraUser[];
  /** How the walkthrough and the docs onboard it: one customer of each mode. */
  mode: TenantMode;
  /** Where its alerts come from (`POST /api/tenants {"source"}`); absent: `defender`. */
  source?: SourceName;
}

/** A sandbox tenant's alert source. */
export const sourceOf = (tenant: SandboxTenant): SourceName => tenant.source ?? "defender";

/** The Key Vault certificate the sandbox registers, for trying MSSP_CLIENT_CREDENTIAL=certificate. */
export const SANDBOX_CERTIFICATE_NAME = "mssp-client-certificate";

/**
 * The simulated customers: Contoso and Northwind are onboarded in delegated mode (an admin
 * signs in), Fabrikam in application mode (admin consent, no refresh token). The third one
 * is the one `revokeAfterMinutes` revokes.
 */
export const SANDBOX_TENANTS: readonly SandboxTenant[] = [
  {
    id: "82711ecb-9800-42be-9851-28415aa57e9f",
    name: "Contoso (sandbox)",
    mode: "delegated",
    users: [
      { oid: "7427b6f7-15ad-4e23-bb2e-a91353a3b866", upn: "admin@contoso-sandbox.onmicrosoft.com", name: "Contoso Global Admin" },
      { oid: "d179ff02-104b-4a35-9f33-0551b6974d64", upn: "secops@contoso-sandbox.onmicrosoft.com", name: "Contoso Security Operator" },
    ],
  },
  {
    id: "1473fcee-ea4d-45dd-8720-6d48b959c66b",
    name: "Fabrikam (sandbox)",
    mode: "application",
    users: [
      { oid: "f628a38c-a682-4f28-80df-5af46ca20b9c", upn: "admin@fabrikam-sandbox.onmicrosoft.com", name: "Fabrikam Global Admin" },
    ],
  },
  {
    id: "95e2ea9f-1512-445c-9ebe-c2d62049bf30",
    name: "Northwind (sandbox)",
    mode: "delegated",
    users: [
      { oid: "03366d04-b465-4ff1-bbc7-06878e71bd95", upn: "admin@northwind-sandbox.onmicrosoft.com", name: "Northwind Global Admin" },
      { oid: "2c6a063c-6d08-4f22-a945-488dadc870ec", upn: "it@northwind-sandbox.onmicrosoft.com", name: "Northwind IT" },
    ],
  },
  {
    // Its alerts come from the simulated Microsoft Graph security API (alerts_v2).
    id: "c3f1b9d4-5e2a-4c7b-8d06-1a9e4f7b2c58",
    name: "Woodgrove (sandbox)",
    mode: "delegated",
    source: "graph",
    users: [
      { oid: "6b0e2f4a-93c1-4d8e-b7a5-0f2c9d1e3a47", upn: "admin@woodgrove-sandbox.onmicrosoft.com", name: "Woodgrove Global Admin" },
      { oid: "e8d4a1c7-2b5f-4e90-a3c6-7d1f0b9e5a24", upn: "secops@woodgrove-sandbox.onmicrosoft.com", name: "Woodgrove Security Operator" },
    ],
  },
];

// ---------------------------------------------------------------------------------------
// Ports.

export interface SandboxPorts {
  entra: number;
  keyVault: number;
  defender: number;
  identity: number;
  azuriteBlob: number;
  azuriteQueue: number;
  azuriteTable: number;
  /** Microsoft Graph security API (alerts_v2). */
  graph: number;
  /** The Sentinel destination: a data collection rule's Logs Ingestion endpoint. */
  logsIngestion: number;
  /** The Splunk destination: an HTTP Event Collector. */
  splunkHec: number;
  /** The webhook destination's receiver. */
  webhook: number;
}

/** Default ports; Azurite's are its own defaults (what Storage Explorer's "local emulator" expects). */
export const DEFAULT_PORTS: Readonly<SandboxPorts> = {
  entra: 7443,
  keyVault: 7444,
  defender: 7445,
  identity: 7446,
  azuriteBlob: 10000,
  azuriteQueue: 10001,
  azuriteTable: 10002,
  graph: 7447,
  logsIngestion: 7448,
  splunkHec: 7449,
  webhook: 7450,
};
/** Every port 0: each server listens on a free port (the tests run beside a sandbox). */
export const FREE_PORTS: Readonly<SandboxPorts> = Object.fromEntries(Object.keys(DEFAULT_PORTS).map((name) => [name, 0])) as unknown as SandboxPorts;
/** `func start`'s default port, and the dev host's; PUBLIC_BASE_URL is http://localhost:<this>. */
export const DEFAULT_APP_PORT = 7071;

/** How each port is named in messages, and how to change it. */
export const PORT_INFO: Record<keyof SandboxPorts | "app", { label: string; flag: string; env: string }> = {
  entra: { label: "Entra ID simulator", flag: "--entra-port", env: "SANDBOX_ENTRA_PORT" },
  keyVault: { label: "Key Vault simulator", flag: "--keyvault-port", env: "SANDBOX_KEYVAULT_PORT" },
  defender: { label: "Defender API simulator", flag: "--defender-port", env: "SANDBOX_DEFENDER_PORT" },
  identity: { label: "managed identity simulator", flag: "--identity-port", env: "SANDBOX_IDENTITY_PORT" },
  azuriteBlob: { label: "Azurite blob service", flag: "--azurite-port", env: "SANDBOX_AZURITE_PORT" },
  azuriteQueue: { label: "Azurite queue service (azurite port + 1)", flag: "--azurite-port", env: "SANDBOX_AZURITE_PORT" },
  azuriteTable: { label: "Azurite table service (azurite port + 2)", flag: "--azurite-port", env: "SANDBOX_AZURITE_PORT" },
  graph: { label: "Microsoft Graph simulator", flag: "--graph-port", env: "SANDBOX_GRAPH_PORT" },
  logsIngestion: { label: "Logs Ingestion simulator (Sentinel destination)", flag: "--logs-ingestion-port", env: "SANDBOX_LOGS_INGESTION_PORT" },
  splunkHec: { label: "Splunk HEC simulator", flag: "--splunk-port", env: "SANDBOX_SPLUNK_PORT" },
  webhook: { label: "webhook receiver", flag: "--webhook-port", env: "SANDBOX_WEBHOOK_PORT" },
  app: { label: "the app (func start or the dev host)", flag: "--app-port", env: "SANDBOX_APP_PORT" },
};

export interface TakenPort {
  name: keyof SandboxPorts | "app";
  port: number;
}

/** Thrown before anything starts when a configured port is busy (or listed twice). */
export class PortInUseError extends Error {
  constructor(readonly taken: TakenPort[]) {
    super(
      taken
        .map(({ name, port }) => {
          const info = PORT_INFO[name];
          return `Port ${port} (${info.label}) is already in use. Free it, or pick another port with ${info.flag} <port> or ${info.env}=<port>.`;
        })
        .join("\n"),
    );
    this.name = "PortInUseError";
  }
}

/** True when something accepts connections on 127.0.0.1:port or the port cannot be bound there. */
export async function portTaken(port: number): Promise<boolean> {
  const accepting = await new Promise<boolean>((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    const done = (value: boolean) => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
  if (accepting) return true;
  return new Promise<boolean>((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(true));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => resolve(false)));
  });
}

/** Checks every non-zero port; throws PortInUseError naming each busy or duplicated one. */
export async function checkPorts(ports: Partial<Record<TakenPort["name"], number>>): Promise<void> {
  const entries = Object.entries(ports).filter(([, port]) => port !== undefined && port !== 0) as [TakenPort["name"], number][];
  const taken: TakenPort[] = [];
  const seen = new Set<number>();
  for (const [name, port] of entries) {
    if (seen.has(port) || (await portTaken(port))) taken.push({ name, port });
    seen.add(port);
  }
  if (taken.length > 0) throw new PortInUseError(taken);
}

// ---------------------------------------------------------------------------------------
// Options and the running sandbox.

export interface SandboxOptions {
  /** Repository root (default: found from this file). */
  root?: string;
  /** Where the CA and server certificate live (default `<root>/.cache/tls`, shared with `npm test`). */
  certsDir?: string;
  /** Listening ports; 0 picks a free one. Default DEFAULT_PORTS. */
  ports?: Partial<SandboxPorts>;
  /** Port of the Functions host, for PUBLIC_BASE_URL and the redirect URI (default 7071). */
  appPort?: number;
  /** Also refuse to start when the app port is taken (set when `func start` or the dev host is launched here). */
  checkAppPort?: boolean;
  /** Alerts per tenant at start (default 300). */
  alertsPerTenant?: number;
  /** Minutes between rounds of new and updated alerts (default 2; 0 = off, use tick()). */
  activityMinutes?: number;
  /** Revoke the third tenant's grant this many minutes after its admin consents (default: never). */
  revokeAfterMinutes?: number;
  /** Answer every other alerts request of a pull with 429 + Retry-After (the consent probe is spared). */
  throttle?: boolean;
  /** Per-tenant rate limit of the Defender simulator, requests per minute (default: none). */
  rateLimitPerMinute?: number;
  /** Add one alert of this many MiB to the first tenant (default 0 = none). */
  largeAlertMiB?: number;
  /** The Splunk destination uses indexer acknowledgement (USE_ACK=true, a token with ack on). */
  splunkAck?: boolean;
  /** Seconds between checks for the "received:" log line of the destinations (default 15; 0 = never). */
  deliveryStatusSeconds?: number;
  /** Where to write local.settings.json (default `<root>/local.settings.json`; null = do not write). */
  settingsPath?: string | null;
  /** Write a new DEV_FUNCTION_KEY instead of keeping the one of the existing sandbox settings. */
  newKey?: boolean;
  /** Log sink (default: console.log with a `[sandbox]` prefix). */
  log?: (line: string) => void;
}

export interface ActivityReport {
  tenantId: string;
  name: string;
  source: SourceName;
  added: string[];
  updated: string[];
  total: number;
}

export type RevocationState = "off" | "waiting-for-consent" | "scheduled" | "revoked" | "restored";

export interface Sandbox {
  /** The app settings, exactly as written to local.settings.json `Values`. */
  settings: Record<string, string>;
  /** Path of the written local.settings.json, if one was written. */
  settingsPath?: string;
  /** Where an existing, non-sandbox local.settings.json was moved to, if it was. */
  settingsBackup?: string;
  /** Actual ports (differs from the requested ones where 0 was asked for). */
  ports: SandboxPorts;
  appPort: number;
  publicBaseUrl: string;
  caPath: string;
  /** True when this start generated the CA (first run, or the old one was about to expire). */
  caCreated: boolean;
  tenants: readonly SandboxTenant[];
  /** The tenant `revokeAfterMinutes` applies to. */
  revokeTenantId: string;
  /** Id of the large alert in the first tenant, when one was added. */
  largeAlertId?: string;
  entra: FakeEntra;
  vault: FakeKeyVault;
  identity: FakeManagedIdentity;
  defender: FakeDefender;
  /** Operators: the MSSP tenant's users (one per role), automation applications and registrations. */
  operators: OperatorSetup;
  /** The Graph security API, for the tenants whose source is `graph`. */
  graph: FakeGraph;
  /** The delivery destinations (Sentinel, Splunk, webhook) and what each received. */
  destinations: SandboxDestinations;
  azurite: AzuriteProcess;
  /** One round of simulated SOC activity now (also runs on the timer). `at` is the new lastUpdateTime. */
  tick(at?: Date): ActivityReport[];
  /** Logs the destinations' "received:" line if it changed since the last one (also runs on a timer); returns it then. */
  reportDeliveries(): string | undefined;
  /** The certificate for MSSP_CLIENT_CREDENTIAL=certificate (its key never leaves the vault simulator). */
  certificate: { keyId: string; thumbprintSha256: string };
  revocationState(): RevocationState;
  /** One step of the revocation watch (it also runs every second) as if the time were `at`. */
  checkRevocation(at?: Date): RevocationState;
  stop(): Promise<void>;
}

const defaultLog = (line: string) => console.log(`[sandbox] ${line}`);

export async function startSandboxServers(options: SandboxOptions = {}): Promise<Sandbox> {
  const root = options.root ?? repoRoot(import.meta.url);
  const log = options.log ?? defaultLog;
  const requested: SandboxPorts = { ...DEFAULT_PORTS, ...options.ports };
  const appPort = options.appPort ?? DEFAULT_APP_PORT;
  if (!Number.isInteger(appPort) || appPort < 1 || appPort > 65535) throw new Error(`app port must be 1-65535, got ${appPort}`);
  await checkPorts(options.checkAppPort ? { ...requested, app: appPort } : requested);

  const certsDir = options.certsDir ?? join(root, ".cache", "tls");
  const caBefore = existsSync(join(certsDir, "ca.pem")) ? readFileSync(join(certsDir, "ca.pem"), "utf8") : undefined;
  const certs = ensureCerts(certsDir);
  const publicBaseUrl = `http://localhost:${appPort}`;
  const revokeTenant = SANDBOX_TENANTS[2]!;
  const cleanups: (() => Promise<void>)[] = [];
  const timers: NodeJS.Timeout[] = [];
  let stopped = false;
  const stopAll = async () => {
    stopped = true;
    for (const t of timers) clearInterval(t);
    const pending = cleanups.splice(0).reverse();
    for (const cleanup of pending) {
      try {
        await cleanup();
      } catch (err) {
        log(`stopping failed: ${String(err)}`);
      }
    }
  };

  try {
    const identity = new FakeManagedIdentity({ port: requested.identity, identityHeader: SANDBOX_IDENTITY_HEADER });
    await listening("identity", requested.identity, () => identity.start());
    cleanups.push(() => identity.stop());

    const vault = new FakeKeyVault({
      certs,
      port: requested.keyVault,
      host: SANDBOX_VAULT_HOST,
      resource: SANDBOX_VAULT_RESOURCE,
      purgeProtection: true,
      verifyToken: (token, audience) => identity.isValid(token, audience),
    });
    await listening("keyVault", requested.keyVault, () => vault.start());
    cleanups.push(() => vault.stop());

    const entra = new FakeEntra({
      certs,
      port: requested.entra,
      // Cached access tokens outlive a revocation; short ones make it show up within minutes.
      ...(options.revokeAfterMinutes !== undefined ? { accessTokenLifetimeSec: 600 } : {}),
    });
    await listening("entra", requested.entra, () => entra.start());
    cleanups.push(() => entra.stop());
    entra.registerApp({
      clientId: SANDBOX_CLIENT_ID,
      clientSecret: SANDBOX_CLIENT_SECRET,
      redirectUris: [`${publicBaseUrl}/api/consent/callback`],
      name: "MSSP Defender collector (sandbox)",
      // What infra/scripts/register-app.sh requests: each source's read permission, delegated and application.
      permissions: { [DEFENDER_RESOURCE]: ["Alert.Read", "Incident.Read"], [GRAPH_RESOURCE]: ["User.Read", "SecurityAlert.Read.All"] },
      applicationPermissions: { [DEFENDER_RESOURCE]: ["Alert.Read.All"], [GRAPH_RESOURCE]: ["SecurityAlert.Read.All"] },
    });
    for (const tenant of SANDBOX_TENANTS) entra.addTenant(tenant.id, { name: tenant.name, users: tenant.users });
    const operators = setupOperators(entra, {
      tenantId: SANDBOX_OPERATOR_TENANT_ID,
      apiClientId: SANDBOX_OPERATOR_API_CLIENT_ID,
      consoleClientId: SANDBOX_CONSOLE_CLIENT_ID,
      publicBaseUrl,
      domain: "mssp-sandbox.example",
    });
    // The secretless credentials work too: set MSSP_CLIENT_CREDENTIAL (docs/sandbox.md).
    identity.authorityHost = entra.url;
    entra.trustIssuer(identity.exchangeIssuer, identity.publicKey);
    entra.addFederatedCredential(SANDBOX_CLIENT_ID, {
      name: "sandbox-managed-identity",
      issuer: identity.exchangeIssuer,
      subject: identity.principalId,
      audiences: ["api://AzureADTokenExchange"],
    });
    const certificate = vault.createCertificate(SANDBOX_CERTIFICATE_NAME);
    entra.addCertificate(SANDBOX_CLIENT_ID, certificate.certificateDer);

    const throttled = new Map<string, number>();
    const defender = new FakeDefender({
      certs,
      port: requested.defender,
      authenticate: defenderAuthenticator(entra),
      ...(options.rateLimitPerMinute ? { rateLimit: { perMinute: options.rateLimitPerMinute } } : {}),
      ...(options.throttle
        ? {
            beforeResponse: (ctx: RequestContext) => {
              // The consent callback's probe ($top=1) must pass, or consent would fail.
              if (ctx.entry.query.$top === "1") return;
              const n = (throttled.get(ctx.tenantId) ?? 0) + 1;
              throttled.set(ctx.tenantId, n);
              if (n % 2 === 1) ctx.fake.inject(ctx.tenantId, { status: 429, retryAfterSeconds: 2 });
            },
          }
        : {}),
    });
    await listening("defender", requested.defender, () => defender.start());
    cleanups.push(() => defender.stop());

    // Graph's documented limit for security alerts, per app and tenant (the app budgets below it).
    const graph = new FakeGraph({
      certs,
      port: requested.graph,
      authenticate: graphAuthenticator(entra),
      rateLimit: { perMinute: GRAPH_ALERTS_REQUESTS_PER_MINUTE },
    });
    await listening("graph", requested.graph, () => graph.start());
    cleanups.push(() => graph.stop());

    const destinations = createSandboxDestinations({
      certs,
      ports: requested,
      identity,
      ...(options.splunkAck ? { splunkAck: true } : {}),
    });
    for (const server of destinations.servers) {
      await listening(server.port, requested[server.port], () => server.start());
      cleanups.push(() => server.stop());
    }
    destinations.storeSecrets(vault);

    const now = Date.now();
    const graphTenants = SANDBOX_TENANTS.filter((t) => sourceOf(t) === "graph");
    for (const tenant of graphTenants) graph.setAlerts(tenant.id, graphSeedAlerts(tenant.id, options.alertsPerTenant ?? 300, now));
    for (const tenant of SANDBOX_TENANTS.filter((t) => sourceOf(t) === "defender")) {
      defender.setAlerts(
        tenant.id,
        makeAlerts({
          count: options.alertsPerTenant ?? 300,
          // Inside the app's first-pull lookback (7 days) and before its pull lag (60 s).
          from: new Date(now - 6 * 24 * 3600_000),
          to: new Date(now - 2 * 60_000),
          seed: `sandbox:${tenant.id}`,
          aadTenantId: tenant.id,
        }),
      );
    }
    let largeAlertId: string | undefined;
    if (options.largeAlertMiB && options.largeAlertMiB > 0) {
      const first = SANDBOX_TENANTS[0]!;
      const large = makeLargeAlert(Math.round(options.largeAlertMiB * 1024 * 1024), {
        lastUpdateTime: new Date(now - 3 * 3600_000),
        seed: `sandbox-large:${first.id}`,
        aadTenantId: first.id,
      });
      defender.upsertAlert(first.id, large);
      largeAlertId = large.id;
    }

    const azurite = await launchAzurite(
      { blob: requested.azuriteBlob, queue: requested.azuriteQueue, table: requested.azuriteTable },
      (line) => log(`azurite: ${line}`),
    );
    cleanups.push(() => azurite.stop());

    const settings: Record<string, string> = {
      FUNCTIONS_WORKER_RUNTIME: "node",
      AzureWebJobsStorage: azurite.connectionString,
      MSSP_CLIENT_ID: SANDBOX_CLIENT_ID,
      MSSP_CLIENT_SECRET: SANDBOX_CLIENT_SECRET,
      PUBLIC_BASE_URL: publicBaseUrl,
      KEY_VAULT_URL: vault.url,
      ALERTS_STORAGE: azurite.connectionString,
      PULL_SCHEDULE: SANDBOX_PULL_SCHEDULE,
      ENTRA_AUTHORITY_HOST: entra.url,
      DEFENDER_API_BASE_URL: defender.url,
      // Operators sign in to the console (and automation gets tokens) at the Entra simulator.
      ...operators.settings,
      GRAPH_BASE_URL: graph.url,
      ...destinations.settings(),
      ...identity.env,
      // Read by Node when the worker process starts: the worker trusts the simulators' CA.
      NODE_EXTRA_CA_CERTS: certs.caPath,
      // Extra node arguments of the worker `func start` spawns: resolve *.localhost (the vault) to loopback.
      languageWorkers__node__arguments: `--require ${quoteArg(join(root, "dev", "loopback-dns.cjs"))}`,
      // An idle queue is polled at most every 2 s (host.json says 1 min), so "pull now" shows at once.
      [QUEUE_POLLING_SETTING]: SANDBOX_QUEUE_POLLING,
    };

    let settingsPath: string | undefined;
    let settingsBackup: string | undefined;
    if (options.settingsPath !== null) {
      settingsPath = options.settingsPath ?? join(root, "local.settings.json");
      settings[DEV_KEY_SETTING] = chooseFunctionKey(settingsPath, options.newKey === true);
      settingsBackup = writeLocalSettings(settingsPath, settings, appPort, join(root, ".cache", "sandbox"));
    } else {
      settings[DEV_KEY_SETTING] = newFunctionKey();
    }

    const defenderActivity = createActivity(defender, createRng(`sandbox-activity:${now}`));
    const graphActivity = createGraphActivity(graph, graphTenants, createRng(`sandbox-graph-activity:${now}`));
    const activity = (at: Date): ActivityReport[] => [...defenderActivity(at), ...graphActivity(at)];
    const activityMinutes = options.activityMinutes ?? 2;
    if (activityMinutes > 0) {
      const timer = setInterval(() => {
        try {
          const reports = activity(new Date());
          log(`activity: ${reports.map((r) => `${r.name} +${r.added.length} new, ${r.updated.length} updated (${r.total})`).join("; ")}`);
        } catch (err) {
          log(`activity failed: ${String(err)}`);
        }
      }, activityMinutes * 60_000);
      timer.unref();
      timers.push(timer);
    }

    // What the destinations received, logged when it changed.
    let lastStatus = "";
    const reportDeliveries = (): string | undefined => {
      const line = destinations.statusLine();
      if (line === lastStatus || destinations.receipts().every((d) => d.received === 0)) return undefined;
      lastStatus = line;
      log(line);
      return line;
    };
    const statusSeconds = options.deliveryStatusSeconds ?? 15;
    if (statusSeconds > 0) {
      const timer = setInterval(reportDeliveries, statusSeconds * 1000);
      timer.unref();
      timers.push(timer);
    }

    let revocation: RevocationState = "off";
    let codes = 0;
    let revokeAt = 0;
    const checkRevocation = (now: number) => {
      if (stopped || revocation === "off") return;
      const redeemed = entra.tokenCount(revokeTenant.id).authorizationCode;
      if (redeemed > codes) {
        codes = redeemed;
        if (revocation === "waiting-for-consent") {
          revocation = "scheduled";
          revokeAt = now + (options.revokeAfterMinutes ?? 0) * 60_000;
          log(`${revokeTenant.name} consented; its grant will be revoked in ${options.revokeAfterMinutes} min.`);
        } else if (revocation === "revoked") {
          entra.restoreTenant(revokeTenant.id);
          revocation = "restored";
          log(`${revokeTenant.name} consented again; its grant works again.`);
        }
      }
      if (revocation === "scheduled" && now >= revokeAt) {
        entra.revokeTenant(revokeTenant.id, 70043);
        revocation = "revoked";
        log(
          `${revokeTenant.name}'s grant is now revoked (refresh tokens fail with AADSTS70043). Once its cached access ` +
            "token expires (at most 10 min), the next pull marks the tenant reconsent-required. Re-onboard it with " +
            "POST /api/tenants and consent again.",
        );
      }
    };
    if (options.revokeAfterMinutes !== undefined) {
      revocation = "waiting-for-consent";
      const watch = setInterval(() => checkRevocation(Date.now()), 1000);
      watch.unref();
      timers.push(watch);
    }

    return {
      settings,
      ...(settingsPath ? { settingsPath } : {}),
      ...(settingsBackup ? { settingsBackup } : {}),
      ports: {
        entra: portOf(entra.url),
        keyVault: portOf(vault.url),
        defender: portOf(defender.url),
        identity: portOf(identity.endpoint),
        azuriteBlob: azurite.blobPort,
        azuriteQueue: azurite.queuePort,
        azuriteTable: azurite.tablePort,
        graph: portOf(graph.url),
        logsIngestion: portOf(destinations.logsIngestion.url),
        splunkHec: portOf(destinations.splunk.url),
        webhook: portOf(destinations.webhook.url),
      },
      appPort,
      publicBaseUrl,
      caPath: certs.caPath,
      caCreated: caBefore !== certs.caPem,
      tenants: SANDBOX_TENANTS,
      revokeTenantId: revokeTenant.id,
      certificate: { keyId: certificate.keyId, thumbprintSha256: certificate.thumbprintSha256 },
      ...(largeAlertId ? { largeAlertId } : {}),
      entra,
      operators,
      vault,
      identity,
      defender,
      graph,
      destinations,
      azurite,
      tick: (at = new Date()) => activity(at),
      reportDeliveries,
      revocationState: () => revocation,
      checkRevocation(at = new Date()) {
        checkRevocation(at.getTime());
        return revocation;
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** Runs `start`, turning a lost race for the port into the same PortInUseError as checkPorts. */
async function listening(name: keyof SandboxPorts, port: number, start: () => Promise<void>): Promise<void> {
  try {
    await start();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EADDRINUSE") throw new PortInUseError([{ name, port }]);
    throw err;
  }
}

function portOf(url: string): number {
  const u = new URL(url);
  return u.port ? Number(u.port) : u.protocol === "https:" ? 443 : 80;
}

/** Quotes a path for the worker's argument string when it has spaces. */
function quoteArg(value: string): string {
  return /\s/.test(value) ? `"${value}"` : value;
}

// ---------------------------------------------------------------------------------------
// local.settings.json

/** True for a local.settings.json this sandbox wrote (its vault is a *.vault.localhost one). */
export function isSandboxSettings(path: string): boolean {
  try {
    const parsed = JSON.parse(readFileSync(path, "utf8")) as { Values?: Record<string, unknown> };
    const vault = parsed.Values?.KEY_VAULT_URL;
    return typeof vault === "string" && /^https:\/\/[^/]*\.vault\.localhost(:\d+)?\/?$/i.test(vault);
  } catch {
    return false;
  }
}

/**
 * The function key for local.settings.json: the one the existing sandbox settings hold, so
 * `export KEY=...` stays valid across runs, unless a new one is asked for (`--new-key`).
 */
export function chooseFunctionKey(path: string, renew: boolean): string {
  if (!renew && isSandboxSettings(path)) {
    try {
      const existing = (JSON.parse(readFileSync(path, "utf8")) as { Values?: Record<string, unknown> }).Values?.[DEV_KEY_SETTING];
      if (typeof existing === "string" && isFunctionKey(existing)) return existing;
    } catch {
      // unreadable: a new key
    }
  }
  return newFunctionKey();
}

/**
 * Writes local.settings.json for `func start`. A file that the sandbox did not write is
 * moved into `backupDir` first (returned), so a developer's own settings are never lost.
 */
export function writeLocalSettings(path: string, values: Record<string, string>, appPort: number, backupDir: string): string | undefined {
  let backup: string | undefined;
  if (existsSync(path) && !isSandboxSettings(path)) {
    mkdirSync(backupDir, { recursive: true });
    backup = join(backupDir, `local.settings.${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
    renameSync(path, backup);
  }
  const file = {
    IsEncrypted: false,
    Values: values,
    Host: { LocalHttpPort: appPort },
  };
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  return backup;
}

// ---------------------------------------------------------------------------------------
// Simulated SOC activity: new alerts arrive, analysts work on existing ones.

const SANDBOX_ANALYSTS = ["soc.tier1@mssp.example", "soc.tier2@mssp.example", "analyst@mssp.example"];
const SANDBOX_COMMENTS = [
  "Triaged: device isolated pending review.",
  "Customer confirmed the activity was a scheduled pen test.",
  "Escalated to tier 2.",
  "Hash submitted for deep analysis.",
];
const RESOLUTIONS: [string, string][] = [
  ["TruePositive", "Malware"],
  ["TruePositive", "MaliciousUserActivity"],
  ["FalsePositive", "NotMalicious"],
  ["InformationalExpectedActivity", "SecurityTesting"],
];

function createActivity(defender: FakeDefender, rng: Rng): (at: Date) => ActivityReport[] {
  const int = (min: number, max: number) => min + Math.floor(rng() * (max - min + 1));
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rng() * list.length)]!;
  return (at) => {
    const reports: ActivityReport[] = [];
    const stamp = formatTimestamp(at, 7);
    for (const tenant of SANDBOX_TENANTS.filter((t) => sourceOf(t) === "defender")) {
      const updatedIds: string[] = [];
      const open = defender.getAlerts(tenant.id).filter((a) => a.status !== "Resolved");
      const updates = Math.min(open.length, int(2, 5));
      for (let i = 0; i < updates; i++) {
        const alert = open.splice(Math.floor(rng() * open.length), 1)[0]!;
        const changes: Partial<DefenderAlert> = {
          comments: [...alert.comments, { comment: pick(SANDBOX_COMMENTS), createdBy: pick(SANDBOX_ANALYSTS), createdTime: stamp }],
        };
        if (alert.status === "New" || alert.status === "Unknown") {
          Object.assign(changes, { status: "InProgress", assignedTo: pick(SANDBOX_ANALYSTS) });
        } else {
          const [classification, determination] = pick(RESOLUTIONS);
          Object.assign(changes, { status: "Resolved", resolvedTime: stamp, classification, determination });
        }
        defender.touch(tenant.id, [alert.id], at, changes);
        updatedIds.push(alert.id);
      }
      const addedIds: string[] = [];
      const count = int(1, 4);
      for (let i = 0; i < count; i++) {
        const alert = newAlert(tenant.id, at, rng);
        if (defender.getAlert(tenant.id, alert.id)) continue;
        defender.upsertAlert(tenant.id, alert);
        addedIds.push(alert.id);
      }
      reports.push({
        tenantId: tenant.id,
        name: tenant.name,
        source: "defender",
        added: addedIds,
        updated: updatedIds,
        total: defender.getAlerts(tenant.id).length,
      });
    }
    return reports;
  };
}

/** A freshly raised alert: created within the last hour, status New. */
function newAlert(tenantId: string, at: Date, rng: Rng): DefenderAlert {
  const hourAgo = toTicks(at) - 3600n * 10_000_000n;
  let alert = makeAlert({ rng, lastUpdateTime: at, aadTenantId: tenantId, status: "New", resolvedTime: null });
  for (let i = 0; i < 20 && toTicks(alert.alertCreationTime) < hourAgo; i++) {
    alert = makeAlert({ rng, lastUpdateTime: at, aadTenantId: tenantId, status: "New", resolvedTime: null });
  }
  return { ...alert, classification: null, determination: null, assignedTo: null };
}

// ---------------------------------------------------------------------------------------
// Azurite on fixed (or free) ports, in memory.

export interface AzuriteProcess {
  blobPort: number;
  queuePort: number;
  tablePort: number;
  connectionString: string;
  stop(): Promise<void>;
}

/**
 * Real Azurite from the devDependency, in memory. It runs in its own process group, so a
 * Ctrl-C in the terminal reaches `func start` and the sandbox but not Azurite: the sandbox
 * stops it after the Functions host is gone. If the sandbox dies without cleaning up,
 * Azurite sees its stdin close and exits too.
 */
export async function launchAzurite(
  ports: { blob: number; queue: number; table: number },
  onError: (line: string) => void = () => {},
): Promise<AzuriteProcess> {
  const require = createRequire(import.meta.url);
  const entry = join(require.resolve("azurite/package.json"), "..", "dist", "src", "azurite.js");
  const cwd = mkdtempSync(join(tmpdir(), "sandbox-azurite-"));
  const watchdog = "process.stdin.on('end',()=>process.exit(0));process.stdin.resume();";
  const child: ChildProcess = spawn(
    process.execPath,
    [
      "--import",
      `data:text/javascript,${encodeURIComponent(watchdog)}`,
      entry,
      "--inMemoryPersistence",
      "--extentMemoryLimit=512",
      "--silent",
      "--skipApiVersionCheck",
      "--disableTelemetry",
      "--blobHost=127.0.0.1",
      "--queueHost=127.0.0.1",
      "--tableHost=127.0.0.1",
      `--blobPort=${ports.blob}`,
      `--queuePort=${ports.queue}`,
      `--tablePort=${ports.table}`,
    ],
    { cwd, stdio: ["pipe", "pipe", "pipe"], detached: process.platform !== "win32" },
  );
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const found: Record<string, number> = {};
  let output = "";
  try {
    await new Promise<void>((resolve, reject) => {
      const timeout = setTimeout(() => reject(new Error(`Azurite did not start within 60 s:\n${output}`)), 60_000);
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        for (const m of output.matchAll(/Azurite (Blob|Queue|Table) service is successfully listening at http:\/\/[^:]+:(\d+)/g)) {
          found[m[1]!] = Number(m[2]);
        }
        if (found.Blob && found.Queue && found.Table) {
          clearTimeout(timeout);
          resolve();
        }
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.once("error", (err) => {
        clearTimeout(timeout);
        reject(err);
      });
      child.once("exit", (code) => {
        clearTimeout(timeout);
        const busy = /EADDRINUSE[^\n]*?:(\d+)/.exec(output);
        if (busy) {
          const port = Number(busy[1]);
          const name = port === ports.queue ? "azuriteQueue" : port === ports.table ? "azuriteTable" : "azuriteBlob";
          reject(new PortInUseError([{ name, port }]));
        } else {
          reject(new Error(`Azurite exited with code ${code}:\n${output}`));
        }
      });
    });
  } catch (err) {
    process.off("exit", killOnExit);
    child.kill("SIGKILL");
    rmSync(cwd, { recursive: true, force: true });
    throw err;
  }
  child.removeAllListeners("exit");
  child.stdout?.removeAllListeners("data");
  child.stdout?.resume();
  child.stderr?.removeAllListeners("data");
  child.stderr?.on("data", (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) if (line.trim()) onError(line.trim());
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const host = "http://127.0.0.1";
  return {
    blobPort: found.Blob!,
    queuePort: found.Queue!,
    tablePort: found.Table!,
    connectionString:
      `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};` +
      `BlobEndpoint=${host}:${found.Blob}/${AZURITE_ACCOUNT};QueueEndpoint=${host}:${found.Queue}/${AZURITE_ACCOUNT};` +
      `TableEndpoint=${host}:${found.Table}/${AZURITE_ACCOUNT};`,
    async stop() {
      process.off("exit", killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        // Data is in memory anyway; Azurite's graceful close can take seconds after traffic.
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 1500);
        await exited;
        clearTimeout(timer);
      }
      child.stdin?.destroy();
      rmSync(cwd, { recursive: true, force: true });
    },
  };
}
