/**
 * The client secret's expiry (shared/platform/credential-expiry.ts) through the pull timer,
 * against real Azurite and the Key Vault fake, and the once-per-instance start line.
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { checkCredentialExpiry, readCredentialExpiry } from "../shared/platform/credential-expiry.js";
import { loggerFrom, resetStartAnnouncement, type Services, services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { type Harness, startHarness } from "./support/harness.js";

const DAY = 24 * 3600 * 1000;
const SECRET = "mssp-client-secret";
let h: Harness;
let svc: Services;
let now = new Date("2026-06-01T00:02:00Z");

before(async () => {
  h = await startHarness();
  svc = await services();
  svc.now = () => now;
});
after(async () => {
  await h?.stop();
});
beforeEach(async () => {
  h.logs.length = 0;
  h.vault.reset();
  await svc.storage
    .table(TABLES.appState)
    .deleteEntity("app", "credential-expiry-check")
    .catch(() => undefined);
});

const expiringLines = () => h.logs.filter((l) => l.includes("app.credential."));

async function timer(): Promise<void> {
  await h.trigger("pull-timer", {});
}

describe("client secret expiry", () => {
  it("logs nothing and fails nothing when there is no client secret in Key Vault (managed identity)", async () => {
    await timer();
    assert.deepEqual(expiringLines(), []);
    assert.deepEqual(await readCredentialExpiry(svc.secrets, SECRET, now), { kind: "none", secretName: SECRET });
  });

  it("logs app.credential.expiring days=<n> once a day while fewer than 30 days remain", async () => {
    await svc.secrets.setSecret(SECRET, "value-never-logged", { expiresOn: new Date(now.getTime() + 10 * DAY + 3600_000) });
    await timer();
    await timer();
    assert.deepEqual(expiringLines(), ["[warning] app.credential.expiring days=10"], "once, however often the timer runs that day");
    now = new Date(now.getTime() + DAY);
    await timer();
    assert.deepEqual(expiringLines(), ["[warning] app.credential.expiring days=10", "[warning] app.credential.expiring days=9"]);
    assert.ok(!h.logs.some((l) => l.includes("value-never-logged")));
  });

  it("stays quiet with 30 or more days left, or without an expiry", async () => {
    await svc.secrets.setSecret(SECRET, "v", { expiresOn: new Date(now.getTime() + 45 * DAY) });
    await timer();
    assert.deepEqual(expiringLines(), []);
    const noExpiry = await svc.secrets.setSecret(SECRET, "v2");
    assert.equal(noExpiry.properties.expiresOn, undefined);
    assert.deepEqual(await readCredentialExpiry(svc.secrets, SECRET, now), { kind: "no-expiry", secretName: SECRET });
  });

  it("reads the newest enabled version, the one Key Vault references resolve to", async () => {
    const soon = await svc.secrets.setSecret(SECRET, "old", { expiresOn: new Date(now.getTime() + 5 * DAY) });
    const later = await svc.secrets.setSecret(SECRET, "new", { expiresOn: new Date(now.getTime() + 300 * DAY) });
    const fresh = await readCredentialExpiry(svc.secrets, SECRET, now);
    assert.equal(fresh.kind === "expires" && fresh.daysLeft, 300);
    await svc.secrets.updateSecretProperties(SECRET, later.properties.version ?? "", { enabled: false });
    const fallback = await readCredentialExpiry(svc.secrets, SECRET, now);
    assert.equal(fallback.kind === "expires" && fallback.daysLeft, 5);
    assert.equal(soon.properties.version !== later.properties.version, true);
  });

  it("counts an expired secret as negative days", async () => {
    await svc.secrets.setSecret(SECRET, "v", { expiresOn: new Date(now.getTime() - 2 * DAY - 60_000) });
    await timer();
    assert.deepEqual(expiringLines(), ["[warning] app.credential.expiring days=-3"]);
  });

  it("a Key Vault failure is logged, does not fail the timer, and the next run checks again", async () => {
    await svc.secrets.setSecret(SECRET, "v", { expiresOn: new Date(now.getTime() + 3 * DAY + 3600_000) });
    h.vault.failNext(5, 403);
    const log = { info: (m: string) => h.logs.push(m), warn: (m: string) => h.logs.push(m), error: (m: string) => h.logs.push(m) };
    assert.equal(await checkCredentialExpiry(svc, log), undefined);
    assert.match(h.logs.join("\n"), /app\.credential\.check-failed error=\S+/);
    h.vault.failNext(0);
    h.logs.length = 0;
    await timer();
    assert.deepEqual(expiringLines(), ["[warning] app.credential.expiring days=3"]);
  });
});

describe("app.started", () => {
  it("is logged once per process, with the Node.js version, by the first invocation's logger", () => {
    resetStartAnnouncement();
    const first: string[] = [];
    const second: string[] = [];
    const context = (sink: string[]) => ({ log: (m: unknown) => sink.push(String(m)), warn: () => {}, error: () => {} });
    loggerFrom(context(first));
    loggerFrom(context(second));
    assert.deepEqual(first, [`app.started node=${process.version}`]);
    assert.deepEqual(second, []);
    assert.match(process.version, /^v\d+\.\d+\.\d+$/);
  });
});
