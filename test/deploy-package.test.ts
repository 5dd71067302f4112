/**
 * The deployment artifact: `npm run package` stages `.deploy/` and azd zips exactly that
 * folder (azure.yaml `services.api.dist`). These tests check the staged folder itself:
 * what it holds, its size, and that every function loads from it with nothing but its own
 * node_modules. `.ci/run` stages it before `npm test`; elsewhere a missing or outdated
 * `.deploy/` skips these tests with instructions (and fails them under CI=true).
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { APP_DIRS, APP_FILES, BUDGET, DEPLOY_DIR, isPrunedDir, isPrunedFile, ROOT, ROOT_FILES, tally } from "../dev/package.js";
import { loadDeployedFunctions, staleFiles } from "./support/deploy-load.js";
import { loadFunctions } from "./support/functions.js";
import { missingPrerequisite } from "./support/prerequisites.js";

const deployDir = join(ROOT, DEPLOY_DIR);

/** The staged package, or a skip (failure under CI) saying how to make it. */
function stagedPackage(t: TestContext): string | undefined {
  if (!existsSync(join(deployDir, "package.json"))) {
    missingPrerequisite(t, "no staged package in .deploy/: run `npm run package` first (.ci/run does)");
    return undefined;
  }
  const stale = staleFiles(ROOT, deployDir, APP_DIRS);
  if (stale.length > 0) {
    missingPrerequisite(t, `.deploy/ is older than the build (${stale.slice(0, 3).join(", ")}...): run \`npm run package\` again`);
    return undefined;
  }
  return deployDir;
}

/** Every file under `dir`, relative, with forward slashes. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1).split("\\").join("/"));
}

describe("npm run package: pruning rules", () => {
  it("drops type declarations, source maps and Markdown, but keeps licence files and code", () => {
    for (const name of ["index.d.ts", "x.d.mts", "x.d.cts", "index.js.map", "README.md", "CHANGELOG.md", "docs.MD"]) {
      assert.equal(isPrunedFile(name), true, name);
    }
    for (const name of ["index.js", "index.mjs", "index.cjs", "package.json", "LICENSE.md", "license.md", "NOTICE.md", "LICENSE", "types.ts.js", "map.js"]) {
      assert.equal(isPrunedFile(name), false, name);
    }
  });

  it("drops dependencies' test folders", () => {
    for (const name of ["test", "tests", "__tests__", "Test"]) assert.equal(isPrunedDir(name), true, name);
    for (const name of ["dist", "lib", "testing", "src"]) assert.equal(isPrunedDir(name), false, name);
  });
});

describe("npm run package: the staged .deploy/ folder", () => {
  it("holds the compiled app, package.json, package-lock.json, host.json and node_modules only", (t) => {
    const dir = stagedPackage(t);
    if (!dir) return;
    assert.deepEqual(readdirSync(dir).sort(), ["dist", "host.json", "node_modules", "package-lock.json", "package.json"]);
    assert.deepEqual(readdirSync(join(dir, "dist")).sort(), [...APP_DIRS].sort());
    for (const file of ROOT_FILES) {
      assert.equal(readFileSync(join(dir, file), "utf8"), readFileSync(join(ROOT, file), "utf8"), `${file} is the repository's`);
    }
    const appFiles = filesUnder(join(dir, "dist"));
    assert.ok(appFiles.length > 0);
    for (const file of appFiles) {
      const folder = file.split("/")[0] as (typeof APP_DIRS)[number];
      assert.match(file, folder === "console" ? APP_FILES.console : /\.(js|json)$/, `dist/${file}: compiled JavaScript (and the console's static files) only`);
    }
    // The console's page and its hashed script and style sheet, exactly as built.
    const consoleFiles = filesUnder(join(dir, "dist", "console")).sort();
    assert.deepEqual(consoleFiles, filesUnder(join(ROOT, "dist", "console")).sort());
    assert.ok(consoleFiles.includes("index.html") && consoleFiles.some((f) => /^assets\/app-[A-Z0-9]+\.js$/.test(f)));
  });

  it("has no dev dependency, type declaration, source map or Markdown (other than licences) in node_modules", (t) => {
    const dir = stagedPackage(t);
    if (!dir) return;
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, { dev?: boolean }>;
    };
    const installed = readdirSync(join(dir, "node_modules"), { withFileTypes: true, recursive: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(e.parentPath, e.name).slice(dir.length + 1).split("\\").join("/"))
      .filter((p) => /(^|\/)node_modules\/(@[^/]+\/)?[^/@]+$/.test(p) && existsSync(join(dir, p, "package.json")));
    assert.ok(installed.length > 10, "production dependencies are installed");
    for (const path of installed) {
      const entry = lock.packages[path];
      assert.ok(entry, `${path} is in package-lock.json`);
      assert.notEqual(entry.dev, true, `${path} is a dev dependency`);
    }
    for (const devOnly of ["typescript", "azurite", "@biomejs/biome", "@types/node", "playwright-core"]) {
      assert.equal(existsSync(join(dir, "node_modules", devOnly)), false, `${devOnly} is not shipped`);
    }
    const leftovers = filesUnder(join(dir, "node_modules")).filter((f) => isPrunedFile(f.split("/").pop() ?? ""));
    assert.deepEqual(leftovers.slice(0, 5), [], "pruned file types");
  });

  it(`stays under ${BUDGET.files.toLocaleString("en-US")} files and ${BUDGET.bytes / 1e6} MB, and docs/deploy.md states the figures`, (t) => {
    const dir = stagedPackage(t);
    if (!dir) return;
    const total = tally(dir);
    t.diagnostic(`.deploy/: ${total.files} files, ${(total.bytes / 1e6).toFixed(1)} MB`);
    assert.ok(total.files < BUDGET.files, `${total.files} files`);
    assert.ok(total.bytes < BUDGET.bytes, `${total.bytes} bytes`);
    const doc = readFileSync(join(ROOT, "docs", "deploy.md"), "utf8");
    const stated = /\*\*([\d,]+) files, ([\d.]+) MB\*\*/.exec(doc);
    assert.ok(stated, "docs/deploy.md states the package as **<n> files, <x> MB**");
    const files = Number((stated[1] ?? "").replace(/,/g, ""));
    const mb = Number(stated[2]);
    const near = (a: number, b: number) => Math.abs(a - b) / b <= 0.25;
    assert.ok(near(files, total.files), `docs say ${files} files, the package has ${total.files}: update docs/deploy.md`);
    assert.ok(near(mb, total.bytes / 1e6), `docs say ${mb} MB, the package has ${(total.bytes / 1e6).toFixed(1)} MB: update docs/deploy.md`);
  });

  it("loads every function from .deploy/ alone, registering what the build registers", async (t) => {
    const dir = stagedPackage(t);
    if (!dir) return;
    const deployed = await loadDeployedFunctions(dir);
    assert.equal(deployed.isolated, true, "module resolution confined to .deploy/ (Node.js 22.15+ runs the tests)");
    // A dependency missing from .deploy/ fails its function file here (the hook refuses to
    // find it in the repository's node_modules); optional lookups are only reported.
    for (const lookup of deployed.outside) t.diagnostic(`not in .deploy/ (optional lookup, refused): ${lookup}`);
    assert.deepEqual(deployed.failures, [], "every function file loads");
    assert.deepEqual(
      deployed.files,
      readdirSync(join(ROOT, "dist", "functions"))
        .filter((f) => f.endsWith(".js"))
        .sort(),
    );
    const fromBuild = [...(await loadFunctions()).values()]
      .map(({ kind, name, options }) => {
        const { handler, ...rest } = options;
        return { kind, name, options: JSON.parse(JSON.stringify({ ...rest, handler: typeof handler })) as unknown };
      })
      .sort((a, b) => a.name.localeCompare(b.name));
    const fromPackage = deployed.registrations
      .map(({ kind, name, options }) => ({ kind, name, options: options as unknown }))
      .sort((a, b) => a.name.localeCompare(b.name));
    assert.ok(fromPackage.length >= 12, `${fromPackage.length} functions`);
    assert.deepEqual(fromPackage, fromBuild);
    for (const r of deployed.registrations) assert.equal(r.options.handler, "function", `${r.name} has a handler`);
  });
});
