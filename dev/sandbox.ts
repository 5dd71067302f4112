/**
 * `npm run sandbox`: the whole product on a simulated cloud, on this machine.
 *
 * Starts the simulators (dev/sandbox-servers.ts), writes local.settings.json for them,
 * then runs `func start` in this terminal; without Azure Functions Core Tools it says so
 * in one line and runs the app on the dev host (dev/host) instead. `--walkthrough` runs
 * the README journey by itself on the dev host and exits. Ctrl-C stops everything.
 * Options: `npm run sandbox -- --help`, or docs/sandbox.md.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { repoRoot } from "../simulators/https.js";
import { INTERFERING_ENV } from "../simulators/managed-identity.js";
import { findOnPath, NO_FUNC_LINE } from "./func-path.js";
import { type DevHostProcess, hostProcessEnv, spawnDevHost } from "./host-process.js";
import {
  DEFAULT_APP_PORT,
  DEFAULT_PORTS,
  PortInUseError,
  type Sandbox,
  type SandboxOptions,
  type SandboxPorts,
  sourceOf,
  startSandboxServers,
} from "./sandbox-servers.js";
import { SANDBOX_HEC_TOKEN_SECRET, SANDBOX_WEBHOOK_SECRET_NAME } from "./sandbox-destinations.js";
import { formatSummary, runWalkthrough } from "./walkthrough.js";

const HELP = `Usage: npm run sandbox -- [options]

Runs the collector locally against simulated Entra ID, Key Vault, managed identity,
Defender API, Microsoft Graph and Azurite, delivering to simulated Sentinel (Logs
Ingestion), Splunk HEC and webhook destinations, then starts \`func start\` (Azure
Functions Core Tools), or the dev host (dev/host) when func is not on PATH. Ctrl-C stops
everything.
Every option can also be set as an environment variable (shown in brackets).

Ports (all listen on 127.0.0.1 only; the sandbox refuses to start if one is taken):
  --entra-port <n>     Entra ID simulator (HTTPS)              [SANDBOX_ENTRA_PORT]     ${DEFAULT_PORTS.entra}
  --keyvault-port <n>  Key Vault simulator (HTTPS)             [SANDBOX_KEYVAULT_PORT]  ${DEFAULT_PORTS.keyVault}
  --defender-port <n>  Defender API simulator (HTTPS)          [SANDBOX_DEFENDER_PORT]  ${DEFAULT_PORTS.defender}
  --identity-port <n>  managed identity endpoint (HTTP)        [SANDBOX_IDENTITY_PORT]  ${DEFAULT_PORTS.identity}
  --azurite-port <n>   Azurite blob; queue = n+1, table = n+2  [SANDBOX_AZURITE_PORT]   ${DEFAULT_PORTS.azuriteBlob}
  --graph-port <n>     Microsoft Graph simulator (HTTPS)       [SANDBOX_GRAPH_PORT]     ${DEFAULT_PORTS.graph}
  --logs-ingestion-port <n>
                       Sentinel destination: Logs Ingestion    [SANDBOX_LOGS_INGESTION_PORT] ${DEFAULT_PORTS.logsIngestion}
  --splunk-port <n>    Splunk destination: HEC (HTTPS)         [SANDBOX_SPLUNK_PORT]    ${DEFAULT_PORTS.splunkHec}
  --webhook-port <n>   webhook destination: receiver (HTTPS)   [SANDBOX_WEBHOOK_PORT]   ${DEFAULT_PORTS.webhook}
  --app-port <n>       the app (PUBLIC_BASE_URL)               [SANDBOX_APP_PORT]       ${DEFAULT_APP_PORT}

Simulation:
  --alerts <n>                 alerts per tenant at start                 [SANDBOX_ALERTS]                300
  --activity-minutes <m>       new/updated alerts every m minutes, 0=off  [SANDBOX_ACTIVITY_MINUTES]      2
  --revoke-after-minutes <m>   revoke Northwind's grant m minutes after   [SANDBOX_REVOKE_AFTER_MINUTES]  off
                               its admin consents (reconsent-required)
  --throttle                   every other Defender request of a pull     [SANDBOX_THROTTLE=1]            off
                               gets 429 with Retry-After: 2
  --rate-limit <n>             Defender requests per minute per tenant    [SANDBOX_RATE_LIMIT]            off
  --large-alert-mib <n>        add one alert of n MiB to Contoso          [SANDBOX_LARGE_ALERT_MIB]       off
  --splunk-ack                 Splunk HEC with indexer acknowledgement    [SANDBOX_SPLUNK_ACK=1]          off
                               (USE_ACK=true)

Other:
  --walkthrough                run the README journey by itself on the dev host, print a summary, exit
  --verbose                    with --walkthrough: also print the dev host's output
  --new-key                    write a new DEV_FUNCTION_KEY (the function key; kept across runs otherwise)
  --no-func                    only the simulators; run func start yourself [SANDBOX_NO_FUNC=1]
  -h, --help
`;

interface Cli {
  options: SandboxOptions;
  ports: SandboxPorts;
  appPort: number;
  noFunc: boolean;
  walkthrough: boolean;
  verbose: boolean;
}

function parseCli(argv: string[], env: NodeJS.ProcessEnv): Cli {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      "entra-port": { type: "string" },
      "keyvault-port": { type: "string" },
      "defender-port": { type: "string" },
      "identity-port": { type: "string" },
      "azurite-port": { type: "string" },
      "graph-port": { type: "string" },
      "logs-ingestion-port": { type: "string" },
      "splunk-port": { type: "string" },
      "webhook-port": { type: "string" },
      "app-port": { type: "string" },
      alerts: { type: "string" },
      "activity-minutes": { type: "string" },
      "revoke-after-minutes": { type: "string" },
      throttle: { type: "boolean" },
      "rate-limit": { type: "string" },
      "large-alert-mib": { type: "string" },
      "splunk-ack": { type: "boolean" },
      "no-func": { type: "boolean" },
      walkthrough: { type: "boolean" },
      verbose: { type: "boolean" },
      "new-key": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const text = (flag: keyof typeof values, name: string): string | undefined => {
    const v = values[flag];
    if (typeof v === "string") return v;
    const e = env[name];
    return e !== undefined && e.trim() !== "" ? e.trim() : undefined;
  };
  const number = (flag: keyof typeof values, name: string, min: number, max: number, integer = true): number | undefined => {
    const raw = text(flag, name);
    if (raw === undefined) return undefined;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new UsageError(`--${String(flag)} / ${name} must be ${integer ? "an integer" : "a number"} from ${min} to ${max}, got "${raw}"`);
    }
    return n;
  };
  const flag = (key: keyof typeof values, name: string): boolean =>
    values[key] === true || /^(1|true|yes|on)$/i.test(env[name] ?? "");

  const port = (key: keyof typeof values, name: string, fallback: number) => number(key, name, 1, 65535) ?? fallback;
  const azurite = number("azurite-port", "SANDBOX_AZURITE_PORT", 1, 65533) ?? DEFAULT_PORTS.azuriteBlob;
  const ports: SandboxPorts = {
    entra: port("entra-port", "SANDBOX_ENTRA_PORT", DEFAULT_PORTS.entra),
    keyVault: port("keyvault-port", "SANDBOX_KEYVAULT_PORT", DEFAULT_PORTS.keyVault),
    defender: port("defender-port", "SANDBOX_DEFENDER_PORT", DEFAULT_PORTS.defender),
    identity: port("identity-port", "SANDBOX_IDENTITY_PORT", DEFAULT_PORTS.identity),
    azuriteBlob: azurite,
    azuriteQueue: azurite + 1,
    azuriteTable: azurite + 2,
    graph: port("graph-port", "SANDBOX_GRAPH_PORT", DEFAULT_PORTS.graph),
    logsIngestion: port("logs-ingestion-port", "SANDBOX_LOGS_INGESTION_PORT", DEFAULT_PORTS.logsIngestion),
    splunkHec: port("splunk-port", "SANDBOX_SPLUNK_PORT", DEFAULT_PORTS.splunkHec),
    webhook: port("webhook-port", "SANDBOX_WEBHOOK_PORT", DEFAULT_PORTS.webhook),
  };
  const appPort = port("app-port", "SANDBOX_APP_PORT", DEFAULT_APP_PORT);
  const noFunc = flag("no-func", "SANDBOX_NO_FUNC");
  const options: SandboxOptions = {
    ports,
    appPort,
    alertsPerTenant: number("alerts", "SANDBOX_ALERTS", 0, 20_000) ?? 300,
    activityMinutes: number("activity-minutes", "SANDBOX_ACTIVITY_MINUTES", 0, 1440, false) ?? 2,
    throttle: flag("throttle", "SANDBOX_THROTTLE"),
    splunkAck: flag("splunk-ack", "SANDBOX_SPLUNK_ACK"),
    newKey: values["new-key"] === true,
  };
  const revoke = number("revoke-after-minutes", "SANDBOX_REVOKE_AFTER_MINUTES", 0, 1440, false);
  if (revoke !== undefined) options.revokeAfterMinutes = revoke;
  const rateLimit = number("rate-limit", "SANDBOX_RATE_LIMIT", 1, 10_000);
  if (rateLimit !== undefined) options.rateLimitPerMinute = rateLimit;
  const large = number("large-alert-mib", "SANDBOX_LARGE_ALERT_MIB", 0, 64, false);
  if (large !== undefined) options.largeAlertMiB = large;
  return { options, ports, appPort, noFunc, walkthrough: values.walkthrough === true, verbose: values.verbose === true };
}

class UsageError extends Error {}

type AppHost = "func" | "dev host" | "none";

function printSummary(sandbox: Sandbox, cli: Cli, host: AppHost): void {
  const p = sandbox.ports;
  const base = `http://localhost:${sandbox.appPort}`;
  const first = sandbox.tenants[0]!;
  const appTenant = sandbox.tenants.find((t) => t.mode === "application") ?? first;
  const graphTenant = sandbox.tenants.find((t) => sourceOf(t) === "graph");
  const lines = [
    "",
    "MSSP Defender collector - local sandbox (everything in memory; a restart starts from scratch)",
    "",
    `  Entra ID simulator        ${sandbox.settings.ENTRA_AUTHORITY_HOST}`,
    `  Key Vault simulator       ${sandbox.settings.KEY_VAULT_URL}`,
    `  Defender API simulator    ${sandbox.settings.DEFENDER_API_BASE_URL}`,
    `  Microsoft Graph simulator ${sandbox.settings.GRAPH_BASE_URL}`,
    `  Managed identity          ${sandbox.settings.IDENTITY_ENDPOINT}`,
    `  Azurite (in memory)       blob ${p.azuriteBlob}, queue ${p.azuriteQueue}, table ${p.azuriteTable}`,
    `  App settings              ${sandbox.settingsPath ?? "(not written)"}`,
  ];
  if (sandbox.settingsBackup) lines.push(`  Your previous local.settings.json was moved to ${sandbox.settingsBackup}`);
  lines.push("", `Simulated customer tenants (${cli.options.alertsPerTenant} alerts each at start):`);
  for (const t of sandbox.tenants) {
    const notes: string[] = [];
    if (t.id === sandbox.revokeTenantId && cli.options.revokeAfterMinutes !== undefined) {
      notes.push(`grant revoked ${cli.options.revokeAfterMinutes} min after consent`);
    }
    if (t === first && sandbox.largeAlertId) notes.push(`+1 alert of ${cli.options.largeAlertMiB} MiB`);
    notes.unshift(`${t.mode} mode`);
    if (sourceOf(t) === "graph") notes.push('"source":"graph" (Microsoft Graph alerts_v2)');
    lines.push(`  ${t.name.padEnd(22)} ${t.id}  (${notes.join("; ")})`);
    lines.push(`  ${"".padEnd(22)} users: ${t.users.map((u) => u.upn).join(", ")}`);
  }
  const activity = cli.options.activityMinutes ?? 2;
  lines.push(
    activity > 0
      ? `  Every ${activity} min each tenant gets 1-4 new alerts and 2-5 updated ones.`
      : "  Alert activity is off (--activity-minutes 0).",
  );
  if (cli.options.throttle) lines.push("  Throttling: every other Defender request of a pull gets 429 (Retry-After: 2).");
  lines.push("", "Delivery destinations (every pulled alert goes to all three; a [sandbox] received: line shows the counts):");
  for (const d of sandbox.destinations.receipts()) lines.push(`  ${d.name.padEnd(9)} ${d.label.padEnd(36)} ${d.url}`);
  lines.push(
    `  Their secrets (HEC token, webhook whsec_ secret) are in the simulated vault as ${SANDBOX_HEC_TOKEN_SECRET} and ${SANDBOX_WEBHOOK_SECRET_NAME}.`,
  );
  if (cli.options.rateLimitPerMinute) lines.push(`  Rate limit: ${cli.options.rateLimitPerMinute} Defender requests per minute per tenant.`);
  lines.push(
    "",
    `TLS: the simulators use a local CA${sandbox.caCreated ? ", generated just now" : ""}: ${sandbox.caPath}`,
    "  The app trusts it through NODE_EXTRA_CA_CERTS in local.settings.json.",
    `  Your browser only visits the Entra consent page (${sandbox.settings.ENTRA_AUTHORITY_HOST}). Either click through`,
    '  the certificate warning (Chrome/Edge: "Advanced" > "Proceed to 127.0.0.1 (unsafe)"; Firefox: "Advanced..." >',
    '  "Accept the Risk and Continue"), or trust the CA (see docs/sandbox.md#trusting-the-ca for the risks), e.g.',
    `    ${trustCommand(sandbox.caPath)}`,
    "",
    `Operator console: ${base}/api/console/  (sign in on the Entra ID simulator as one of the MSSP's operators:`,
    `  ${Object.entries(sandbox.operators.users)
      .map(([role, user]) => `${user.upn} (${role})`)
      .join(", ")})`,
    "",
    "Or the API, in a second terminal (operator routes want an Entra ID token; this one is an Admin's, valid for an hour):",
    "  export TOKEN=$(node dist/dev/operator-token.js)      # or: node dist/dev/operator-token.js Reader",
    "  1. Onboard a tenant, in delegated mode (an admin signs in) or application mode (admin consent, nothing stored):",
    `     curl -X POST ${base}/api/tenants -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"tenantId":"${first.id}","displayName":"Contoso"}'`,
    `     curl -X POST ${base}/api/tenants -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"tenantId":"${appTenant.id}","mode":"application"}'`,
    ...(graphTenant
      ? [
          `     and a tenant whose alerts come from Microsoft Graph (alerts_v2), read through the same API:`,
          `     curl -X POST ${base}/api/tenants -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"tenantId":"${graphTenant.id}","source":"graph"}'`,
        ]
      : []),
    `  2. Open the "consentUrl" of the answer in a browser, pick a user and click Accept.`,
    `  3. See the tenants:     curl ${base}/api/tenants -H "Authorization: Bearer $TOKEN"`,
    `  4. Pull now:            curl -X POST ${base}/api/tenants/${first.id}/pull -H "Authorization: Bearer $TOKEN"   (the timer pulls every 5 min)`,
    `  5. Read the alerts:     curl '${base}/api/alerts?tenantId=${first.id}&top=10' -H "Authorization: Bearer $TOKEN"`,
    `  6. Deliveries:          curl ${base}/api/health/details -H "Authorization: Bearer $TOKEN"   (per destination: backlog, last success)`,
    "  The same requests for editor REST clients: dev/sandbox.http (set @token there)",
    "",
    host === "func"
      ? "Starting func start... Ctrl-C stops it and the simulators."
      : host === "dev host"
        ? "Starting the dev host... Ctrl-C stops it and the simulators."
        : "Ctrl-C stops the simulators.",
    "",
  );
  console.log(lines.join("\n"));
}

/** How to trust the CA in this OS's browsers (Firefox: import it in its settings). */
function trustCommand(caPath: string): string {
  switch (process.platform) {
    case "darwin":
      return `security add-trusted-cert -r trustRoot -k ~/Library/Keychains/login.keychain-db "${caPath}"`;
    case "win32":
      return `certutil -user -addstore Root "${caPath}"`;
    default:
      return `certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n "MSSP collector sandbox CA" -i "${caPath}"   (Chrome/Chromium/Edge)`;
  }
}

/** Shell variables that get in the way of a `func start` run from this shell. */
function shellConflicts(settings: Record<string, string>): { shadowing: string[]; credentials: string[] } {
  return {
    shadowing: Object.keys(settings).filter((n) => process.env[n] !== undefined && process.env[n] !== settings[n]),
    credentials: INTERFERING_ENV.filter((n) => process.env[n] !== undefined),
  };
}

async function main(): Promise<void> {
  let cli: Cli;
  try {
    cli = parseCli(process.argv.slice(2), process.env);
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n\n${HELP}`);
    process.exit(2);
  }
  const root = repoRoot(import.meta.url);
  if (cli.walkthrough) return walkthrough(cli, root);
  const funcPath = cli.noFunc ? undefined : findOnPath("func");
  const host: AppHost = cli.noFunc ? "none" : funcPath ? "func" : "dev host";
  if (host === "dev host") console.log(NO_FUNC_LINE);

  let sandbox: Sandbox;
  try {
    sandbox = await startSandboxServers({ ...cli.options, root, checkAppPort: host !== "none" });
  } catch (err) {
    if (err instanceof PortInUseError) {
      console.error(`\nThe sandbox did not start:\n${err.message}`);
      console.error("Is another sandbox, Azurite (e.g. the VS Code extension), func start or the dev host still running?");
      process.exit(1);
    }
    throw err;
  }
  printSummary(sandbox, cli, host);

  let func: ChildProcess | undefined;
  let devHost: DevHostProcess | undefined;
  let stopping = false;
  const shutdown = async (signal: NodeJS.Signals | undefined, code: number) => {
    if (stopping) {
      // A second Ctrl-C: do not wait any longer.
      func?.kill("SIGKILL");
      devHost?.child.kill("SIGKILL");
      process.exit(130);
    }
    stopping = true;
    if (func && func.exitCode === null && func.signalCode === null) {
      const child = func;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      // On Ctrl-C the terminal already sent SIGINT to func (same process group); give it time.
      if (signal !== "SIGINT") child.kill("SIGTERM");
      const term = setTimeout(() => child.kill("SIGTERM"), 10_000);
      const kill = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(term);
      clearTimeout(kill);
    }
    await devHost?.stop();
    console.log("[sandbox] stopping the simulators...");
    await sandbox.stop();
    console.log("[sandbox] stopped.");
    process.exit(code);
  };
  process.on("SIGINT", () => void shutdown("SIGINT", 130));
  process.on("SIGTERM", () => void shutdown("SIGTERM", 143));
  process.on("SIGHUP", () => void shutdown("SIGHUP", 129));

  if (host === "none") {
    console.log("--no-func: run `func start` (or `node dist/dev/host/cli.js`) in another terminal, from the repository root.\n");
    const { shadowing, credentials } = shellConflicts(sandbox.settings);
    if (shadowing.length > 0) {
      console.log(
        `Note: this shell sets ${shadowing.join(", ")}. func start keeps environment variables over ` +
          "local.settings.json: unset them in the terminal where you run func start.",
      );
    }
    if (credentials.length > 0) {
      console.log(
        `Note: this shell sets ${credentials.join(", ")}, which make the app use another Azure credential ` +
          "than the simulated managed identity: unset them in the terminal where you run func start.",
      );
    }
    return;
  }

  if (host === "dev host") {
    devHost = spawnDevHost({
      root,
      port: sandbox.appPort,
      ...(sandbox.settingsPath ? { settingsPath: sandbox.settingsPath } : {}),
      env: hostProcessEnv(sandbox.settings, INTERFERING_ENV),
      stdio: "inherit",
    });
    devHost.child.once("exit", (code, signal) => {
      if (stopping) return;
      console.log(
        `\n[sandbox] the dev host exited (${signal ?? `code ${code}`}). The simulators keep running: run ` +
          "`node dist/dev/host/cli.js` in another terminal, or Ctrl-C and npm run sandbox again.",
      );
    });
    return;
  }

  const windows = process.platform === "win32";
  const args = ["start", "--port", String(sandbox.appPort)];
  func = spawn(windows ? `"${funcPath}"` : funcPath!, args, {
    cwd: root,
    stdio: "inherit",
    env: hostProcessEnv(sandbox.settings, INTERFERING_ENV),
    shell: windows,
  });
  func.once("error", (err) => {
    console.error(`[sandbox] could not run ${funcPath}: ${err.message}`);
  });
  func.once("exit", (code, signal) => {
    if (stopping) return;
    console.log(
      `\n[sandbox] func start exited (${signal ?? `code ${code}`}). The simulators keep running: run \`func start\` ` +
        "again (here after Ctrl-C and npm run sandbox, or in another terminal). Ctrl-C stops the simulators.",
    );
  });
}

/** --walkthrough: the README journey on the dev host; exit 0 with a summary, or 1 naming the failed step. */
async function walkthrough(cli: Cli, root: string): Promise<void> {
  console.log("Walkthrough: onboard, consent, pull (Defender and Graph), read alerts, deliver and check health, on the simulators and the dev host.\n");
  try {
    const summary = await runWalkthrough({
      ...cli.options,
      root,
      verbose: cli.verbose,
      log: (line) => {
        if (cli.verbose) console.log(`[sandbox] ${line}`);
      },
    });
    console.log(formatSummary(summary));
    process.exit(0);
  } catch (err) {
    if (err instanceof PortInUseError) {
      console.error(`\nThe walkthrough did not start:\n${err.message}`);
      console.error("Is a sandbox, Azurite, func start or the dev host still running? Stop it, or pick other ports.");
    } else {
      console.error(`\nThe walkthrough failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    process.exit(1);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
