/**
 * Child process of test/support/deploy-load.ts: loads every function file of a staged
 * package (`.deploy/`) the way the Functions host finds them (package.json "main" glob),
 * records each registration, and prints them as one JSON line.
 *
 * The package must stand alone, as it does in /home/site/wwwroot: a resolve hook refuses
 * any module that resolves outside the package folder (Node.js would otherwise find a
 * missing dependency in the repository's own node_modules, one folder up).
 *
 * Usage: node dist/test/support/deploy-child.js <package folder>
 */
import { readdirSync, readFileSync } from "node:fs";
import * as nodeModule from "node:module";
import { join, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { MARKER } from "./deploy-load.js";

const root = resolve(process.argv[2] ?? ".deploy");
const outside: string[] = [];

// module.registerHooks (Node.js 22.15+) sees both import and require. On an older Node.js
// the files still load, without the confinement (`isolated: false`).
const isolated = typeof nodeModule.registerHooks === "function";
nodeModule.registerHooks?.({
  resolve(specifier, context, nextResolve) {
    const result = nextResolve(specifier, context);
    if (result.url.startsWith("file:")) {
      const path = fileURLToPath(result.url);
      if (!path.startsWith(root + sep)) {
        // What wwwroot would answer: not found. Optional requires (debug tries
        // supports-color) catch this, as they do in Azure; required ones fail the file.
        outside.push(`${specifier} (from ${context.parentURL ?? "?"})`);
        throw Object.assign(new Error(`Cannot find module '${specifier}' inside the package (only at ${path})`), {
          code: "MODULE_NOT_FOUND",
        });
      }
    }
    return result;
  },
});

const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { main?: string };
const glob = /^(.+)\/\*\.js$/.exec(pkg.main ?? "");
if (!glob?.[1]) throw new Error(`package.json "main" must be "<folder>/*.js", not ${JSON.stringify(pkg.main)}`);
const functionsDir = join(root, glob[1]);

const require = nodeModule.createRequire(join(root, "package.json"));
const functions = require("@azure/functions") as { app: Record<string, unknown> };

interface Recorded {
  kind: string;
  name: string;
  options: Record<string, unknown>;
  file: string;
}
const recorded: Recorded[] = [];
let currentFile = "";
for (const kind of ["http", "timer", "storageQueue"]) {
  functions.app[kind] = (name: string, options: Record<string, unknown>) => {
    const { handler, ...rest } = options;
    recorded.push({ kind, name, options: { ...rest, handler: typeof handler }, file: currentFile });
  };
}

const files = readdirSync(functionsDir)
  .filter((f) => f.endsWith(".js"))
  .sort();
const failures: string[] = [];
for (const file of files) {
  currentFile = file;
  try {
    await import(pathToFileURL(join(functionsDir, file)).href);
  } catch (err) {
    failures.push(`${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

process.stdout.write(
  `${MARKER}${JSON.stringify({ node: process.version, isolated, files, registrations: recorded, failures, outside })}\n`,
);
