import { randomUUID } from "node:crypto";
import { FakeDefender } from "../../simulators/defender.js";
import { DEFENDER_RESOURCE, defenderAuthenticator, FakeEntra, GRAPH_RESOURCE } from "../../simulators/entra.js";
import { FakeGraph } from "../../simulators/graph.js";
import { loadLoopbackDns, testCerts } from "../../simulators/https.js";
import { type CertificateState, FakeKeyVault } from "../../simulators/keyvault.js";
import { FakeManagedIdentity, INTERFERING_ENV } from "../../simulators/managed-identity.js";
import { automationToken, consoleUserToken, type OperatorSetup, type Role } from "../../simulators/operators.js";
import { resetHealthCache } from "../../shared/platform/health.js";
import { resetCredentialConfirmation } from "../../shared/platform/client-credential.js";
import type { ClientCredentialKind } from "../../shared/platform/config.js";
import { resetServices, type Services, services } from "../../shared/platform/services.js";
import { type Azurite, startAzurite } from "./azurite.js";
import type { Host } from "../../dev/host/host.js";
import { type AppHost, type AppHostOptions, type HttpCall, type HttpResult, startAppHost, useOperatorTokens } from "./functions.js";
import { type Seen, watch } from "./leaks.js";
import { operatorTokenSource, setupTestOperators } from "./operators.js";

/**
 * The whole app against real Azurite and local HTTPS fakes of Entra ID, Key Vault, the
 * managed-identity endpoint and the Defender API, configured only through app settings,
 * served by the dev host (dev/host) in this process: HTTP functions get real HTTP requests,
 * timer and queue functions the invocation data the Functions host sends. The host's queue
 * listener and timers stay off unless a test runs them (`h.host.drainQueues()`, `h.host.runTimer()`).
 *
 * Operator routes get an operator token (Admin by default; `as: "Reader"`, `as: null`, or
 * `bearer`): an app-only token of the Admin automation application of the MSSP tenant, which
 * the fake Entra holds with its two registrations and one user per role (`h.operators`).
 */
export const CLIENT_ID = "5f0c8c1e-7c2b-4e0a-9a57-3d2b8f6a1c11";
export const CLIENT_SECRET = "client-secret-value-that-must-never-leak";
export const PUBLIC_BASE_URL = "https://collector.localhost";
/** The name of the app registration's federated identity credential (the app's managed identity). */
export const FIC_NAME = "collector-managed-identity";
/** The Key Vault certificate the app signs client assertions with (MSSP_CLIENT_CREDENTIAL=certificate). */
export const CERTIFICATE_NAME = "mssp-client-certificate";

export interface Harness {
  azurite: Azurite;
  entra: FakeEntra;
  vault: FakeKeyVault;
  identity: FakeManagedIdentity;
  defender: FakeDefender;
  /** Graph security alerts_v2, for tenants whose source is `graph`. */
  graph: FakeGraph;
  /** The app registration's certificate in the fake vault (its key never leaves it). */
  certificate: CertificateState;
  /** The dev host serving the app (its queue listener and timers are manual). */
  host: Host;
  /** Every log line any function wrote (`[level] message`), and the host's failure lines (`[host] ...`). */
  logs: string[];
  settings: Record<string, string>;
  /** The MSSP tenant: the operator API and console registrations, users and automation apps per role. */
  operators: OperatorSetup;
  /** An app-only operator token of the role's automation application. */
  appToken(role: Role): Promise<string>;
  /** A user's operator token of the role's user, signed in as the console does (code + PKCE). */
  userToken(role: Role): Promise<string>;
  /** A real HTTP request to the route of HTTP function `name` (with the function key where the route needs one). */
  http(name: string, call: HttpCall): Promise<HttpResult>;
  /** Invokes timer or queue function `name` through the host; `input` is the queue message (or `{isPastDue}`). */
  trigger(name: string, input: unknown): Promise<void>;
  /** Registers a tenant with one user in the fake Entra and returns its id. */
  newTenant(): string;
  /** Register (POST /api/tenants), open the link, consent, and run the callback. */
  onboard(tenantId: string, options?: Parameters<FakeEntra["consent"]>[1]): Promise<HttpResult>;
  /** The audit table's rows (entries and purge records), for the leak check. */
  storedHaystacks(): Promise<Seen[]>;
  /** The same in application mode: register with `"mode": "application"`, admin consent, callback. */
  onboardApp(tenantId: string, options?: Parameters<FakeEntra["adminConsent"]>[1]): Promise<HttpResult>;
  /**
   * Switches MSSP_CLIENT_CREDENTIAL (and the settings it needs) for the next invocations and
   * returns the fresh services (the previous ones, and whatever a test changed on them, are dropped).
   */
  useCredential(kind: ClientCredentialKind): Promise<Services>;
  stop(): Promise<void>;
}

/**
 * `hostOptions.queues` / `.timers` switch the host's queue listener and timers on (`auto`);
 * by default they are off and tests run them explicitly.
 */
export async function startHarness(
  extraSettings: Record<string, string> = {},
  hostOptions: Pick<AppHostOptions, "queues" | "timers" | "port"> = {},
): Promise<Harness> {
  // A browser test serves the app at its own PUBLIC_BASE_URL (http://localhost:<port>).
  const publicBaseUrl = extraSettings.PUBLIC_BASE_URL ?? PUBLIC_BASE_URL;
  loadLoopbackDns();
  for (const name of INTERFERING_ENV) delete process.env[name];
  const certs = testCerts();
  const azurite = await startAzurite();
  const identity = new FakeManagedIdentity();
  const vault = new FakeKeyVault({
    certs,
    host: "test.vault.localhost",
    resource: "https://vault.localhost",
    purgeProtection: true,
    verifyToken: (token, audience) => identity.isValid(token, audience),
  });
  const entra = new FakeEntra({ certs });
  await Promise.all([identity.start(), vault.start(), entra.start()]);
  const defender = new FakeDefender({ certs, authenticate: defenderAuthenticator(entra) });
  const graph = new FakeGraph({
    certs,
    authenticate: async (bearer) => {
      const claims = await entra.verifyAccessToken(bearer, GRAPH_RESOURCE);
      if (!claims) return null;
      // Delegated tokens carry scopes (scp), app-only tokens roles.
      return { tenantId: claims.tenantId, permissions: [...(claims.scp?.split(" ") ?? []), ...claims.roles] };
    },
  });
  await Promise.all([defender.start(), graph.start()]);
  entra.registerApp({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUris: [`${publicBaseUrl}/api/consent/callback`],
    name: "MSSP Defender collector",
    permissions: {
      [DEFENDER_RESOURCE]: ["Alert.Read", "Incident.Read"],
      [GRAPH_RESOURCE]: ["User.Read", "SecurityAlert.Read.All"],
    },
    applicationPermissions: {
      [DEFENDER_RESOURCE]: ["Alert.Read.All"],
      [GRAPH_RESOURCE]: ["SecurityAlert.Read.All"],
    },
  });
  const operators = setupTestOperators(entra, publicBaseUrl);
  // The secretless credentials, ready to switch to (useCredential): the managed identity as a
  // federated credential of the app, and a certificate whose key stays in the vault.
  identity.authorityHost = entra.url;
  entra.trustIssuer(identity.exchangeIssuer, identity.publicKey);
  entra.addFederatedCredential(CLIENT_ID, {
    name: FIC_NAME,
    issuer: identity.exchangeIssuer,
    subject: identity.principalId,
    audiences: ["api://AzureADTokenExchange"],
  });
  const certificate = vault.createCertificate(CERTIFICATE_NAME);
  entra.addCertificate(CLIENT_ID, certificate.certificateDer);

  const settings: Record<string, string> = {
    MSSP_CLIENT_ID: CLIENT_ID,
    MSSP_CLIENT_SECRET: CLIENT_SECRET,
    PUBLIC_BASE_URL,
    KEY_VAULT_URL: vault.url,
    ALERTS_STORAGE: azurite.connectionString,
    PULL_SCHEDULE: "0 */5 * * * *",
    ENTRA_AUTHORITY_HOST: entra.url,
    DEFENDER_API_BASE_URL: defender.url,
    ...operators.settings,
    GRAPH_BASE_URL: graph.url,
    ...identity.env,
    ...extraSettings,
  };
  Object.assign(process.env, settings);
  resetServices();
  resetHealthCache();

  const logs: string[] = [];
  useOperatorTokens(operatorTokenSource(entra, operators));
  let app: AppHost;
  try {
    app = await startAppHost(settings, { ...hostOptions, logs });
  } catch (err) {
    await Promise.all([defender.stop(), graph.stop(), entra.stop(), vault.stop(), identity.stop()]);
    await azurite.stop();
    throw err;
  }
  const harness: Harness = {
    azurite,
    entra,
    vault,
    identity,
    defender,
    graph,
    certificate,
    host: app.host,
    logs,
    settings,
    operators,
    appToken: (role) => automationToken(entra.url, operators, role),
    userToken: (role) => consoleUserToken(entra, operators, operators.users[role]),
    http: (name, call) => app.http(name, call),
    trigger: (name, input) => app.trigger(name, input),
    newTenant() {
      const tenantId = randomUUID();
      entra.addTenant(tenantId, { users: [{ oid: randomUUID(), upn: `admin@${tenantId.slice(0, 8)}.example` }] });
      return tenantId;
    },
    async onboard(tenantId, options) {
      const registered = await harness.http("tenants-create", {
        method: "POST",
        path: "tenants",
        body: JSON.stringify({ tenantId, displayName: `Customer ${tenantId.slice(0, 8)}`, relink: true }),
      });
      const consentUrl = (registered.json as { consentUrl: string }).consentUrl;
      const authorize = await openLink(harness, consentUrl);
      const callback = await entra.consent(authorize, options);
      return harness.http("consent-callback", { path: pathOf(callback) });
    },
    async storedHaystacks(): Promise<Seen[]> {
      const { TableClient } = await import("@azure/data-tables");
      const out: Seen[] = [];
      for (const table of ["audit"]) {
        const client = TableClient.fromConnectionString(azurite.connectionString, table, { allowInsecureConnection: true });
        const rows: unknown[] = [];
        try {
          for await (const row of client.listEntities()) rows.push(row);
        } catch {
          continue; // never created
        }
        out.push({ where: `table ${table}`, text: JSON.stringify(rows) });
      }
      return out;
    },
    async onboardApp(tenantId, options) {
      const registered = await harness.http("tenants-create", {
        method: "POST",
        path: "tenants",
        body: JSON.stringify({ tenantId, displayName: `Customer ${tenantId.slice(0, 8)}`, relink: true, mode: "application" }),
      });
      const consentUrl = (registered.json as { consentUrl: string }).consentUrl;
      const adminConsent = await openLink(harness, consentUrl);
      const callback = entra.adminConsent(adminConsent, options);
      return harness.http("consent-callback", { path: pathOf(callback) });
    },
    async useCredential(kind) {
      const values: Record<string, string> = { MSSP_CLIENT_CREDENTIAL: kind };
      if (kind === "certificate") {
        values.MSSP_CLIENT_CERTIFICATE_KEY_ID = certificate.keyId;
        values.MSSP_CLIENT_CERTIFICATE_THUMBPRINT = certificate.thumbprintSha256;
      }
      Object.assign(process.env, values);
      Object.assign(settings, values);
      resetServices();
      resetHealthCache();
      resetCredentialConfirmation();
      return services();
    },
    async stop() {
      useOperatorTokens(undefined);
      await app.stop();
      await Promise.all([defender.stop(), graph.stop(), entra.stop(), vault.stop(), identity.stop()]);
      await azurite.stop();
      resetServices();
    },
  };
  return watch(harness); // the suite-wide leak check (test/support/leaks.ts)
}

/** Opens a consent link (GET /api/consent/start) and returns the Entra authorize URL it redirects to. */
export async function openLink(harness: Harness, consentUrl: string): Promise<string> {
  const started = await harness.http("consent-start", { path: pathOf(consentUrl) });
  const location = started.headers.location;
  if (started.status !== 302 || !location) throw new Error(`consent/start answered ${started.status}: ${started.text}`);
  return location;
}

/** `/api/...?query` of an absolute URL, as the path argument of Harness.http. */
export function pathOf(url: string): string {
  const u = new URL(url);
  return `${u.pathname.replace(/^\/api\//, "")}${u.search}`;
}

/** Waits for `event`, or fails at once if `run` ends first (a test waits; it never hangs). */
export async function untilOrEnd(event: Promise<void>, run: Promise<unknown>): Promise<void> {
  await Promise.race([
    event,
    run.then(
      () => Promise.reject(new Error("the run ended before the awaited point")),
      (err: unknown) => Promise.reject(err),
    ),
  ]);
}
