/**
 * `npm run package`: stages the deployment artifact in `.deploy/`, which azure.yaml's
 * `services.api.dist` makes azd zip as it is. The folder holds exactly what runs in Azure:
 *
 *   dist/functions/**.js, dist/shared/**.js   compiled app code (no tests, simulators, dev)
 *   dist/console/**                           the operator console's built files (dev/build-console.ts)
 *   package.json, package-lock.json, host.json
 *   node_modules/                             `npm ci --omit=dev`, then pruned (below)
 *
 * Pruning drops what Node.js never loads at run time: type declarations (*.d.ts), source
 * maps (*.map), Markdown (*.md, except licence and notice files) and dependencies' test
 * folders. The script prints the size and the file count; docs/deploy.md states them and
 * test/deploy-package.test.ts holds them under the budget (60 MB, 10,000 files).
 *
 * It expects a fresh build in dist/ (the npm script runs clean + build first). It is a dev
 * tool: dev/ is never deployed.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root (this file runs as dist/dev/package.js). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const DEPLOY_DIR = ".deploy";
/** Compiled folders that make up the app; everything else in dist/ stays behind. */
export const APP_DIRS = ["functions", "shared", "console"] as const;
/** What each app folder ships: compiled code, and for the console its static files. */
export const APP_FILES: Record<(typeof APP_DIRS)[number], RegExp> = {
  functions: /\.(js|mjs|cjs|json)$/,
  shared: /\.(js|mjs|cjs|json)$/,
  console: /\.(js|css|html|svg|txt)$/,
};
export const ROOT_FILES = ["package.json", "package-lock.json", "host.json"] as const;
export const BUDGET = { bytes: 60 * 1000 * 1000, files: 10_000 } as const;

/** Folder names inside dependencies that hold their tests. */
const TEST_DIRS = new Set(["test", "tests", "__tests__"]);
/** Markdown files kept anyway: licence terms travel with the code. */
const KEEP_MD = /^(licen[cs]e|notice|copying)([.-].*)?\.md$/i;

/** True for a file under node_modules that the staging step removes. */
export function isPrunedFile(name: string): boolean {
  const lower = name.toLowerCase();
  if (/\.d\.[cm]?ts$/.test(lower)) return true;
  if (lower.endsWith(".map")) return true;
  if (lower.endsWith(".md") && !KEEP_MD.test(name)) return true;
  return false;
}

/** True for a directory under node_modules that the staging step removes. */
export function isPrunedDir(name: string): boolean {
  return TEST_DIRS.has(name.toLowerCase());
}

export interface Tally {
  files: number;
  bytes: number;
}

/** Files and bytes under `dir` (bytes = file sizes, what a zip stores before compression). */
export function tally(dir: string): Tally {
  const total: Tally = { files: 0, bytes: 0 };
  if (!existsSync(dir)) return total;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    total.files++;
    total.bytes += statSync(join(entry.parentPath, entry.name)).size;
  }
  return total;
}

/** Copies the compiled JavaScript (and JSON) of dist/<dir> for each app folder, and the console's files. */
function copyCompiled(root: string, out: string): number {
  let copied = 0;
  for (const dir of APP_DIRS) {
    const from = join(root, "dist", dir);
    if (!existsSync(from)) throw new Error(`${relative(root, from)} is missing: run npm run build first`);
    for (const entry of readdirSync(from, { withFileTypes: true, recursive: true })) {
      if (!entry.isFile() || !APP_FILES[dir].test(entry.name) || entry.name.endsWith(".map")) continue;
      const source = join(entry.parentPath, entry.name);
      const target = join(out, relative(root, source));
      mkdirSync(dirname(target), { recursive: true });
      copyFileSync(source, target);
      copied++;
    }
  }
  return copied;
}

/** Removes pruned files and folders under `dir`; returns what was removed. */
export function prune(dir: string): Tally {
  const removed: Tally = { files: 0, bytes: 0 };
  const walk = (current: string, depth: number) => {
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) {
        // depth 0 is node_modules itself (package names like "test" stay); below it, test folders go.
        if (depth > 0 && isPrunedDir(entry.name) && !isPackageRoot(path)) {
          const gone = tally(path);
          rmSync(path, { recursive: true, force: true });
          removed.files += gone.files;
          removed.bytes += gone.bytes;
        } else {
          walk(path, depth + 1);
        }
      } else if (entry.isFile() && isPrunedFile(entry.name)) {
        removed.files++;
        removed.bytes += statSync(path).size;
        rmSync(path);
      }
    }
  };
  if (existsSync(dir)) walk(dir, 0);
  return removed;
}

/** A folder that is itself an installed package (node_modules/<name> or node_modules/@scope/<name>). */
function isPackageRoot(path: string): boolean {
  const parts = path.split(sep);
  const parent = parts[parts.length - 2] ?? "";
  const grandParent = parts[parts.length - 3] ?? "";
  return parent === "node_modules" || (parent.startsWith("@") && grandParent === "node_modules");
}

/** Runs npm with the same npm that runs this script when there is one. */
function npm(args: string[], cwd: string): void {
  const npmCli = process.env.npm_execpath;
  const result = npmCli
    ? spawnSync(process.execPath, [npmCli, ...args], { cwd, stdio: "inherit" })
    : spawnSync("npm", args, { cwd, stdio: "inherit", shell: process.platform === "win32" });
  if (result.status !== 0) throw new Error(`npm ${args.join(" ")} failed in ${cwd} (exit ${result.status ?? result.signal})`);
}

const mb = (bytes: number) => `${(bytes / 1_000_000).toFixed(1)} MB`;

export function stage(root: string = ROOT): Tally {
  const out = join(root, DEPLOY_DIR);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const compiled = copyCompiled(root, out);
  for (const file of ROOT_FILES) copyFileSync(join(root, file), join(out, file));
  npm(["ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"], out);
  const installed = tally(join(out, "node_modules"));
  const removed = prune(join(out, "node_modules"));
  const total = tally(out);
  const app = tally(join(out, "dist"));
  console.log(`package: ${relative(process.cwd(), out) || out}`);
  console.log(`  compiled app files: ${compiled} (${mb(app.bytes)})`);
  console.log(`  production node_modules: ${installed.files} files, ${mb(installed.bytes)} installed; pruned ${removed.files} files, ${mb(removed.bytes)}`);
  console.log(`  total: ${total.files} files, ${mb(total.bytes)} (budget ${BUDGET.files} files, ${mb(BUDGET.bytes)})`);
  if (total.files > BUDGET.files || total.bytes > BUDGET.bytes) {
    console.warn("  warning: over the budget; see docs/deploy.md, section Package");
  }
  return total;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    stage();
  } catch (err) {
    console.error(`package: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
