/**
 * `npm run sandbox`: the whole product on a simulated cloud, on this machine.
 *
 * Starts the simulators (dev/sandbox-servers.ts), writes local.settings.json for them,
 * then runs `func start` in this terminal. Without Azure Functions Core Tools it explains
 * how to install them and keeps the simulators running for a `func start` elsewhere.
 * Ctrl-C stops everything. Options: `npm run sandbox -- --help`, or docs/sandbox.md.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { INTERFERING_ENV } from "../simulators/managed-identity.js";
import { repoRoot } from "../simulators/https.js";
import {
  DEFAULT_APP_PORT,
  DEFAULT_PORTS,
  PortInUseError,
  type Sandbox,
  type SandboxOptions,
  type SandboxPorts,
  startSandboxServers,
} from "./sandbox-servers.js";

const HELP = `Usage: npm run sandbox -- [options]

Runs the collector locally against simulated Entra ID, Key Vault, managed identity,
Defender API and Azurite, then starts \`func start\`. Ctrl-C stops everything.
Every option can also be set as an environment variable (shown in brackets).

Ports (all listen on 127.0.0.1 only; the sandbox refuses to start if one is taken):
  --entra-port <n>     Entra ID simulator (HTTPS)              [SANDBOX_ENTRA_PORT]     ${DEFAULT_PORTS.entra}
  --keyvault-port <n>  Key Vault simulator (HTTPS)             [SANDBOX_KEYVAULT_PORT]  ${DEFAULT_PORTS.keyVault}
  --defender-port <n>  Defender API simulator (HTTPS)          [SANDBOX_DEFENDER_PORT]  ${DEFAULT_PORTS.defender}
  --identity-port <n>  managed identity endpoint (HTTP)        [SANDBOX_IDENTITY_PORT]  ${DEFAULT_PORTS.identity}
  --azurite-port <n>   Azurite blob; queue = n+1, table = n+2  [SANDBOX_AZURITE_PORT]   ${DEFAULT_PORTS.azuriteBlob}
  --app-port <n>       func start (PUBLIC_BASE_URL)            [SANDBOX_APP_PORT]       ${DEFAULT_APP_PORT}

Simulation:
  --alerts <n>                 alerts per tenant at start                 [SANDBOX_ALERTS]                300
  --activity-minutes <m>       new/updated alerts every m minutes, 0=off  [SANDBOX_ACTIVITY_MINUTES]      2
  --revoke-after-minutes <m>   revoke Northwind's grant m minutes after   [SANDBOX_REVOKE_AFTER_MINUTES]  off
                               its admin consents (reconsent-required)
  --throttle                   every other Defender request of a pull     [SANDBOX_THROTTLE=1]            off
                               gets 429 with Retry-After: 2
  --rate-limit <n>             Defender requests per minute per tenant    [SANDBOX_RATE_LIMIT]            off
  --large-alert-mib <n>        add one alert of n MiB to Contoso          [SANDBOX_LARGE_ALERT_MIB]       off

Other:
  --no-func                    only the simulators; run func start yourself [SANDBOX_NO_FUNC=1]
  -h, --help
`;

interface Cli {
  options: SandboxOptions;
  ports: SandboxPorts;
  appPort: number;
  noFunc: boolean;
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
      "app-port": { type: "string" },
      alerts: { type: "string" },
      "activity-minutes": { type: "string" },
      "revoke-after-minutes": { type: "string" },
      throttle: { type: "boolean" },
      "rate-limit": { type: "string" },
      "large-alert-mib": { type: "string" },
      "no-func": { type: "boolean" },
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
  };
  const appPort = port("app-port", "SANDBOX_APP_PORT", DEFAULT_APP_PORT);
  const noFunc = flag("no-func", "SANDBOX_NO_FUNC");
  const options: SandboxOptions = {
    ports,
    appPort,
    alertsPerTenant: number("alerts", "SANDBOX_ALERTS", 0, 20_000) ?? 300,
    activityMinutes: number("activity-minutes", "SANDBOX_ACTIVITY_MINUTES", 0, 1440, false) ?? 2,
    throttle: flag("throttle", "SANDBOX_THROTTLE"),
  };
  const revoke = number("revoke-after-minutes", "SANDBOX_REVOKE_AFTER_MINUTES", 0, 1440, false);
  if (revoke !== undefined) options.revokeAfterMinutes = revoke;
  const rateLimit = number("rate-limit", "SANDBOX_RATE_LIMIT", 1, 10_000);
  if (rateLimit !== undefined) options.rateLimitPerMinute = rateLimit;
  const large = number("large-alert-mib", "SANDBOX_LARGE_ALERT_MIB", 0, 64, false);
  if (large !== undefined) options.largeAlertMiB = large;
  return { options, ports, appPort, noFunc };
}

class UsageError extends Error {}

/** The executable `func` on PATH, if any (func.cmd / func.exe on Windows). */
function findOnPath(command: string): string | undefined {
  const windows = process.platform === "win32";
  const exts = windows ? (process.env.PATHEXT ?? ".EXE;.CMD;.BAT").split(";").filter(Boolean) : [""];
  for (const dir of (process.env.PATH ?? process.env.Path ?? "").split(delimiter)) {
    if (!dir) continue;
    for (const ext of exts) {
      const candidate = join(dir, command + ext.toLowerCase());
      try {
        if (!statSync(candidate).isFile()) continue;
        if (!windows) accessSync(candidate, constants.X_OK);
        return candidate;
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

const INSTALL_HELP = `Azure Functions Core Tools v4 ("func") is not on PATH. Install them with one of:
  npm i -g azure-functions-core-tools@4 --unsafe-perm true
  macOS:   brew tap azure/functions && brew install azure-functions-core-tools@4
  Windows: winget install Microsoft.Azure.FunctionsCoreTools
  Linux:   the azure-functions-core-tools-4 package from Microsoft's apt/dnf repository
  (https://learn.microsoft.com/azure/azure-functions/functions-run-local)
The simulators keep running. In another terminal, from the repository root, run:  func start`;

function printSummary(sandbox: Sandbox, cli: Cli, willRunFunc: boolean): void {
  const p = sandbox.ports;
  const base = `http://localhost:${sandbox.appPort}`;
  const first = sandbox.tenants[0]!;
  const lines = [
    "",
    "MSSP Defender collector - local sandbox (everything in memory; a restart starts from scratch)",
    "",
    `  Entra ID simulator        ${sandbox.settings.ENTRA_AUTHORITY_HOST}`,
    `  Key Vault simulator       ${sandbox.settings.KEY_VAULT_URL}`,
    `  Defender API simulator    ${sandbox.settings.DEFENDER_API_BASE_URL}`,
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
    lines.push(`  ${t.name.padEnd(22)} ${t.id}${notes.length ? `  (${notes.join("; ")})` : ""}`);
    lines.push(`  ${"".padEnd(22)} users: ${t.users.map((u) => u.upn).join(", ")}`);
  }
  const activity = cli.options.activityMinutes ?? 2;
  lines.push(
    activity > 0
      ? `  Every ${activity} min each tenant gets 1-4 new alerts and 2-5 updated ones.`
      : "  Alert activity is off (--activity-minutes 0).",
  );
  if (cli.options.throttle) lines.push("  Throttling: every other Defender request of a pull gets 429 (Retry-After: 2).");
  if (cli.options.rateLimitPerMinute) lines.push(`  Rate limit: ${cli.options.rateLimitPerMinute} Defender requests per minute per tenant.`);
  lines.push(
    "",
    `TLS: the simulators use a local CA${sandbox.caCreated ? ", generated just now" : ""}: ${sandbox.caPath}`,
    "  The Functions worker trusts it through NODE_EXTRA_CA_CERTS in local.settings.json.",
    `  Your browser only visits the Entra consent page (${sandbox.settings.ENTRA_AUTHORITY_HOST}). Either click through`,
    '  the certificate warning (Chrome/Edge: "Advanced" > "Proceed to 127.0.0.1 (unsafe)"; Firefox: "Advanced..." >',
    '  "Accept the Risk and Continue"), or trust the CA (see docs/sandbox.md#trusting-the-ca for the risks), e.g.',
    `    ${trustCommand(sandbox.caPath)}`,
    "",
    "Next steps (func start does not check function keys locally):",
    "  1. Onboard a tenant:",
    `     curl -X POST ${base}/api/tenants -H 'content-type: application/json' -d '{"tenantId":"${first.id}"}'`,
    `  2. Open the "consentUrl" of the answer in a browser, pick a user and click Accept.`,
    `  3. See the tenants:     curl ${base}/api/tenants`,
    `  4. Pull now:            curl -X POST ${base}/api/tenants/${first.id}/pull   (the timer pulls every 5 min)`,
    `  5. Read the alerts:     curl '${base}/api/alerts?tenantId=${first.id}&top=10'`,
    "  The same requests for editor REST clients: dev/sandbox.http",
    "",
    willRunFunc ? "Starting func start... Ctrl-C stops it and the simulators." : "Ctrl-C stops the simulators.",
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

/**
 * The environment for func. Core Tools applies local.settings.json only to variables the
 * environment does not already have ("Skipping 'X' from local settings as it's already
 * defined"), so the shell's copies of our settings are removed, and so are the variables
 * that would make DefaultAzureCredential pick something other than the managed identity.
 */
function funcEnv(settings: Record<string, string>): NodeJS.ProcessEnv {
  const remove = new Set([...Object.keys(settings), ...INTERFERING_ENV].map((n) => normName(n)));
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (!remove.has(normName(name))) env[name] = value;
  // The worker runs `node` from PATH: make it this Node.
  const pathKey = Object.keys(env).find((k) => k.toUpperCase() === "PATH") ?? "PATH";
  env[pathKey] = `${dirname(process.execPath)}${delimiter}${env[pathKey] ?? ""}`;
  return env;
}

function normName(name: string): string {
  return process.platform === "win32" ? name.toUpperCase() : name;
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
  const funcPath = cli.noFunc ? undefined : findOnPath("func");
  const runFunc = funcPath !== undefined;

  let sandbox: Sandbox;
  try {
    sandbox = await startSandboxServers({ ...cli.options, root, checkAppPort: runFunc });
  } catch (err) {
    if (err instanceof PortInUseError) {
      console.error(`\nThe sandbox did not start:\n${err.message}`);
      console.error("Is another sandbox, Azurite (e.g. the VS Code extension) or func start still running?");
      process.exit(1);
    }
    throw err;
  }
  printSummary(sandbox, cli, runFunc);

  let func: ChildProcess | undefined;
  let stopping = false;
  const shutdown = async (signal: NodeJS.Signals | undefined, code: number) => {
    if (stopping) {
      // A second Ctrl-C: do not wait any longer.
      func?.kill("SIGKILL");
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
    console.log("[sandbox] stopping the simulators...");
    await sandbox.stop();
    console.log("[sandbox] stopped.");
    process.exit(code);
  };
  process.on("SIGINT", () => void shutdown("SIGINT", 130));
  process.on("SIGTERM", () => void shutdown("SIGTERM", 143));
  process.on("SIGHUP", () => void shutdown("SIGHUP", 129));

  if (!runFunc) {
    if (!cli.noFunc) console.log(`${INSTALL_HELP}\n`);
    else console.log("--no-func: run `func start` in another terminal, from the repository root.\n");
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

  const windows = process.platform === "win32";
  const args = ["start", "--port", String(sandbox.appPort)];
  func = spawn(windows ? `"${funcPath}"` : funcPath, args, {
    cwd: root,
    stdio: "inherit",
    env: funcEnv(sandbox.settings),
    shell: windows,
  });
  func.once("error", (err) => {
    console.error(`[sandbox] could not run ${funcPath}: ${err.message}\n${INSTALL_HELP}`);
  });
  func.once("exit", (code, signal) => {
    if (stopping) return;
    console.log(
      `\n[sandbox] func start exited (${signal ?? `code ${code}`}). The simulators keep running: run \`func start\` ` +
        "again (here after Ctrl-C and npm run sandbox, or in another terminal). Ctrl-C stops the simulators.",
    );
  });
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
