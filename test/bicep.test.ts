/**
 * Real validation of infra/: `bicep build` and `bicep lint` with the committed
 * bicepconfig.json (core analyzer on, every rule at its default level). Any error-level
 * diagnostic fails; warnings are printed. Without a Bicep CLI the compile and lint tests
 * skip with instructions, except under CI=true, where they fail.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { ROOT } from "../dev/package.js";
import { BICEP_INSTRUCTIONS, buildTemplate, type Diagnostic, findBicep, parseDiagnostics, runBicep } from "./support/bicep.js";
import { missingPrerequisite } from "./support/prerequisites.js";

const bicep = findBicep(ROOT);

function needBicep(t: TestContext): string | undefined {
  if (!bicep) missingPrerequisite(t, BICEP_INSTRUCTIONS);
  return bicep;
}

function report(t: TestContext, what: string, diagnostics: Diagnostic[]): void {
  for (const d of diagnostics.filter((x) => x.level !== "Error")) {
    const line = `${what}: ${relative(ROOT, d.file)}(${d.line},${d.column}) ${d.level} ${d.code}: ${d.message}`;
    t.diagnostic(line);
    console.log(line);
  }
}

const bicepFiles = readdirSync(join(ROOT, "infra"), { recursive: true, withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith(".bicep"))
  .map((e) => join(e.parentPath, e.name));

describe("bicep", () => {
  it("builds infra/main.bicep with no error-level diagnostic (warnings printed)", (t) => {
    const cli = needBicep(t);
    if (!cli) return;
    const { run, template } = buildTemplate(cli, ROOT, { fresh: true });
    t.diagnostic(`bicep: ${cli}`);
    report(t, "build", run.diagnostics);
    const errors = run.diagnostics.filter((d) => d.level === "Error");
    assert.deepEqual(errors, [], run.stderr);
    assert.equal(run.status, 0, run.stderr);
    assert.ok(template?.resources, "an ARM template came out");
  });

  it("lints infra/main.bicep with bicepconfig.json and finds no error (warnings printed)", (t) => {
    const cli = needBicep(t);
    if (!cli) return;
    const run = runBicep(cli, ["lint", "infra/main.bicep", "--no-restore"], ROOT);
    report(t, "lint", run.diagnostics);
    assert.deepEqual(
      run.diagnostics.filter((d) => d.level === "Error"),
      [],
      run.stderr,
    );
    assert.equal(run.status, 0, run.stderr || run.stdout);
  });

  it("lint really runs the core analyzer: an unused parameter is reported", (t) => {
    const cli = needBicep(t);
    if (!cli) return;
    // A scratch file beside a copy of the committed bicepconfig.json.
    const dir = mkdtempSync(join(tmpdir(), "bicep-lint-"));
    try {
      copyFileSync(join(ROOT, "bicepconfig.json"), join(dir, "bicepconfig.json"));
      writeFileSync(join(dir, "probe.bicep"), "param neverUsed string = 'x'\n");
      const run = runBicep(cli, ["lint", "probe.bicep", "--no-restore"], dir);
      assert.ok(
        run.diagnostics.some((d) => d.code === "no-unused-params" && d.level === "Warning"),
        `expected the no-unused-params warning, got: ${run.stderr}`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("bicepconfig.json turns the core analyzer on and leaves every rule at its default level", () => {
    const config = JSON.parse(readFileSync(join(ROOT, "bicepconfig.json"), "utf8")) as {
      analyzers?: { core?: { enabled?: boolean; rules?: Record<string, unknown> } };
      moduleAliases?: unknown;
      extensions?: unknown;
    };
    assert.equal(config.analyzers?.core?.enabled, true);
    assert.deepEqual(config.analyzers?.core?.rules ?? {}, {}, "no rule overrides");
    assert.equal(config.moduleAliases, undefined, "no registry aliases");
    assert.equal(config.extensions, undefined, "no extensions");
  });

  it("references no registry module or extension (CI cannot restore one)", () => {
    assert.ok(bicepFiles.length >= 8, `${bicepFiles.length} .bicep files`);
    for (const file of bicepFiles) {
      const text = readFileSync(file, "utf8");
      const where = relative(ROOT, file);
      assert.doesNotMatch(text, /^\s*module\s+\w+\s+'(br|ts)[:/]/m, `${where}: registry or template-spec module`);
      assert.doesNotMatch(text, /^\s*(extension|import)\s/m, `${where}: extension or import`);
      for (const m of text.matchAll(/^\s*module\s+\w+\s+'([^']+)'/gm)) {
        assert.match(m[1] ?? "", /^(\.\.?\/|modules\/)[\w./-]+\.bicep$/, `${where}: module path ${m[1]} is a local file`);
      }
    }
  });

  it("parses Bicep's diagnostic lines", () => {
    const sample = [
      "/r/infra/main.bicep(12,7) : Warning no-unused-params: Parameter \"x\" is declared but never used. [https://aka.ms/x]",
      "/r/infra/modules/app.bicep(3,1) : Error BCP018: Expected the \"=\" character at this location.",
      "Build succeeded.",
    ].join("\n");
    assert.deepEqual(
      parseDiagnostics(sample).map((d) => [d.level, d.code, d.line, d.column]),
      [
        ["Warning", "no-unused-params", 12, 7],
        ["Error", "BCP018", 3, 1],
      ],
    );
  });
});
