import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { repoRoot } from "../simulators/https.js";
import { type Harness, startHarness } from "./support/harness.js";
import { messageOf, RULE_LINE } from "./support/leaks.js";
import { CAPTURE_DIR } from "./support/test-files.js";

/**
 * The Azure Monitor alert rules (infra/modules/alerts.bicep) against the log lines the app
 * really writes. The lines are the ones every other test file captured (the harness saves
 * every pull.*, sweep.*, tenant.status and tenant.state line into .cache/test-logs; the
 * runner runs this file last) plus the ones this file produces itself, so it also works
 * alone: a consent, a pull, a revoked grant, a failing tenant, an offboarding.
 *
 * The rules' patterns are read from the Bicep file: every KQL string with `traces`, its
 * `message startswith "..."` and `message has "..."` filters, its
 * `x = extract(@"...", 1, message)` columns and the values it compares them with.
 */

interface Rule {
  query: string;
  prefixes: string[];
  terms: string[];
  extracts: Map<string, RegExp>;
  /** Values compared with an extracted column: `status == "active"`, `status in ("a", "b")`. */
  values: Map<string, string[]>;
  /** Columns the rule needs: `isnotempty(tenantId)`. */
  required: string[];
}

/** A KQL string literal's text: @"..." (verbatim, "" escapes), "..." or '...' (backslash escapes). */
function kqlString(literal: string): string {
  if (literal.startsWith("@")) return literal.slice(2, -1).replace(/""/g, '"');
  const quote = literal[0]!;
  return literal.slice(1, -1).replace(/\\(.)/g, (_, c: string) => (c === quote || c === "\\" ? c : `\\${c}`));
}

const STRING = String.raw`(@"(?:[^"]|"")*"|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')`;

export function parseRules(bicep: string): Rule[] {
  const rules: Rule[] = [];
  for (const [, query] of bicep.matchAll(/'''([\s\S]*?)'''/g)) {
    if (!query || !/\btraces\b/.test(query)) continue;
    const rule: Rule = { query, prefixes: [], terms: [], extracts: new Map(), values: new Map(), required: [] };
    for (const m of query.matchAll(new RegExp(String.raw`\bmessage\s+startswith(?:_cs)?\s+${STRING}`, "g"))) rule.prefixes.push(kqlString(m[1]!));
    for (const m of query.matchAll(new RegExp(String.raw`\bmessage\s+has(?:_cs)?\s+${STRING}`, "g"))) rule.terms.push(kqlString(m[1]!));
    for (const m of query.matchAll(new RegExp(String.raw`(\w+)\s*=\s*extract\(\s*${STRING}\s*,\s*1\s*,\s*message\s*\)`, "g"))) {
      rule.extracts.set(m[1]!, new RegExp(kqlString(m[2]!)));
    }
    for (const column of rule.extracts.keys()) {
      const values: string[] = [];
      for (const m of query.matchAll(new RegExp(String.raw`\b${column}\s*==\s*${STRING}`, "g"))) values.push(kqlString(m[1]!));
      for (const m of query.matchAll(new RegExp(String.raw`\b${column}\s+in\s*\(([^)]*)\)`, "g"))) {
        for (const s of m[1]!.matchAll(new RegExp(STRING, "g"))) values.push(kqlString(s[1]!));
      }
      if (values.length > 0) rule.values.set(column, values);
      if (new RegExp(String.raw`isnotempty\(\s*${column}\s*\)`).test(query)) rule.required.push(column);
    }
    // Rules over app-level lines (app.credential.*) are checked by test/infra.test.ts.
    if (![...rule.prefixes, ...rule.terms].some((p) => RULE_LINE.test(p))) continue;
    rules.push(rule);
  }
  return rules;
}

/** `key=value` pairs of a log line, as the app writes them. */
function fields(line: string): Map<string, string> {
  return new Map([...line.matchAll(/(?:^|\s)(\w+)=(\S*)/g)].map((m) => [m[1]!, m[2]!]));
}

function selects(rule: Rule, line: string): boolean {
  return rule.prefixes.some((p) => line.startsWith(p)) || rule.terms.some((t) => new RegExp(`(^|\\W)${escapeRegExp(t)}($|\\W)`).test(line));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Problems of the rules with these lines; empty when every line is read right and every pattern is exercised. */
export function checkRules(rules: Rule[], lines: string[]): string[] {
  const problems: string[] = [];
  for (const line of lines) {
    const selecting = rules.filter((r) => selects(r, line));
    if (selecting.length === 0) {
      problems.push(`no alert rule reads: ${line}`);
      continue;
    }
    const own = fields(line);
    for (const rule of selecting) {
      for (const [column, pattern] of rule.extracts) {
        const captured = pattern.exec(line)?.[1] ?? "";
        const written = own.get(column);
        if (written !== undefined && captured !== written) {
          problems.push(`extract(${pattern.source}) gives "${captured}" for ${column}=${written} in: ${line}`);
        }
        // A line a rule singles out by name (not just its family, "pull.") must carry every column the rule needs.
        const singledOut = rule.prefixes.some((p) => line.startsWith(p) && !p.endsWith("."));
        if (singledOut && rule.required.includes(column) && captured === "") {
          problems.push(`the rule needs ${column} but cannot extract it from: ${line}`);
        }
      }
    }
  }
  // Every specific pattern of the rules is exercised by some real line.
  for (const rule of rules) {
    for (const prefix of rule.prefixes) {
      if (!lines.some((l) => l.startsWith(prefix))) problems.push(`no log line starts with "${prefix}"`);
    }
    for (const term of rule.terms) if (!lines.some((l) => l.includes(term))) problems.push(`no log line has "${term}"`);
    for (const [column, values] of rule.values) {
      const pattern = rule.extracts.get(column)!;
      for (const value of values) {
        if (!lines.some((l) => selects(rule, l) && pattern.exec(l)?.[1] === value)) {
          problems.push(`no log line gives ${column} == "${value}"`);
        }
      }
    }
  }
  return [...new Set(problems)];
}

function capturedElsewhere(): string[] {
  if (!existsSync(CAPTURE_DIR)) return [];
  return readdirSync(CAPTURE_DIR).flatMap((file) => readFileSync(join(CAPTURE_DIR, file), "utf8").split("\n").filter(Boolean));
}

let h: Harness;
const bicep = readFileSync(join(repoRoot(), "infra/modules/alerts.bicep"), "utf8");

before(async () => {
  h = await startHarness({ PULL_LAG_SECONDS: "0" });
});
after(async () => {
  await h?.stop();
});

describe("alert rules vs the app's real log lines", () => {
  it("reads the rules' patterns from infra/modules/alerts.bicep", () => {
    const rules = parseRules(bicep);
    assert.ok(rules.length >= 3, "the reconsent, stale-pull and sweep rules");
    for (const rule of rules) {
      assert.ok(rule.prefixes.length + rule.terms.length > 0, `a rule selects its lines: ${rule.query.slice(0, 80)}`);
      assert.ok(rule.extracts.has("tenantId"), "every rule splits by tenant");
    }
  });

  it("every pull.*, sweep.*, tenant.status and tenant.state line of the test runs is read right by the rules", async () => {
    // This file's own scenarios: every kind of line the rules single out.
    const ok = h.newTenant();
    h.defender.setAlerts(ok, []);
    assert.equal((await h.onboard(ok)).status, 200);
    await h.trigger("pull-worker", { tenantId: ok });
    const reconcile = JSON.stringify({ lookbackHours: 1 });
    await h.http("tenants-reconcile", { method: "POST", path: `tenants/${ok}/reconcile`, params: { tenantId: ok }, body: reconcile });
    await h.trigger("pull-worker", { tenantId: ok }); // sweep.succeeded
    const revoked = h.newTenant();
    assert.equal((await h.onboard(revoked)).status, 200);
    h.entra.revokeTenant(revoked, 70043);
    await h.trigger("pull-worker", { tenantId: revoked });
    await h.trigger("pull-timer", {}); // tenant.state for the reconsent-required tenant
    const broken = h.newTenant();
    assert.equal((await h.onboard(broken)).status, 200);
    h.entra.missingServicePrincipal(broken);
    await h.trigger("pull-worker", { tenantId: broken });
    await h.http("tenants-delete", { method: "DELETE", path: `tenants/${ok}`, params: { tenantId: ok } });
    await h.trigger("pull-worker", { tenantId: ok });

    const own = h.logs.map(messageOf).filter((l) => RULE_LINE.test(l));
    const elsewhere = capturedElsewhere();
    const lines = [...new Set([...own, ...elsewhere])];
    assert.ok(own.some((l) => l.startsWith("pull.succeeded ")) && own.some((l) => l.startsWith("tenant.status ")));
    const problems = checkRules(parseRules(bicep), lines);
    assert.deepEqual(problems, [], `${lines.length} lines (${elsewhere.length} from other test files)`);
  });

  it("fails when the app's lines and the rules drift apart", () => {
    const rules = parseRules(bicep);
    const tenant = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const good = [
      `pull.succeeded tenantId=${tenant} alerts=1 watermark=2025-01-01T00:00:00.000Z`,
      `pull.failed tenantId=${tenant} code=HTTP503`,
      `tenant.status tenantId=${tenant} status=active`,
      `tenant.status tenantId=${tenant} status=reconsent-required code=AADSTS70043`,
      `tenant.status tenantId=${tenant} status=offboarded`,
      `sweep.succeeded tenantId=${tenant} cursor=defender:sweep pass=hourly alerts=0 calls=1`,
      `tenant.state tenantId=${tenant} status=reconsent-required`,
    ];
    assert.deepEqual(checkRules(rules, good), []);
    // A renamed success line: the stale rule would fire for every tenant.
    const renamed = good.map((l) => l.replace("pull.succeeded ", "pull.ok "));
    assert.ok(checkRules(rules, renamed).some((p) => p.includes('"pull.succeeded "')));
    // A renamed field: the rules could no longer attribute the line to a tenant.
    const field = good.map((l) => l.replace("tenantId=", "tenant="));
    assert.ok(checkRules(rules, field).some((p) => p.includes("cannot extract it")));
    // A status the rule compares with never appears.
    const noReconsent = good.filter((l) => !l.includes("reconsent-required"));
    assert.ok(checkRules(rules, noReconsent).some((p) => p.includes('status == "reconsent-required"')));
    // A line of a family the rules should read, that none does (here: without the sweep rule).
    const withoutSweep = rules.filter((r) => !r.prefixes.includes("sweep."));
    assert.ok(checkRules(withoutSweep, good).some((p) => p.startsWith("no alert rule reads")));
  });
});
