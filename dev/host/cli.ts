/**
 * `node dist/dev/host/cli.js [--port <n>] [--root <dir>]`: runs a Functions app without
 * Azure Functions Core Tools, the way `func start` does. It reads local.settings.json
 * (`Values` become environment variables unless the environment already has them, as in
 * Core Tools; `Host.LocalHttpPort` is the default port), then starts the worker process,
 * dev/host/serve.ts, with `languageWorkers__node__arguments` as its Node.js arguments, so
 * NODE_EXTRA_CA_CERTS and `--require` preloads are in place when it starts. Ctrl-C stops it.
 */
import { spawn } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { readLocalSettings, splitArgs, workerEnv } from "./local-settings.js";

const HELP = `Usage: node dist/dev/host/cli.js [--port <n>] [--root <dir>] [--settings <file>]

Runs the Functions app in <dir> (default: the current directory) on a local stand-in for
the Azure Functions host, for machines without Azure Functions Core Tools. It reads
local.settings.json like func start and listens on http://localhost:<n> (default: its
Host.LocalHttpPort, else 7071). --settings reads another file than
<dir>/local.settings.json. Function-level routes need the key it prints (DEV_FUNCTION_KEY
of the settings, else a new one), as the x-functions-key header or ?code=.
See docs/sandbox.md#the-dev-host.
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      port: { type: "string" },
      root: { type: "string" },
      settings: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const root = resolve(values.root ?? process.cwd());
  const local = readLocalSettings(values.settings ? resolve(values.settings) : join(root, "local.settings.json"));
  const port = values.port !== undefined ? Number(values.port) : (local.port ?? 7071);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be a port number, got "${values.port}"`);
  const { env, skipped } = workerEnv(process.env, local.values);
  for (const name of skipped) {
    console.log(`Skipping '${name}' from local settings as it's already defined in current environment variables.`);
  }
  const serve = join(dirname(fileURLToPath(import.meta.url)), "serve.js");
  const child = spawn(
    process.execPath,
    [...splitArgs(env.languageWorkers__node__arguments), serve, "--port", String(port), "--root", root],
    { cwd: root, env, stdio: "inherit" },
  );
  // Ctrl-C reaches the worker through the terminal; other signals are passed on.
  process.on("SIGINT", () => {});
  process.on("SIGTERM", () => child.kill("SIGTERM"));
  process.on("SIGHUP", () => child.kill("SIGTERM"));
  child.once("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  console.error(HELP);
  process.exit(2);
});
