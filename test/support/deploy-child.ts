/**
 * Child process of test/support/deploy-load.ts: loads a staged package (`.deploy/`) with
 * the dev host's loader (dev/host/load.ts), which finds the function files through
 * package.json "main" and registers them through the package's own `@azure/functions`, as
 * the Node.js worker does, and prints what was registered as one JSON line.
 *
 * The package must stand alone, as it does in /home/site/wwwroot: a resolve hook refuses
 * any module that a file of the package resolves outside the package folder (Node.js would
 * otherwise find a missing dependency in the repository's own node_modules, one folder up).
 * The loader itself lives outside the package and resolves its own modules freely.
 *
 * Usage: node dist/test/support/deploy-child.js <package folder>
 */
import { basename, resolve, sep } from "node:path";
import * as nodeModule from "node:module";
import { fileURLToPath } from "node:url";
import { MARKER } from "./deploy-load.js";

const root = resolve(process.argv[2] ?? ".deploy");
const outside: string[] = [];
const inPackage = (url: string | undefined) => Boolean(url?.startsWith("file:") && fileURLToPath(url).startsWith(root + sep));

// module.registerHooks (Node.js 22.15+) sees both import and require. On an older Node.js
// the files still load, without the confinement (`isolated: false`).
const isolated = typeof nodeModule.registerHooks === "function";
nodeModule.registerHooks?.({
  resolve(specifier, context, nextResolve) {
    const result = nextResolve(specifier, context);
    if (inPackage(context.parentURL) && result.url.startsWith("file:") && !inPackage(result.url)) {
      // What wwwroot would answer: not found. Optional requires (debug tries
      // supports-color) catch this, as they do in Azure; required ones fail the file.
      outside.push(`${specifier} (from ${context.parentURL ?? "?"})`);
      throw Object.assign(new Error(`Cannot find module '${specifier}' inside the package (only at ${fileURLToPath(result.url)})`), {
        code: "MODULE_NOT_FOUND",
      });
    }
    return result;
  },
});

const KINDS = { http: "http", timer: "timer", queue: "storageQueue" } as const;
const { loadApp } = await import("../../dev/host/load.js");
const failures: string[] = [];
let files: string[] = [];
let registrations: { kind: string; name: string; options: Record<string, unknown> }[] = [];
try {
  const app = await loadApp(root);
  files = app.entryPoints.map((f) => basename(f)).sort();
  registrations = app.functions.map((fn) => ({
    kind: fn.kind ? KINDS[fn.kind] : `unsupported:${fn.trigger.type}`,
    name: fn.name,
    options: { ...fn.trigger, handler: typeof fn.callback },
  }));
} catch (err) {
  failures.push(err instanceof Error ? err.message : String(err));
}

process.stdout.write(
  `${MARKER}${JSON.stringify({ node: process.version, isolated, files, registrations, failures, outside })}\n`,
);
