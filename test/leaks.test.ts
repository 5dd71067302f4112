import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { findLeaks, type HttpLike, LeakCheck, type Watchable } from "./support/leaks.js";
import { floorProblem, MIN_TEST_FILES, phases } from "./support/test-files.js";

/**
 * The suite-wide leak check (test/support/leaks.ts) and the runner's floor, on made-up
 * input: each check must catch what it exists for. The real check runs at the end of every
 * file that starts the harness.
 */

const SECRET = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-token-value";
const STATE = "c3RhdGUtdmFsdWUtdGhhdC1tdXN0LW5vdC1sZWFr";

function page(status: number, headers: Record<string, string> = {}, text = "<p>ok</p>"): HttpLike {
  return {
    status,
    text,
    json: undefined,
    headers: { "content-type": "text/html", "x-content-type-options": "nosniff", "strict-transport-security": "max-age=1", ...headers },
  };
}

/** A stand-in harness: the fakes know SECRET and STATE; `behave` decides what the app does. */
function fakeHarness(behave: { log?: string; response?: HttpLike; throws?: Error }): Watchable & { logs: string[] } {
  const source = { secretsSeen: () => [SECRET, STATE] };
  const logs: string[] = [];
  return {
    entra: source,
    vault: { secretsSeen: () => [] },
    identity: { secretsSeen: () => [] },
    logs,
    async http() {
      if (behave.log) logs.push(behave.log);
      if (behave.throws) throw behave.throws;
      return behave.response ?? page(200);
    },
    async trigger() {
      if (behave.log) logs.push(behave.log);
      if (behave.throws) throw behave.throws;
    },
    async stop() {},
  };
}

/** Calls the app once through the watched harness (an HTTP function, or a trigger) and returns the problems. */
async function problemsAfter(behave: Parameters<typeof fakeHarness>[0], name = "consent-callback", via: "http" | "trigger" = "http"): Promise<string[]> {
  const check = new LeakCheck();
  const h = check.watch(fakeHarness(behave));
  if (via === "http") await h.http(name, undefined as never).catch(() => undefined);
  else await h.trigger(name, {}).catch(() => undefined);
  return check.problems();
}

describe("the leak check", () => {
  it("passes clean logs, responses and errors", async () => {
    const clean = { log: "consent.started tenantId=x", throws: new Error("pull.failed error=RestError") };
    assert.deepEqual(await problemsAfter(clean), []);
    assert.deepEqual(await problemsAfter(clean, "pull-worker", "trigger"), []);
  });

  it("finds a secret in a log line written by a timer or queue handler (pull time)", async () => {
    assert.equal((await problemsAfter({ log: `token.written-back tenantId=x token=${SECRET}` }, "pull-worker", "trigger")).length, 1);
  });

  it("finds a secret in a log line (state and nonce included) without repeating it", async () => {
    const found = await problemsAfter({ log: `consent.started tenantId=x state=${STATE}` });
    assert.ok(found.length > 0 && found.every((p) => p.includes("log") && !p.includes(STATE)), found.join("\n"));
  });

  it("finds a secret in a response body or header", async () => {
    assert.ok((await problemsAfter({ response: page(200, {}, `<p>${SECRET}</p>`) })).some((p) => p.includes("response of")));
    assert.ok((await problemsAfter({ response: page(200, { "x-debug": SECRET }) })).some((p) => p.includes("response of")));
  });

  it("finds a secret in the message, the stack or the cause of an error a handler throws", async () => {
    const stackOnly = new Error("refused");
    stackOnly.stack = `Error: refused\n    at redeem (${SECRET})`;
    const errors = [new Error(`token ${SECRET} refused`), stackOnly, new Error("pull.failed", { cause: new Error(`body: ${SECRET}`) })];
    for (const throws of errors) {
      for (const [name, via] of [["consent-callback", "http"], ["pull-worker", "trigger"]] as const) {
        const found = await problemsAfter({ throws }, name, via);
        assert.ok(found.some((p) => p.startsWith(`a secret leaked into the error thrown by ${name}`)), `${via}: ${throws.message}`);
      }
    }
  });

  it("allows the consent link only in POST /api/tenants' consentUrl, and state only in consent/start's Location", async () => {
    const link = "bGluay1zZWNyZXQtdGhhdC1vbmx5LXRoZS1jdXN0b21lci1nZXRz";
    const consentUrl = `https://collector.localhost/api/consent/start?tenant=x&link=${link}`;
    const created: HttpLike = {
      status: 201,
      text: JSON.stringify({ consentUrl }),
      json: { consentUrl },
      headers: { "content-type": "application/json", "x-content-type-options": "nosniff" },
    };
    const check = new LeakCheck();
    const h = check.watch(fakeHarness({ response: created }));
    await h.http("tenants-create", undefined as never);
    assert.deepEqual(check.problems(), []);
    assert.ok(check.knownSecrets().has(link), "the link secret becomes a secret to look for");
    h.logs.push(`tenant.registered link=${link}`);
    assert.equal(check.problems().length, 1);

    const redirect = { ...page(302, { location: `https://login/authorize?state=${STATE}` }), headers: { "x-content-type-options": "nosniff", location: `https://login/authorize?state=${STATE}` } };
    assert.deepEqual(await problemsAfter({ response: redirect }, "consent-start"), []);
    assert.equal((await problemsAfter({ response: redirect }, "consent-callback")).length, 1, "a Location elsewhere is checked");
  });

  it("flags a response without nosniff and a page without HSTS", async () => {
    const found = await problemsAfter({ response: { ...page(200), headers: { "content-type": "text/html" } } });
    assert.deepEqual(found, [
      "consent-callback answered 200 without nosniff",
      "consent-callback answered a page (200) without Strict-Transport-Security",
    ]);
  });

  it("ignores secrets shorter than 8 characters", () => {
    const check = new LeakCheck();
    check.sources.push({ secretsSeen: () => ["abc", SECRET] });
    assert.deepEqual([...check.knownSecrets()], [SECRET]);
    assert.equal(findLeaks(["abc"], [{ where: "log", text: "abc" }]).length, 1, "findLeaks itself takes what it is given");
  });
});

describe("the test runner", () => {
  it("fails with no test files, or fewer than the committed floor", () => {
    assert.match(floorProblem([]) ?? "", /No test files found/);
    assert.match(floorProblem(["a.test.js"], 2) ?? "", /Only 1 test files found.*floor of 2/);
    assert.equal(floorProblem(Array.from({ length: MIN_TEST_FILES }, (_, i) => `${i}.test.js`)), undefined);
  });

  it("runs the alert-rule check after every other file", () => {
    assert.deepEqual(phases(["/r/dist/test/a.test.js", "/r/dist/test/alert-rules.test.js", "/r/dist/test/z.test.js"]), [
      ["/r/dist/test/a.test.js", "/r/dist/test/z.test.js"],
      ["/r/dist/test/alert-rules.test.js"],
    ]);
  });
});
