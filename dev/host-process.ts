/**
 * Starts the dev host command (dev/host/cli.ts) as a child process, the way the sandbox
 * starts `func start`: from the repository root, with the sandbox's local.settings.json.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { READY_LINE } from "./host/banner.js";

export interface DevHostProcess {
  child: ChildProcess;
  /** Resolves once the host listens; rejects when it exits first (only with `pipe`). */
  ready: Promise<void>;
  /** Everything it printed so far (only with `pipe`). */
  output: string[];
  /** Stops it (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. */
  stop(): Promise<void>;
}

export interface DevHostSpawnOptions {
  root: string;
  port: number;
  /** local.settings.json to read (default `<root>/local.settings.json`). */
  settingsPath?: string;
  env: NodeJS.ProcessEnv;
  /** `inherit` shares this terminal; `pipe` collects the output (and calls onLine). */
  stdio: "inherit" | "pipe";
  onLine?: (line: string) => void;
}

export function spawnDevHost(options: DevHostSpawnOptions): DevHostProcess {
  const cli = join(dirname(fileURLToPath(import.meta.url)), "host", "cli.js");
  const args = [cli, "--port", String(options.port), "--root", options.root];
  if (options.settingsPath) args.push("--settings", options.settingsPath);
  const child = spawn(process.execPath, args, { cwd: options.root, env: options.env, stdio: ["ignore", options.stdio, options.stdio] });
  const output: string[] = [];
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let ready: Promise<void> = Promise.resolve();
  if (options.stdio === "pipe") {
    ready = new Promise<void>((resolve, reject) => {
      let pending = "";
      const onData = (chunk: Buffer) => {
        pending += chunk.toString("utf8");
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) {
          output.push(line);
          options.onLine?.(line);
          if (line.includes(READY_LINE)) resolve();
        }
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
      child.once("exit", (code, signal) =>
        reject(new Error(`the dev host exited (${signal ?? `code ${code}`}) before it was ready:\n${output.slice(-20).join("\n")}`)),
      );
    });
    ready.catch(() => {});
  }
  return {
    child,
    ready,
    output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const kill = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(kill);
    },
  };
}

/**
 * The environment for a host process (func start or the dev host) that should read the
 * sandbox's local.settings.json: Core Tools keeps environment variables over that file
 * ("Skipping 'X' from local settings as it's already defined"), so the shell's copies of
 * the settings are removed, and so are the variables that would make DefaultAzureCredential
 * pick something other than the simulated managed identity. The worker runs `node` from
 * PATH: this Node comes first.
 */
export function hostProcessEnv(settings: Record<string, string>, interfering: readonly string[], env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const norm = (name: string) => (process.platform === "win32" ? name.toUpperCase() : name);
  const remove = new Set([...Object.keys(settings), ...interfering].map(norm));
  const out: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(env)) if (!remove.has(norm(name))) out[name] = value;
  const pathKey = Object.keys(out).find((k) => k.toUpperCase() === "PATH") ?? "PATH";
  out[pathKey] = `${dirname(process.execPath)}${delimiter}${out[pathKey] ?? ""}`;
  return out;
}
