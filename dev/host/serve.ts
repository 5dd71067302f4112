/**
 * The dev host's worker process (started by dev/host/cli.ts, as `func start` starts the
 * Node.js worker): serves the app in `--root` on `--port` with the app settings of its
 * environment, prints its functions and the function key, and stops on Ctrl-C.
 */
import { parseArgs } from "node:util";
import { executeHooks, readOnly, worker } from "./core-module.js";
import { describeFunctions, READY_LINE } from "./banner.js";
import { startHost } from "./host.js";

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { port: { type: "string" }, root: { type: "string" } },
    strict: true,
  });
  const port = Number(values.port ?? 7071);
  const host = await startHost({ root: values.root ?? process.cwd(), port, settings: process.env });
  const base = `http://localhost:${host.port}`;
  const lines = [
    "",
    `Functions (${host.app.functions.length}), from ${host.app.entryPoints.length} file(s) of package.json main "${host.app.packageJson.main}":`,
    "",
    ...describeFunctions(host, base),
    "",
    `Function key (send it as the x-functions-key header or ?code=): ${host.key}`,
  ];
  if (host.streaming) lines.push("HTTP streaming is on (app.setup({ enableHttpStream: true })).");
  lines.push(`${READY_LINE} ${base} - Ctrl-C stops it.`, "");
  process.stdout.write(`${lines.join("\n")}\n`);

  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) process.exit(code);
    stopping = true;
    await host.stop();
    const terminate = {};
    readOnly(terminate, "hookData", {});
    readOnly(terminate, "appHookData", worker.appHookData);
    await executeHooks("appTerminate", terminate).catch(() => {});
    process.exit(code);
  };
  process.on("SIGINT", () => void stop(0));
  process.on("SIGTERM", () => void stop(0));
}

main().catch((err: unknown) => {
  const error = err instanceof Error ? err : new Error(String(err));
  const cause = error.cause instanceof Error ? `\n${error.cause.stack ?? error.cause.message}` : "";
  process.stderr.write(`The dev host did not start: ${error.message}${cause}\n`);
  process.exit(1);
});
