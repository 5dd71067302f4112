/**
 * `npm start`: runs the app with `func start` when Azure Functions Core Tools are on PATH,
 * exactly as before; otherwise says so in one line and runs it on the dev host (dev/host),
 * which reads local.settings.json the same way. Arguments after `--` go to either.
 */
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { findOnPath, NO_FUNC_LINE } from "./func-path.js";

const args = process.argv.slice(2);
const func = findOnPath("func");
let command: string;
let commandArgs: string[];
if (func) {
  command = func;
  commandArgs = ["start", ...args];
} else {
  console.log(NO_FUNC_LINE);
  command = process.execPath;
  commandArgs = [join(dirname(fileURLToPath(import.meta.url)), "host", "cli.js"), ...args];
}
const windows = process.platform === "win32";
const child = spawn(windows && func ? `"${command}"` : command, commandArgs, { stdio: "inherit", shell: windows && func !== undefined });
// Ctrl-C reaches the child through the terminal; other signals are passed on.
process.on("SIGINT", () => {});
process.on("SIGTERM", () => child.kill("SIGTERM"));
child.once("error", (err) => {
  console.error(`could not run ${command}: ${err.message}`);
  process.exit(1);
});
child.once("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
