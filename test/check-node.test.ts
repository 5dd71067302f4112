import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { repoRoot } from "../simulators/https.js";

/** dev/check-node.cjs, which every npm script runs first. */
const ROOT = repoRoot(import.meta.url);
const SCRIPT = join(ROOT, "dev", "check-node.cjs");
const dir = mkdtempSync(join(tmpdir(), "check-node-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function check(version: string, engines?: string): { status: number | null; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, CHECK_NODE_VERSION: version };
  if (engines !== undefined) {
    const pkg = join(dir, `package-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(pkg, JSON.stringify({ engines: { node: engines } }));
    env.CHECK_NODE_PACKAGE = pkg;
  }
  const result = spawnSync(process.execPath, [SCRIPT], { env, encoding: "utf8" });
  return { status: result.status, stderr: result.stderr };
}

describe("Node.js version check", () => {
  it("fails with one line naming the version found and the version needed", () => {
    const engines = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { engines: { node: string } }).engines.node;
    const result = check("20.11.1");
    assert.equal(result.status, 1);
    const lines = result.stderr.trim().split("\n");
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0]!, /Node\.js 20\.11\.1/);
    assert.ok(lines[0]!.includes(`needs Node.js ${engines}`), lines[0]);
  });

  it("passes the versions package.json allows, silently", () => {
    for (const version of ["22.0.0", "22.12.1", "24.3.0", "v22.5.0"]) {
      const result = check(version);
      assert.equal(result.status, 0, `${version}: ${result.stderr}`);
      assert.equal(result.stderr, "");
    }
  });

  it("reads the usual engines ranges", () => {
    const cases: [string, string, boolean][] = [
      [">=22", "21.99.0", false],
      ["^20.9 || >=22.11 <23", "20.8.0", false],
      ["^20.9 || >=22.11 <23", "20.10.0", true],
      ["^20.9 || >=22.11 <23", "22.10.9", false],
      ["^20.9 || >=22.11 <23", "22.11.0", true],
      ["^20.9 || >=22.11 <23", "23.0.0", false],
      ["~22.4", "22.4.9", true],
      ["~22.4", "22.5.0", false],
      ["22.x", "22.1.0", true],
      ["22.x", "23.1.0", false],
      ["20 - 22", "22.9.0", true],
      ["20 - 22", "23.0.0", false],
      [">22", "22.9.0", false],
      [">22", "23.0.0", true],
    ];
    for (const [range, version, ok] of cases) assert.equal(check(version, range).status, ok ? 0 : 1, `${version} against ${range}`);
  });

  it("runs on an older Node.js itself, where there is one (the system's)", (t) => {
    const old = ["/usr/bin/node", "/usr/local/bin/node"].find((path) => {
      const v = spawnSync(path, ["--version"], { encoding: "utf8" });
      return v.status === 0 && Number(/^v(\d+)/.exec(v.stdout)?.[1]) < 22;
    });
    if (!old) return t.skip("no Node.js older than 22 on this machine");
    const version = spawnSync(old, ["--version"], { encoding: "utf8" }).stdout.trim().replace(/^v/, "");
    const env = { ...process.env };
    delete env.CHECK_NODE_VERSION;
    const result = spawnSync(old, [SCRIPT], { env, encoding: "utf8" });
    assert.equal(result.status, 1);
    assert.match(result.stderr, new RegExp(`this is Node\\.js ${version.replace(/\./g, "\\.")}:`));
  });

  it("is written so old Node.js versions can run it (ES5 CommonJS)", () => {
    const source = readFileSync(SCRIPT, "utf8").replace(/^\s*\/\/.*$/gm, "");
    for (const modern of [/=>/, /\bconst\b/, /\blet\b/, /`/, /\.\.\./, /\?\?/, /\?\./, /\bclass\b/, /\basync\b/, /\bimport\b/, /["']node:/]) {
      assert.doesNotMatch(source, modern, `uses ${modern}`);
    }
  });
});
