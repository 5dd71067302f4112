import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { loadFunctions } from "./support/functions.js";

/**
 * The contract with the Functions host: every route, method, auth level and trigger, as
 * `@azure/functions` registers them with the host (recorded by the dev host's loader, the
 * one the tests, `npm start` without Core Tools and the sandbox share).
 */
describe("function registrations", () => {
  it("registers every HTTP route with its method and auth level", async () => {
    const fns = await loadFunctions();
    const http = [...fns.values()]
      .filter((r) => r.kind === "http")
      .map((r) => `${(r.options.methods as string[]).join(",")} ${r.options.route} ${r.options.authLevel}`)
      .sort();
    // Every route is anonymous to the host: operator routes authorize Entra ID tokens in the app
    // (shared/operator/route.ts), and test/authorization.test.ts holds each route's decision.
    assert.deepEqual(http, [
      "DELETE tenants/{tenantId} anonymous",
      "GET alerts anonymous",
      "GET audit anonymous",
      "GET consent/callback anonymous",
      "GET consent/start anonymous",
      "GET console/{*path} anonymous",
      "GET health anonymous",
      "GET health/details anonymous",
      "GET tenants anonymous",
      "GET tenants/{tenantId} anonymous",
      "GET tenants/{tenantId}/alerts/{alertId} anonymous",
      "GET tenants/{tenantId}/export anonymous",
      "GET tenants/{tenantId}/purge anonymous",
      "PATCH tenants/{tenantId} anonymous",
      "POST destinations/{name}/enable anonymous",
      "POST destinations/{name}/replay anonymous",
      "POST tenants anonymous",
      "POST tenants/{tenantId}/pull anonymous",
      "POST tenants/{tenantId}/reconcile anonymous",
    ]);
  });

  it("turns HTTP streaming on in the index.ts entry (the export streams), and the dev host serves it so", async () => {
    const { loadApp } = await import("../dev/host/load.js");
    const { repoRoot } = await import("../simulators/https.js");
    const loaded = await loadApp(repoRoot(import.meta.url));
    assert.ok(loaded.entryPoints.includes("dist/functions/index.js"), "index.js is loaded through the main glob");
    assert.ok(loaded.httpUri, "app.setup({ enableHttpStream: true }) took effect");
  });

  it("runs the data lifecycle once a day and the purge worker on the tenant-purges queue", async () => {
    const fns = await loadFunctions();
    const timer = fns.get("lifecycle-timer");
    assert.equal(timer?.kind, "timer");
    assert.equal(timer?.options.schedule, "0 17 2 * * *");
    assert.equal(timer?.options.runOnStartup, false);
    const worker = fns.get("purge-worker");
    assert.equal(worker?.kind, "storageQueue");
    assert.equal(worker?.options.queueName, "tenant-purges");
    assert.equal(worker?.options.connection, "ALERTS_STORAGE");
  });

  it("runs the timer on %PULL_SCHEDULE%, the pull worker on tenant-pulls and the delivery worker on tenant-deliveries of ALERTS_STORAGE", async () => {
    const fns = await loadFunctions();
    const timer = fns.get("pull-timer");
    assert.equal(timer?.kind, "timer");
    assert.equal(timer?.options.schedule, "%PULL_SCHEDULE%");
    assert.equal(timer?.options.runOnStartup, false);
    const worker = fns.get("pull-worker");
    assert.equal(worker?.kind, "storageQueue");
    assert.equal(worker?.options.queueName, "tenant-pulls");
    assert.equal(worker?.options.connection, "ALERTS_STORAGE");
    const deliver = fns.get("deliver-worker");
    assert.equal(deliver?.kind, "storageQueue");
    assert.equal(deliver?.options.queueName, "tenant-deliveries");
    assert.equal(deliver?.options.connection, "ALERTS_STORAGE");
  });

  it("binds only what the Functions host and the dev host both run: one trigger, and an HTTP output for HTTP functions", async () => {
    const fns = await loadFunctions();
    for (const fn of fns.values()) {
      const bindings = Object.values(fn.bindings).map((b) => `${b.direction} ${b.type}`).sort();
      const expected = { http: ["in httpTrigger", "out http"], timer: ["in timerTrigger"], storageQueue: ["in queueTrigger"] }[fn.kind];
      assert.deepEqual(bindings, expected, fn.name);
    }
  });

  it("has one file per function, loaded by the package.json main glob, and host.json settings", async () => {
    const fns = await loadFunctions();
    assert.equal(fns.size, 24);
    const pkg = JSON.parse(readFileSync("package.json", "utf8")) as { main: unknown; engines: { node: string } };
    assert.equal(pkg.main, "dist/functions/*.js");
    assert.match(pkg.engines.node, />=\s*22/);
    const host = JSON.parse(readFileSync("host.json", "utf8")) as {
      version: string;
      extensionBundle: { version: string };
      extensions: { http: { routePrefix: string } };
    };
    assert.equal(host.version, "2.0");
    assert.equal(host.extensionBundle.version, "[4.*, 5.0.0)");
    assert.equal(host.extensions.http.routePrefix, "api");
  });

  it("lists every app setting in local.settings.sample.json", async () => {
    const { SETTING_NAMES } = await import("../shared/platform/config.js");
    const sample = JSON.parse(readFileSync("local.settings.sample.json", "utf8")) as { Values: Record<string, string> };
    const missing = SETTING_NAMES.filter((name) => !(name in sample.Values));
    assert.deepEqual(missing, []);
    assert.equal(sample.Values.PULL_SCHEDULE, "0 */5 * * * *");
  });

  it("sets functionTimeout in host.json, and the pull lease outlives it (the app setting override included)", async () => {
    const { leaseTiming, parseTimeSpan, LEASE_SAFETY_MS } = await import("../shared/collection/lease-timing.js");
    const host = JSON.parse(readFileSync("host.json", "utf8")) as {
      functionTimeout?: string;
      extensions: { queues: { visibilityTimeout: string } };
    };
    assert.ok(host.functionTimeout, "host.json sets functionTimeout");
    const timeoutMs = parseTimeSpan(host.functionTimeout);
    assert.ok(timeoutMs, "functionTimeout is a bounded time span");
    const timing = leaseTiming({});
    assert.equal(timing.functionTimeoutMs, timeoutMs, "the lease is derived from host.json's functionTimeout");
    assert.ok(timing.leaseTtlMs > timing.functionTimeoutMs, "the lease outlives the function timeout");
    assert.ok(timing.leaseTtlMs / 2 > LEASE_SAFETY_MS, "a holder renews long before its safety margin");
    const override = leaseTiming({ AzureFunctionsJobHost__functionTimeout: "00:20:00" });
    assert.equal(override.functionTimeoutMs, 20 * 60_000, "the app setting overrides host.json, as the host does");
    assert.ok(override.leaseTtlMs > override.functionTimeoutMs);
    assert.throws(() => leaseTiming({}, () => "{}"), /functionTimeout/, "a host.json without functionTimeout is refused");
    assert.throws(() => leaseTiming({ AzureFunctionsJobHost__functionTimeout: "-1" }), /functionTimeout/);
  });
});
