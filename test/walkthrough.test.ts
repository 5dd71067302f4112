import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { FREE_PORTS } from "../dev/sandbox-servers.js";
import { formatSummary, runWalkthrough } from "../dev/walkthrough.js";
import { loadLoopbackDns } from "../simulators/https.js";
import { INTERFERING_ENV } from "../simulators/managed-identity.js";

/**
 * `npm run sandbox -- --walkthrough`, end to end, as the command runs it (on free ports):
 * the simulators, the app on the dev host in its own process (started as the command
 * starts it), and the README journey over HTTP, consent through the simulated Entra page,
 * a tenant on Microsoft Graph, and delivery to the three simulated destinations by the
 * deliver worker the dev host's queue listener runs.
 */
const dir = mkdtempSync(join(tmpdir(), "walkthrough-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("sandbox walkthrough", () => {
  it("onboards a tenant of each mode and one on Graph, consents on the simulated Entra pages, pulls all three, reads alerts, sees them at every destination and checks health without Core Tools", async () => {
    loadLoopbackDns();
    for (const name of INTERFERING_ENV) delete process.env[name];
    const out: string[] = [];
    const settingsPath = join(dir, "local.settings.json");
    const summary = await runWalkthrough({
      ports: FREE_PORTS,
      appPort: await freePort(),
      settingsPath,
      alertsPerTenant: 60,
      out: (line) => out.push(line),
      log: () => {},
    });
    assert.deepEqual(
      out.map((l) => l.slice(0, 4)),
      ["1/8 ", "2/8 ", "3/8 ", "4/8 ", "5/8 ", "6/8 ", "7/8 ", "8/8 "],
    );
    assert.equal(summary.tenantId, "82711ecb-9800-42be-9851-28415aa57e9f");
    assert.equal(summary.alertsInSimulator, 60);
    assert.equal(summary.alertsStored, 60, "every alert of the simulated tenant was pulled");
    assert.equal(summary.appTenantId, "1473fcee-ea4d-45dd-8720-6d48b959c66b", "Fabrikam, in application mode");
    assert.equal(summary.appAlertsInSimulator, 60);
    assert.equal(summary.appAlertsStored, 60, "every alert of the application-mode tenant was pulled with client credentials");
    assert.match(out[2] ?? "", /no refresh token stored/);
    assert.equal(summary.graphTenantId, "c3f1b9d4-5e2a-4c7b-8d06-1a9e4f7b2c58", "Woodgrove, on Microsoft Graph");
    assert.equal(summary.graphAlertsInSimulator, 60);
    assert.equal(summary.graphAlertsStored, 60, "every alert of the Graph tenant was pulled from alerts_v2");
    assert.equal(summary.graphAlertsRead, 10, "read through the same API, each with source graph");
    assert.match(out[3] ?? "", /consent for Microsoft Graph's scope/);
    assert.deepEqual(
      summary.deliveries.map((d) => [d.name, d.alerts, d.expected, d.faulty, d.olderAfterNewer]),
      [
        ["sentinel", 180, 180, 0, 0],
        ["splunk", 180, 180, 0, 0],
        ["webhook", 180, 180, 0, 0],
      ],
      "every pulled alert of the three tenants, at its latest version, at every destination",
    );
    for (const d of summary.deliveries) assert.ok(d.received >= 180, `${d.name} received ${d.received}`);
    assert.match(out[6] ?? "", /all three destinations through the deliver worker/);
    assert.match(formatSummary(summary), /deliver {7}sentinel 180 of 180, splunk 180 of 180, webhook 180 of 180 alerts/);
    assert.equal(summary.alertsRead, 10);
    assert.equal(summary.health, "ok");
    assert.match(summary.consentedBy, /@contoso-sandbox\.onmicrosoft\.com$/);
    assert.match(formatSummary(summary), /Walkthrough passed in [\d.]+ s, without Azure Functions Core Tools/);
    const written = JSON.parse(readFileSync(settingsPath, "utf8")) as { Values: Record<string, string> };
    assert.match(written.Values.DEV_FUNCTION_KEY ?? "", /^[A-Za-z0-9_-]{43}$/);
  });
});
