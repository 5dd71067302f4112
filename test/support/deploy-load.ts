/**
 * Loads a staged package (`.deploy/`, from `npm run package`) with the dev host's loader in
 * a separate Node.js process, with the package's module resolution confined to the package
 * folder, and returns what it registered (in the shape test/support/functions.ts gives).
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

export const MARKER = "DEPLOY-REGISTRATIONS ";

export interface DeployedRegistration {
  kind: string;
  name: string;
  /** Registration options; `handler` is replaced by its typeof. */
  options: Record<string, unknown>;
}

export interface DeployedLoad {
  /** process.version of the child. */
  node: string;
  /** Whether resolution was confined to the package (needs Node.js 22.15+). */
  isolated: boolean;
  /** Function files found through package.json "main". */
  files: string[];
  registrations: DeployedRegistration[];
  /** Files whose import threw, with the message. */
  failures: string[];
  /** Modules that would only resolve outside the package folder (refused as not found). */
  outside: string[];
}

const CHILD = join(dirname(fileURLToPath(import.meta.url)), "deploy-child.js");

export function loadDeployedFunctions(packageDir: string, nodeBinary = process.execPath): Promise<DeployedLoad> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(nodeBinary, [CHILD, packageDir], {
      cwd: packageDir,
      stdio: ["ignore", "pipe", "pipe"],
      // Only what the host would give: no NODE_OPTIONS or test settings leak in.
      env: { PATH: process.env.PATH ?? "", ...(process.env.SYSTEMROOT ? { SYSTEMROOT: process.env.SYSTEMROOT } : {}) },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8");
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const line = stdout.split("\n").find((l) => l.startsWith(MARKER));
      if (code !== 0 || !line) {
        reject(new Error(`loading ${packageDir} failed (exit ${code}):\n${stderr || stdout}`));
        return;
      }
      resolvePromise(JSON.parse(line.slice(MARKER.length)) as DeployedLoad);
    });
  });
}

/**
 * Compiled files of dist/<dir> that differ from, or are missing in, the package (and
 * package files with no source): a non-empty list means `.deploy/` is older than the build.
 */
export function staleFiles(root: string, packageDir: string, dirs: readonly string[]): string[] {
  const list = (base: string) => {
    const found = new Map<string, string>();
    for (const dir of dirs) {
      const from = join(base, "dist", dir);
      if (!existsSync(from)) continue;
      for (const entry of readdirSync(from, { withFileTypes: true, recursive: true })) {
        if (!entry.isFile() || !entry.name.endsWith(".js")) continue;
        const path = join(entry.parentPath, entry.name);
        found.set(relative(base, path), readFileSync(path, "utf8"));
      }
    }
    return found;
  };
  const built = list(root);
  const packaged = list(packageDir);
  const stale: string[] = [];
  for (const [path, text] of built) if (packaged.get(path) !== text) stale.push(path);
  for (const path of packaged.keys()) if (!built.has(path)) stale.push(path);
  return stale.sort();
}
