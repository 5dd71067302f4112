/**
 * The operator console in Chromium (playwright-core with Debian's Chromium; skipped when it
 * is absent), served by the app at /api/console/ and signed in through the fake Entra with
 * MSAL (code + PKCE): each role sees what it may, onboarding gives a link to copy, a failing
 * tenant's error is readable, offboarding with purge asks for a typed confirmation, and the
 * page works at a phone's width. MSAL calls nothing but the (simulated) authority, keeps its
 * tokens in session storage only, and the page breaks no rule of its CSP. Screenshots go to
 * .cache/artifacts/.
 */
import assert from "node:assert/strict";
import { after, before, describe, it, type TestContext } from "node:test";
import { makeAlerts } from "../simulators/alerts.js";
import type { Role } from "../simulators/operators.js";
import { artifact, type Browser, freePort, launchChromium, type Page, signIn } from "./support/browser.js";
import { type Harness, openLink, pathOf, startHarness } from "./support/harness.js";

let h: Harness;
let browser: Browser | string;
let base: string;
let consoleUrl: string;
let failing: string;
let healthy: string;
let appMode: string;

before(async () => {
  const port = await freePort();
  base = `http://localhost:${port}`;
  consoleUrl = `${base}/api/console/`;
  h = await startHarness({ PUBLIC_BASE_URL: base }, { port });
  browser = await launchChromium();
  failing = h.newTenant();
  healthy = h.newTenant();
  const names: Record<string, string> = { [failing]: "Northwind Traders", [healthy]: "Fabrikam Inc" };
  for (const tenantId of [failing, healthy]) {
    h.defender.setAlerts(tenantId, makeAlerts({ count: 12, from: new Date(Date.now() - 2 * 24 * 3600_000), to: new Date(Date.now() - 120_000), seed: tenantId, aadTenantId: tenantId }));
    const registered = await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId, displayName: names[tenantId] }) });
    const callback = await h.entra.consent(await openLink(h, (registered.json as { consentUrl: string }).consentUrl));
    assert.equal((await h.http("consent-callback", { path: pathOf(callback) })).status, 200);
    await h.trigger("pull-worker", { tenantId });
  }
  // A customer onboarded in application mode (admin consent, nothing stored).
  appMode = h.newTenant();
  assert.equal((await h.onboardApp(appMode)).status, 200);
  // The customer's admin resets their password: the grant is gone, and the tenant says why.
  h.entra.revokeTenant(failing, 50173);
  await (await import("../shared/platform/services.js")).services().then((svc) => {
    const real = svc.now;
    svc.now = () => new Date(real().getTime() + 2 * 3600_000); // past the cached access token
    return h.trigger("pull-worker", { tenantId: failing }).finally(() => {
      svc.now = real;
    });
  });
});

after(async () => {
  if (typeof browser !== "string") await browser?.close();
  await h?.stop();
});

function user(role: Role) {
  const u = h.operators.users[role];
  return { tenantId: h.operators.tenantId, oid: u.oid, upn: u.upn };
}

/** A fresh browser profile signed in as the role's user (session storage starts empty). */
async function pageAs(t: TestContext, role: Role, viewport = { width: 1280, height: 800 }): Promise<{ page: Page; requests: string[]; cspErrors: string[]; close(): Promise<void> } | undefined> {
  if (typeof browser === "string") {
    t.skip(browser);
    return undefined;
  }
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await context.newPage();
  const requests: string[] = [];
  const cspErrors: string[] = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("console", (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) cspErrors.push(m.text());
  });
  await signIn(page, consoleUrl, user(role));
  return { page, requests, cspErrors, close: () => context.close() };
}

/** Runs `body` signed in as `role` in a fresh browser context, closed afterwards (skipped without Chromium). */
async function withPage(
  t: TestContext,
  role: Role,
  body: (s: NonNullable<Awaited<ReturnType<typeof pageAs>>>) => Promise<void>,
  viewport?: { width: number; height: number },
): Promise<void> {
  const s = await pageAs(t, role, viewport);
  if (!s) return;
  try {
    await body(s);
  } finally {
    await s.close();
  }
}

async function tabs(page: Page): Promise<string[]> {
  return (await page.locator("nav button").allTextContents()).map((s) => s.trim());
}

describe("operator console", () => {
  it("is served with its Content-Security-Policy and tells MSAL the authority in advance", async () => {
    const page = await h.http("console", { path: "console/", params: {} });
    assert.equal(page.status, 200);
    const authority = new URL(h.entra.url).origin;
    assert.equal(
      page.headers["content-security-policy"],
      `default-src 'self'; connect-src 'self' ${authority}; frame-src ${authority}; frame-ancestors 'none'`,
    );
    assert.match(page.text, /<script type="module" src="assets\/app-[A-Z0-9]+\.js"><\/script>/);
    assert.doesNotMatch(page.text, /<script>|style=/, "nothing inline");
    const config = (await h.http("console", { path: "console/config.json", params: { path: "config.json" } })).json as Record<string, unknown>;
    assert.equal(config.clientId, h.operators.consoleClientId);
    assert.equal(config.redirectUri, consoleUrl);
    assert.deepEqual(config.knownAuthorities, [new URL(h.entra.url).host]);
    assert.deepEqual(config.scopes, [`api://${h.operators.apiClientId}/Operator.Access`]);
    assert.equal((await h.http("console", { path: "console", params: {} })).status, 301);
    assert.equal((await h.http("console", { path: "console/nope.js", params: { path: "nope.js" } })).status, 404);
  });

  it("signs an Admin in through Entra ID (code + PKCE) with no instance discovery and no token in local storage, and lists the tenants", async (t) => {
    await withPage(t, "Admin", async (s) => {
      assert.equal(await s.page.textContent("#role"), "Admin");
      assert.equal(await s.page.textContent("#user"), `${h.operators.users.Admin.name}`);
      await s.page.waitForSelector(`tr[data-tenant="${healthy}"]`);
      assert.deepEqual(await tabs(s.page), ["Tenants", "Onboard", "Alerts", "Health", "Audit"]);
      assert.deepEqual(
        s.requests.filter((u) => /microsoftonline|discovery\/instance|openid-configuration/.test(u)),
        [],
        "no instance discovery, no metadata request",
      );
      assert.ok(s.requests.some((u) => u.startsWith(`${h.entra.url}/${h.operators.tenantId}/oauth2/v2.0/token`)), "the code was redeemed cross-origin");
      assert.equal(await s.page.evaluate("localStorage.length"), 0, "nothing in local storage");
      assert.ok((await s.page.evaluate<number>("sessionStorage.length")) > 0, "MSAL's cache is in session storage");
      const kept = await s.page.evaluate<string>("JSON.stringify(Object.assign({}, localStorage)) + document.cookie");
      assert.doesNotMatch(kept, /eyJ[\w-]+\.eyJ/, "no token outside MSAL's session storage");
      await s.page.screenshot({ path: artifact("console-admin-tenants.png"), fullPage: true });
      assert.deepEqual(s.cspErrors, [], "no CSP violation");
    });
  });

  it("shows each role what it may use, and hides the rest", async (t) => {
    const expected: Record<Role, { tabs: string[]; buttons: string[]; hidden: string[] }> = {
      Reader: { tabs: ["Tenants", "Alerts", "Health"], buttons: [], hidden: ["#pull", "#reconcile", "#relink", "#offboard"] },
      Operator: { tabs: ["Tenants", "Onboard", "Alerts", "Health"], buttons: ["#pull", "#reconcile", "#relink"], hidden: ["#offboard"] },
      Admin: { tabs: ["Tenants", "Onboard", "Alerts", "Health", "Audit"], buttons: ["#pull", "#reconcile", "#relink", "#offboard"], hidden: [] },
    };
    for (const role of ["Reader", "Operator", "Admin"] as const) {
      await withPage(t, role, async (s) => {
        assert.equal(await s.page.textContent("#role"), role);
        assert.deepEqual(await tabs(s.page), expected[role].tabs, role);
        await s.page.locator(`tr[data-tenant="${healthy}"] button.link`).click();
        await s.page.waitForSelector("#tenant-facts");
        for (const selector of expected[role].buttons) assert.equal(await s.page.locator(selector).count(), 1, `${role} sees ${selector}`);
        for (const selector of expected[role].hidden) assert.equal(await s.page.locator(selector).count(), 0, `${role} does not see ${selector}`);
        await s.page.screenshot({ path: artifact(`console-tenant-${role.toLowerCase()}.png`), fullPage: true });
      });
    }
  });

  it("onboards a tenant (Operator) and copies its consent link, which opens the consent flow", async (t) => {
    await withPage(t, "Operator", async (s) => {
      const tenantId = h.newTenant();
      await s.page.click('nav button[data-view="onboard"]');
      await s.page.fill("#tenant-id", tenantId);
      await s.page.fill("#tenant-name", "Tailspin Toys");
      await s.page.click("#create-link");
      await s.page.waitForSelector("#consent-url");
      const link = await s.page.locator("#consent-url").inputValue();
      assert.match(link, new RegExp(`^${base}/api/consent/start\\?tenant=${tenantId}&link=`));
      assert.ok((await s.page.textContent("#link-expiry"))?.trim());
      await s.page.click("#copy-link");
      await s.page.waitForSelector("#copy-link:has-text('Copied')");
      assert.equal(await s.page.evaluate<string>("navigator.clipboard.readText()"), link, "the clipboard holds the link");
      const mail = await s.page.evaluate<string>("document.getElementById('mail-link').getAttribute('href')");
      assert.ok(mail.startsWith("mailto:?subject=") && decodeURIComponent(mail).includes(link));
      await s.page.screenshot({ path: artifact("console-onboard.png"), fullPage: true });
      const authorize = await openLink(h, link);
      assert.ok(authorize.startsWith(`${h.entra.url}/${tenantId}/oauth2/v2.0/authorize?`), "the copied link starts the customer's consent");
    });
  });

  it("onboards in application mode when asked, and re-links an application-mode tenant without switching its mode", async (t) => {
    await withPage(t, "Operator", async (s) => {
      const tenantId = h.newTenant();
      await s.page.click('nav button[data-view="onboard"]');
      await s.page.fill("#tenant-id", tenantId);
      await s.page.selectOption("#tenant-mode", "application");
      await s.page.click("#create-link");
      await s.page.waitForSelector("#consent-url");
      const link = await s.page.locator("#consent-url").inputValue();
      assert.ok((await openLink(h, link)).startsWith(`${h.entra.url}/${tenantId}/v2.0/adminconsent?`), "the link asks for admin consent");

      await s.page.click('nav button[data-view="tenants"]');
      await s.page.locator(`tr[data-tenant="${appMode}"] button.link`).click();
      await s.page.click("#relink");
      await s.page.waitForSelector("#consent-url");
      const status = (await h.http("tenants-get", { path: `tenants/${appMode}`, params: { tenantId: appMode } })).json as { mode: string; requestedMode?: string };
      assert.deepEqual({ mode: status.mode, requestedMode: status.requestedMode }, { mode: "application", requestedMode: undefined }, "no switch to the default mode");
    });
  });

  it("shows a failing tenant's error in words", async (t) => {
    await withPage(t, "Reader", async (s) => {
      const row = s.page.locator(`tr[data-tenant="${failing}"]`);
      await row.waitFor();
      const text = (await row.textContent()) ?? "";
      assert.match(text, /needs consent again/);
      assert.match(text, /revoked, a fresh auth token is needed\. The user might have changed or reset their password/);
      assert.match(text, /AADSTS50173/);
      assert.equal(await s.page.locator(`tr[data-tenant="${failing}"].failing`).count(), 1);
    });
  });

  it("asks for the tenant's name before offboarding with purge (Admin), then purges", async (t) => {
    await withPage(t, "Admin", async (s) => {
      await s.page.locator(`tr[data-tenant="${healthy}"] button.link`).click();
      await s.page.click("#offboard");
      await s.page.waitForSelector("#offboard-dialog");
      assert.equal(await s.page.locator("#confirm-offboard").isDisabled(), true, "nothing typed: disabled");
      await s.page.check("#purge");
      await s.page.fill("#confirm-name", "Fabrikam");
      assert.equal(await s.page.locator("#confirm-offboard").isDisabled(), true, "a wrong name: disabled");
      assert.equal(await s.page.textContent("#confirm-offboard"), "Offboard and purge");
      await s.page.screenshot({ path: artifact("console-offboard-confirm.png"), fullPage: true });
      await s.page.fill("#confirm-name", "Fabrikam Inc");
      assert.equal(await s.page.locator("#confirm-offboard").isDisabled(), false);
      await s.page.click("#confirm-offboard");
      await s.page.waitForSelector("p.ok");
      assert.match((await s.page.textContent("p.ok")) ?? "", /Offboarded; purge \d{13}-[0-9a-f]{12} deletes all of its data/);
      const purge = await h.http("tenants-purge", { path: `tenants/${healthy}/purge`, params: { tenantId: healthy } });
      assert.equal(purge.status, 200);
      const entry = (await h.http("audit-list", { path: `audit?action=tenant.purge&tenantId=${healthy}` })).json as {
        entries: { actor: { upn?: string } }[];
      };
      assert.equal(entry.entries[0]?.actor.upn, h.operators.users.Admin.upn, "audited as the signed-in Admin");
    });
  });

  it("works at a phone's width: tables become cards, the navigation wraps", async (t) => {
    await withPage(t, "Admin", async (s) => {
      await s.page.waitForSelector(`tr[data-tenant="${failing}"]`);
      assert.equal(await s.page.evaluate("getComputedStyle(document.querySelector('#tenants thead')).display"), "none");
      const overflow = await s.page.evaluate<number>("document.documentElement.scrollWidth - document.documentElement.clientWidth");
      assert.ok(overflow <= 0, `no sideways scrolling (${overflow}px)`);
      await s.page.screenshot({ path: artifact("console-phone.png"), fullPage: true });
    }, { width: 390, height: 844 });
  });

  it("shows health: each part, the app's credential, and that no destination is configured", async (t) => {
    await withPage(t, "Reader", async (s) => {
      await s.page.click('nav button[data-view="health"]');
      await s.page.waitForSelector("#health-status");
      assert.equal(await s.page.textContent("#health-status"), "Everything works.");
      assert.match((await s.page.textContent("#credential")) ?? "", /with a client secret: /, "the harness's credential type");
      assert.equal(await s.page.locator('tr[data-part="clientCredential"]').count(), 1);
      assert.match((await s.page.textContent("main")) ?? "", /No delivery destination is configured\./);
      await s.page.screenshot({ path: artifact("console-health.png"), fullPage: true });
    });
  });

  it("filters alerts by tenant and opens one as its JSON", async (t) => {
    await withPage(t, "Reader", async (s) => {
      await s.page.click('nav button[data-view="alerts"]');
      await s.page.waitForSelector(`#filter-tenant option[value="${failing}"]`, { state: "attached" });
      await s.page.evaluate(`(() => { const s = document.getElementById("filter-tenant"); s.value = "${failing}"; s.dispatchEvent(new Event("change", { bubbles: true })); })()`);
      await s.page.click("#search");
      await s.page.waitForSelector("#alerts tbody tr");
      assert.equal(await s.page.locator("#alerts tbody tr").count(), 12);
      await s.page.locator("#alerts tbody tr button.link").first().click();
      // The dialog opens at once with "Loading…"; wait until the alert's JSON replaces it.
      await s.page.waitForSelector('#alert-json pre:has-text("{")');
      const json = JSON.parse((await s.page.textContent("#alert-json pre")) ?? "{}") as { aadTenantId?: string };
      assert.equal(json.aadTenantId, failing);
      await s.page.screenshot({ path: artifact("console-alert.png"), fullPage: true });
    });
  });
});
