/**
 * Node.js versions. Flex Consumption takes only a major version (`runtime.version` "22" in
 * infra/modules/app.bicep) and Microsoft publishes no minimum patch release for it, so the
 * app must run on every Node.js 22 release: package.json `engines.node` names the lowest
 * version the app and every production dependency accept, and that must be 22.0.0 or
 * close to it. A dependency whose own `engines` excludes it (undici 8 needs 22.19) would
 * throw at import on an older platform image, and no function would register.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import semver from "semver";
import { ROOT } from "../dev/package.js";

interface LockPackage {
  version?: string;
  dev?: boolean;
  engines?: { node?: string } | string[];
}

const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { engines?: { node?: string } };
const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, LockPackage> };

/** Production packages of the lock file whose `engines.node` does not admit `version`. */
export function enginesExcluding(packages: Record<string, LockPackage>, version: string): string[] {
  const problems: string[] = [];
  for (const [path, entry] of Object.entries(packages)) {
    if (path === "" || entry.dev === true) continue;
    const range = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
    if (!range) continue;
    if (!semver.satisfies(version, range, { includePrerelease: true }))
      problems.push(`${path.replace(/^.*node_modules\//, "")}@${entry.version} needs node ${range}`);
  }
  return problems;
}

describe("Node.js engines", () => {
  const range = pkg.engines?.node ?? "";
  const minimum = semver.minVersion(range)?.version ?? "";

  it("package.json engines.node is a range starting in Node.js 22", () => {
    assert.ok(semver.validRange(range), `engines.node ${JSON.stringify(range)} is a semver range`);
    assert.equal(semver.major(minimum), 22, `the minimum ${minimum} is a Node.js 22 release`);
    assert.ok(semver.satisfies("24.0.0", range), "Node.js 24 (the other runtime the template allows) is admitted");
    assert.ok(!semver.satisfies("20.19.0", range), "Node.js 20 is not");
  });

  it("every production dependency admits that minimum, so engines.node is the true minimum", () => {
    const production = Object.entries(lock.packages).filter(([path, e]) => path !== "" && e.dev !== true);
    assert.ok(production.length > 20, `${production.length} production packages in the lock file`);
    assert.deepEqual(enginesExcluding(lock.packages, minimum), []);
  });

  it("the check notices a dependency that needs a later Node.js 22 (undici 8 needs 22.19)", () => {
    const undici = Object.keys(lock.packages).find((p) => p === "node_modules/undici");
    assert.ok(undici, "undici is locked");
    const withUndici8 = { ...lock.packages, [undici]: { version: "8.13.1", engines: { node: ">=22.19.0" } } };
    assert.deepEqual(enginesExcluding(withUndici8, minimum), ["undici@8.13.1 needs node >=22.19.0"]);
    const asDev = { ...withUndici8, [undici]: { version: "8.13.1", dev: true, engines: { node: ">=22.19.0" } } };
    assert.deepEqual(enginesExcluding(asDev, minimum), [], "dev dependencies do not ship");
  });

  it("the Node.js running the tests is admitted", () => {
    assert.ok(semver.satisfies(process.versions.node, range), `${process.version} satisfies ${range}`);
  });
});
