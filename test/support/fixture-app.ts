import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "../../simulators/https.js";

/**
 * A small Functions app written for a test: plain JavaScript files under a folder of the
 * repository's `.cache/` (so `@azure/functions` resolves from the repository's
 * node_modules), with its own package.json (`main`) and host.json.
 */
export interface FixtureApp {
  root: string;
  remove(): void;
}

export function writeFixtureApp(name: string, files: Record<string, string>): FixtureApp {
  const root = join(repoRoot(import.meta.url), ".cache", `fixture-${name}-${process.pid}`);
  rmSync(root, { recursive: true, force: true });
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, ".."), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return { root, remove: () => rmSync(root, { recursive: true, force: true }) };
}
