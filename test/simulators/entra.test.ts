import assert from "node:assert/strict";
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import { after, before, beforeEach, describe, it } from "node:test";
import tls from "node:tls";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import forge from "node-forge";
import * as oauth from "oauth4webapi";
import { DEFENDER_RESOURCE, defenderAuthenticator, FakeEntra } from "../../simulators/entra.js";
import { testCerts } from "../../simulators/https.js";

const certs = testCerts();
if (!process.env.NODE_EXTRA_CA_CERTS) {
  // Run outside run-tests.js: trust the local CA in-process instead.
  tls.setDefaultCACertificates([...tls.getCACertificates("default"), certs.caPem]);
}

const TENANT_A = "aaaaaaaa-0000-4000-8000-00000000000a";
const TENANT_B = "bbbbbbbb-0000-4000-8000-00000000000b";
const USER_A = { oid: "0a0a0a0a-1111-4111-8111-111111111111", upn: "admin@contoso.onmicrosoft.com", name: "Ada Admin" };
const USER_A2 = { oid: "0a0a0a0a-2222-4222-8222-222222222222", upn: "second@contoso.onmicrosoft.com" };
const USER_B = { oid: "0b0b0b0b-1111-4111-8111-111111111111", upn: "admin@fabrikam.onmicrosoft.com", name: "Bob" };
const CLIENT_ID = "11111111-2222-3333-4444-555555555555";
const CLIENT_SECRET = "app-secret-value-0123456789";
const REDIRECT_URI = "https://collector.localhost/api/consent/callback";
const SCOPE = `${DEFENDER_RESOURCE}/.default offline_access openid profile`;

interface TokenAnswer {
  status: number;
  body: Record<string, unknown>;
}

function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

describe("FakeEntra", () => {
  let clock = Date.now();
  const entra = new FakeEntra({ certs, now: () => clock });

  function authorizeUrl(tenant: string, challenge: string, overrides: Record<string, string | null> = {}): string {
    const url = new URL(`${entra.url}/${tenant}/oauth2/v2.0/authorize`);
    const params: Record<string, string | null> = {
      client_id: CLIENT_ID,
      response_type: "code",
      redirect_uri: REDIRECT_URI,
      scope: SCOPE,
      state: "state-123",
      nonce: "nonce-456",
      code_challenge: challenge,
      code_challenge_method: "S256",
      ...overrides,
    };
    for (const [k, v] of Object.entries(params)) if (v !== null) url.searchParams.set(k, v);
    return url.href;
  }

  async function token(tenant: string, params: Record<string, string>, basic = false): Promise<TokenAnswer> {
    const headers: Record<string, string> = { "content-type": "application/x-www-form-urlencoded" };
    const form = new URLSearchParams(params);
    if (basic) {
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString("base64")}`;
    } else {
      if (!form.has("client_id")) form.set("client_id", CLIENT_ID);
      if (!form.has("client_secret")) form.set("client_secret", CLIENT_SECRET);
    }
    const res = await fetch(`${entra.url}/${tenant}/oauth2/v2.0/token`, { method: "POST", headers, body: form });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  /** consent() + code redemption: a fresh grant for the tenant. */
  async function signIn(tenant: string, opts: Parameters<FakeEntra["consent"]>[1] = {}, scope = SCOPE): Promise<TokenAnswer> {
    const { verifier, challenge } = pkce();
    const location = new URL(await entra.consent(authorizeUrl(tenant, challenge, { scope }), opts));
    const code = location.searchParams.get("code");
    assert.ok(code, location.href);
    return token(tenant, { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: verifier });
  }

  function assertEntraError(answer: TokenAnswer, status: number, error: string, aadsts: number): void {
    assert.equal(answer.status, status, JSON.stringify(answer.body));
    assert.equal(answer.body.error, error);
    assert.deepEqual(answer.body.error_codes, [aadsts]);
    const description = String(answer.body.error_description);
    assert.match(description, new RegExp(`^AADSTS${aadsts}: `));
    assert.match(description, /\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
    assert.equal(typeof answer.body.trace_id, "string");
    assert.equal(typeof answer.body.correlation_id, "string");
    assert.equal(typeof answer.body.timestamp, "string");
  }

  before(async () => {
    await entra.start();
    entra.registerApp({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [REDIRECT_URI], name: "Collector <MSSP>" });
    entra.addTenant(TENANT_A, { users: [USER_A, USER_A2] });
    entra.addTenant(TENANT_B, { users: [USER_B] });
  });
  after(() => entra.stop());
  beforeEach(() => {
    clock = Date.now();
  });

  it("serves discovery and keys per tenant, and Entra's error for unknown tenants", async () => {
    const res = await fetch(`${entra.url}/${TENANT_A}/v2.0/.well-known/openid-configuration`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as Record<string, unknown>;
    assert.equal(doc.issuer, `${entra.url}/${TENANT_A}/v2.0`);
    assert.equal(doc.authorization_endpoint, `${entra.url}/${TENANT_A}/oauth2/v2.0/authorize`);
    assert.equal(doc.token_endpoint, `${entra.url}/${TENANT_A}/oauth2/v2.0/token`);
    assert.equal(doc.jwks_uri, `${entra.url}/${TENANT_A}/discovery/v2.0/keys`);
    assert.deepEqual(doc.id_token_signing_alg_values_supported, ["RS256"]);
    assert.ok((doc.response_types_supported as string[]).includes("code"));

    const orgs = (await (await fetch(`${entra.url}/organizations/v2.0/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    assert.equal(orgs.issuer, `${entra.url}/{tenantid}/v2.0`);

    const jwks = (await (await fetch(doc.jwks_uri as string)).json()) as { keys: Array<Record<string, string>> };
    assert.equal(jwks.keys.length, 1);
    assert.equal(jwks.keys[0]!.kty, "RSA");
    assert.ok(jwks.keys[0]!.kid);
    assert.equal(jwks.keys[0]!.d, undefined, "no private key material");

    const unknown = await fetch(`${entra.url}/cccccccc-0000-4000-8000-00000000000c/v2.0/.well-known/openid-configuration`);
    assertEntraError({ status: unknown.status, body: (await unknown.json()) as Record<string, unknown> }, 400, "invalid_tenant", 90002);
  });

  it("drives the HTML consent page over plain HTTP: Accept, then PKCE code redemption with client_secret_basic", async () => {
    const { verifier, challenge } = pkce();
    const page = await fetch(authorizeUrl(TENANT_A, challenge, { state: `<script>alert("x")</script>` }));
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    const html = await page.text();
    assert.ok(html.includes(TENANT_A));
    assert.ok(html.includes("Collector &lt;MSSP&gt;"), "app name is escaped");
    assert.ok(html.includes(`${DEFENDER_RESOURCE}/.default`));
    assert.ok(!html.includes("<script>"), "nothing from the request is rendered raw");
    assert.ok(html.includes(USER_A.upn) && html.includes(USER_A2.upn));
    const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
    const requestId = /name="request" value="([^"]+)"/.exec(html)?.[1];
    assert.equal(action, `/${TENANT_A}/oauth2/v2.0/authorize/decision`);
    assert.ok(requestId);

    const decision = await fetch(new URL(action, page.url), {
      method: "POST",
      redirect: "manual",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ request: requestId, user: `${TENANT_A}|${USER_A2.oid}`, decision: "accept" }),
    });
    assert.equal(decision.status, 302);
    const location = new URL(decision.headers.get("location")!);
    assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
    assert.equal(location.searchParams.get("state"), `<script>alert("x")</script>`);
    assert.ok(location.searchParams.get("session_state"));
    const code = location.searchParams.get("code")!;

    const answer = await token(TENANT_A, { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: verifier }, true);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.token_type, "Bearer");
    assert.equal(answer.body.expires_in, 3600);
    assert.equal(answer.body.ext_expires_in, 3600);
    assert.match(String(answer.body.scope), /https:\/\/api\.securitycenter\.microsoft\.com\/Alert\.Read/);
    assert.equal(typeof answer.body.refresh_token, "string");

    const idToken = decodeJwt(String(answer.body.id_token));
    assert.equal(decodeProtectedHeader(String(answer.body.id_token)).alg, "RS256");
    assert.ok(decodeProtectedHeader(String(answer.body.id_token)).kid);
    assert.equal(idToken.iss, `${entra.url}/${TENANT_A}/v2.0`);
    assert.equal(idToken.aud, CLIENT_ID);
    assert.equal(idToken.tid, TENANT_A);
    assert.equal(idToken.oid, USER_A2.oid);
    assert.equal(idToken.preferred_username, USER_A2.upn);
    assert.equal(idToken.nonce, "nonce-456");
    assert.equal(idToken.ver, "2.0");
    assert.equal((idToken.exp ?? 0) - (idToken.iat ?? 0), 3600);

    const accessToken = decodeJwt(String(answer.body.access_token));
    assert.equal(accessToken.aud, DEFENDER_RESOURCE);
    assert.equal(accessToken.appid, CLIENT_ID);
    assert.match(String(accessToken.scp), /Alert\.Read/);
    assert.deepEqual(await entra.verifyAccessToken(String(answer.body.access_token)), {
      tenantId: TENANT_A,
      oid: USER_A2.oid,
      aud: DEFENDER_RESOURCE,
      scp: accessToken.scp,
      appid: CLIENT_ID,
      upn: USER_A2.upn,
      roles: [],
      idtyp: "user",
    });
    assert.equal(await entra.verifyAccessToken(String(answer.body.id_token)), null, "an id_token is not an API token");
    assert.equal(await entra.verifyAccessToken(String(answer.body.access_token), "https://graph.microsoft.com"), null);
    clock += 3601_000;
    assert.equal(await entra.verifyAccessToken(String(answer.body.access_token)), null, "expired");
    clock = Date.now();

    const again = await token(TENANT_A, { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: verifier }, true);
    assertEntraError(again, 400, "invalid_grant", 54005);
  });

  it("redirects Cancel as access_denied AADSTS65004, and a used page request cannot be replayed", async () => {
    const html = await (await fetch(authorizeUrl(TENANT_A, pkce().challenge))).text();
    const requestId = /name="request" value="([^"]+)"/.exec(html)![1]!;
    const post = (decision: string) =>
      fetch(`${entra.url}/${TENANT_A}/oauth2/v2.0/authorize/decision`, {
        method: "POST",
        redirect: "manual",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ request: requestId, user: `${TENANT_A}|${USER_A.oid}`, decision }),
      });
    const cancel = await post("cancel");
    assert.equal(cancel.status, 302);
    const location = cancel.headers.get("location")!;
    assert.match(location, /[?&]error=access_denied/);
    assert.match(location, /error_description=AADSTS65004%3A\+User\+declined\+to\+consent/);
    assert.match(location, /[?&]state=state-123/);
    const replay = await post("accept");
    assert.equal(replay.status, 400);
    await replay.body?.cancel();

    const viaShortcut = new URL(await entra.consent(authorizeUrl(TENANT_A, pkce().challenge), { decision: "cancel" }));
    assert.equal(viaShortcut.searchParams.get("error"), "access_denied");
    assert.match(viaShortcut.searchParams.get("error_description")!, /^AADSTS65004: User declined to consent/);
  });

  it("validates authorize requests: error page before the redirect URI is trusted, error redirect after", async () => {
    const { challenge } = pkce();
    const wrongRedirect = await fetch(authorizeUrl(TENANT_A, challenge, { redirect_uri: "https://evil.localhost/cb" }), { redirect: "manual" });
    assert.equal(wrongRedirect.status, 400);
    const page = await wrongRedirect.text();
    assert.match(page, /AADSTS50011/);
    assert.ok(!page.includes("https://evil.localhost/cb\""));
    await assert.rejects(entra.consent(authorizeUrl(TENANT_A, challenge, { redirect_uri: `${REDIRECT_URI}/` })), /AADSTS50011/);
    await assert.rejects(entra.consent(authorizeUrl(TENANT_A, challenge, { client_id: "99999999-2222-3333-4444-555555555555" })), /AADSTS700016/);
    await assert.rejects(entra.consent(authorizeUrl("cccccccc-0000-4000-8000-00000000000c", challenge)), /AADSTS90002/);

    const redirected = async (overrides: Record<string, string | null>) => {
      const res = await fetch(authorizeUrl(TENANT_A, challenge, overrides), { redirect: "manual" });
      assert.equal(res.status, 302);
      const url = new URL(res.headers.get("location")!);
      assert.equal(`${url.origin}${url.pathname}`, REDIRECT_URI);
      return [url.searchParams.get("error"), /^AADSTS(\d+)/.exec(url.searchParams.get("error_description") ?? "")?.[1]];
    };
    assert.deepEqual(await redirected({ code_challenge: null }), ["invalid_request", "9002325"]);
    assert.deepEqual(await redirected({ code_challenge_method: "plain" }), ["invalid_request", "501491"]);
    assert.deepEqual(await redirected({ response_type: "token" }), ["unsupported_response_type", "700054"]);
    assert.deepEqual(await redirected({ scope: null }), ["invalid_request", "900144"]);
    assert.deepEqual(await redirected({ state: null }), ["invalid_request", "900144"]);
    assert.deepEqual(await redirected({ nonce: null }), ["invalid_request", "900144"]);
    assert.deepEqual(await redirected({ scope: "https://unknown.example.com/.default" }), ["invalid_resource", "500011"]);
  });

  it("binds codes to PKCE, redirect URI, client and a 10 minute lifetime; client_secret_post works", async () => {
    const { verifier, challenge } = pkce();
    const code = new URL(await entra.consent(authorizeUrl(TENANT_A, challenge))).searchParams.get("code")!;
    const redeem = (extra: Record<string, string>) =>
      token(TENANT_A, { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: verifier, ...extra });
    assertEntraError(await redeem({ code_verifier: pkce().verifier }), 400, "invalid_grant", 501481);
    assertEntraError(await redeem({ redirect_uri: "https://collector.localhost/other" }), 400, "invalid_grant", 500112);
    assertEntraError(await token(TENANT_A, { grant_type: "authorization_code", code: "1.Anot-a-code", redirect_uri: REDIRECT_URI, code_verifier: verifier }), 400, "invalid_grant", 9002313);
    assertEntraError(await token(TENANT_B, { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: verifier }), 400, "invalid_grant", 700005);
    // Failed attempts do not burn the code.
    assert.equal((await redeem({})).status, 200);

    const late = pkce();
    const lateCode = new URL(await entra.consent(authorizeUrl(TENANT_A, late.challenge))).searchParams.get("code")!;
    clock += 10 * 60_000 + 1;
    assertEntraError(
      await token(TENANT_A, { grant_type: "authorization_code", code: lateCode, redirect_uri: REDIRECT_URI, code_verifier: late.verifier }),
      400,
      "invalid_grant",
      70008,
    );
  });

  it("rotates refresh tokens on every redemption and keeps the old ones valid", async () => {
    const first = await signIn(TENANT_B);
    assert.equal(first.status, 200);
    const rt0 = String(first.body.refresh_token);
    const before = entra.tokenCount(TENANT_B);

    const r1 = await token(TENANT_B, { grant_type: "refresh_token", refresh_token: rt0, scope: `${DEFENDER_RESOURCE}/.default offline_access` });
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
    const rt1 = String(r1.body.refresh_token);
    assert.notEqual(rt1, rt0);
    const r2 = await token(TENANT_B, { grant_type: "refresh_token", refresh_token: rt0 }, true);
    assert.equal(r2.status, 200, "the old refresh token still works");
    const r3 = await token(TENANT_B, { grant_type: "refresh_token", refresh_token: rt1 });
    assert.equal(r3.status, 200);
    assert.equal(new Set([rt0, rt1, r2.body.refresh_token, r3.body.refresh_token]).size, 4);
    assert.deepEqual(entra.issuedRefreshTokens(TENANT_B).slice(-4), [rt0, rt1, r2.body.refresh_token, r3.body.refresh_token]);
    const after = entra.tokenCount(TENANT_B);
    assert.equal(after.refreshToken - before.refreshToken, 3);
    assert.equal(after.total - before.total, 3);

    const tokenB = await entra.verifyAccessToken(String(r3.body.access_token));
    assert.equal(tokenB?.tenantId, TENANT_B);
    assert.equal(tokenB?.oid, USER_B.oid);

    // A refresh token is bound to its tenant and to the 90 day inactivity limit.
    assertEntraError(await token(TENANT_A, { grant_type: "refresh_token", refresh_token: rt1 }), 400, "invalid_grant", 700005);
    clock += 91 * 24 * 3600_000;
    assertEntraError(await token(TENANT_B, { grant_type: "refresh_token", refresh_token: String(r3.body.refresh_token) }), 400, "invalid_grant", 700082);
  });

  it("gives no refresh token without offline_access or with omitRefreshToken, and one resource per token request", async () => {
    const noOffline = await signIn(TENANT_A, {}, `${DEFENDER_RESOURCE}/.default openid profile`);
    assert.equal(noOffline.status, 200);
    assert.equal(noOffline.body.refresh_token, undefined);
    const omitted = await signIn(TENANT_A, { omitRefreshToken: true });
    assert.equal(omitted.status, 200);
    assert.equal(omitted.body.refresh_token, undefined);
    assert.ok(omitted.body.id_token);

    const ok = await signIn(TENANT_A);
    const twoResources = await token(TENANT_A, {
      grant_type: "refresh_token",
      refresh_token: String(ok.body.refresh_token),
      scope: `${DEFENDER_RESOURCE}/.default https://graph.microsoft.com/User.Read`,
    });
    assertEntraError(twoResources, 400, "invalid_scope", 28000);
    const graph = await token(TENANT_A, { grant_type: "refresh_token", refresh_token: String(ok.body.refresh_token), scope: "https://graph.microsoft.com/.default" });
    assert.equal(graph.status, 200);
    assert.equal(decodeJwt(String(graph.body.access_token)).aud, "https://graph.microsoft.com");
  });

  it("issues tokens of another tenant when told a different tenant signed in", async () => {
    const answer = await signIn(TENANT_A, { idTokenTenant: TENANT_B, user: USER_B });
    assert.equal(answer.status, 200);
    const idToken = decodeJwt(String(answer.body.id_token));
    assert.equal(idToken.tid, TENANT_B);
    assert.equal(idToken.iss, `${entra.url}/${TENANT_B}/v2.0`);
    assert.equal(idToken.oid, USER_B.oid);
  });

  it("lets the user's home tenant decide with /organizations", async () => {
    const { verifier, challenge } = pkce();
    const html = await (await fetch(authorizeUrl("organizations", challenge))).text();
    assert.ok(html.includes(USER_A.upn) && html.includes(USER_B.upn));
    const requestId = /name="request" value="([^"]+)"/.exec(html)![1]!;
    const decision = await fetch(`${entra.url}/organizations/oauth2/v2.0/authorize/decision`, {
      method: "POST",
      redirect: "manual",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ request: requestId, user: `${TENANT_B}|${USER_B.oid}`, decision: "accept" }),
    });
    const code = new URL(decision.headers.get("location")!).searchParams.get("code")!;
    const answer = await token("organizations", { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: verifier });
    assert.equal(answer.status, 200);
    assert.equal(decodeJwt(String(answer.body.id_token)).tid, TENANT_B);
  });

  it("rejects bad client credentials with Entra's codes", async () => {
    const ok = await signIn(TENANT_A);
    const rt = String(ok.body.refresh_token);
    assertEntraError(await token(TENANT_A, { grant_type: "refresh_token", refresh_token: rt, client_secret: "wrong-secret-value" }), 401, "invalid_client", 7000215);
    const noSecret = await fetch(`${entra.url}/${TENANT_A}/oauth2/v2.0/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: rt, client_id: CLIENT_ID }),
    });
    assertEntraError({ status: noSecret.status, body: (await noSecret.json()) as Record<string, unknown> }, 401, "invalid_client", 7000218);
    assertEntraError(
      await token(TENANT_A, { grant_type: "refresh_token", refresh_token: rt, client_id: "99999999-2222-3333-4444-555555555555" }),
      400,
      "unauthorized_client",
      700016,
    );
    assertEntraError(await token(TENANT_A, { grant_type: "password", username: "u", password: "p" }), 400, "unsupported_grant_type", 70003);

    const expiring = new FakeEntra({ certs });
    await expiring.start();
    try {
      expiring.registerApp({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [REDIRECT_URI] });
      expiring.addTenant(TENANT_A);
      expiring.expireClientSecret();
      const res = await fetch(`${expiring.url}/${TENANT_A}/oauth2/v2.0/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: rt, client_id: CLIENT_ID, client_secret: CLIENT_SECRET }),
      });
      assertEntraError({ status: res.status, body: (await res.json()) as Record<string, unknown> }, 401, "invalid_client", 7000222);
    } finally {
      await expiring.stop();
    }
  });

  it("fails refresh-token redemptions of a revoked tenant with the chosen AADSTS code", async () => {
    const tenant = "dddddddd-0000-4000-8000-00000000000d";
    entra.addTenant(tenant);
    const rt = String((await signIn(tenant)).body.refresh_token);
    const cases: Array<[number, string]> = [
      [70043, "invalid_grant"],
      [700082, "invalid_grant"],
      [50173, "invalid_grant"],
      [65001, "invalid_grant"],
      [70008, "invalid_grant"],
      [50076, "interaction_required"],
      [53003, "interaction_required"],
      [700016, "unauthorized_client"],
    ];
    for (const [code, error] of cases) {
      entra.revokeTenant(tenant, code);
      const answer = await token(tenant, { grant_type: "refresh_token", refresh_token: rt });
      assertEntraError(answer, 400, error, code);
      if (code === 65001) assert.equal(answer.body.suberror, "consent_required");
    }
    entra.restoreTenant(tenant);
    assert.equal((await token(tenant, { grant_type: "refresh_token", refresh_token: rt })).status, 200);

    entra.missingServicePrincipal(tenant);
    assertEntraError(await token(tenant, { grant_type: "refresh_token", refresh_token: rt }), 400, "invalid_resource", 500011);
    entra.restoreTenant(tenant);
    assert.ok(entra.tokenCount(tenant).errors >= cases.length + 1);
  });

  it("injects transient failures", async () => {
    const rt = String((await signIn(TENANT_A)).body.refresh_token);
    entra.failNext(2, { status: 503, retryAfterSec: 5 });
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${entra.url}/${TENANT_A}/oauth2/v2.0/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: rt, client_id: CLIENT_ID, client_secret: CLIENT_SECRET }),
      });
      assert.equal(res.headers.get("retry-after"), "5");
      assertEntraError({ status: res.status, body: (await res.json()) as Record<string, unknown> }, 503, "temporarily_unavailable", 90033);
    }
    entra.failNext(1, { status: 500, html: true });
    const html = await fetch(`${entra.url}/${TENANT_A}/oauth2/v2.0/token`, { method: "POST" });
    assert.equal(html.status, 500);
    assert.match(html.headers.get("content-type") ?? "", /^text\/html/);
    await html.body?.cancel();
    assert.equal((await token(TENANT_A, { grant_type: "refresh_token", refresh_token: rt })).status, 200);
  });

  it("works with oauth4webapi, the app's OAuth client, end to end", async () => {
    const issuer = new URL(`${entra.url}/${TENANT_A}/v2.0`);
    const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer));
    const client: oauth.Client = { client_id: CLIENT_ID };
    const auth = oauth.ClientSecretPost(CLIENT_SECRET);
    const verifier = oauth.generateRandomCodeVerifier();
    const state = oauth.generateRandomState();
    const nonce = oauth.generateRandomNonce();
    const url = new URL(as.authorization_endpoint!);
    url.search = new URLSearchParams({
      client_id: CLIENT_ID,
      redirect_uri: REDIRECT_URI,
      response_type: "code",
      scope: SCOPE,
      state,
      nonce,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
    }).toString();
    const callback = new URL(await entra.consent(url.href));
    const params = oauth.validateAuthResponse(as, client, callback, state);
    const response = await oauth.authorizationCodeGrantRequest(as, client, auth, params, REDIRECT_URI, verifier);
    const result = await oauth.processAuthorizationCodeResponse(as, client, response, { expectedNonce: nonce, requireIdToken: true });
    assert.equal(oauth.getValidatedIdTokenClaims(result)?.tid, TENANT_A);
    assert.ok(result.refresh_token);
    const refreshed = await oauth.processRefreshTokenResponse(as, client, await oauth.refreshTokenGrantRequest(as, client, auth, result.refresh_token));
    assert.ok(refreshed.refresh_token && refreshed.refresh_token !== result.refresh_token);
  });

  it("remembers every secret it issued or received, for log-leak assertions", async () => {
    const { verifier, challenge } = pkce();
    const code = new URL(await entra.consent(authorizeUrl(TENANT_A, challenge))).searchParams.get("code")!;
    const answer = await token(TENANT_A, { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: verifier });
    const seen = new Set(entra.secretsSeen());
    for (const value of [CLIENT_SECRET, code, verifier, answer.body.access_token, answer.body.refresh_token, answer.body.id_token]) {
      assert.ok(seen.has(String(value)));
    }
    // Request logs hold no secrets.
    const log = JSON.stringify(entra.requestLog);
    assert.ok(![...seen].some((s) => log.includes(s)));
  });
});

describe("FakeEntra: admin consent, client credentials and client assertions", () => {
  const entra = new FakeEntra({ certs });
  const TENANT = "cccccccc-0000-4000-8000-00000000000c";
  const ISSUER = "https://login.example.test/dddddddd-0000-4000-8000-00000000000d/v2.0";
  const SUBJECT = randomUUID();
  const fic = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const certKey = generateKeyPairSync("rsa", { modulusLength: 2048 });
  let certDer: Buffer;

  async function token(params: Record<string, string>, tenant = TENANT): Promise<TokenAnswer> {
    const res = await fetch(`${entra.url}/${tenant}/oauth2/v2.0/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: CLIENT_ID, ...params }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }
  const cc = (auth: Record<string, string>, scope = `${DEFENDER_RESOURCE}/.default`, tenant = TENANT) =>
    token({ grant_type: "client_credentials", scope, ...auth }, tenant);
  const assertion = (jwt: string) => ({ client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", client_assertion: jwt });
  const nowSec = () => Math.floor(Date.now() / 1000);
  const federated = (claims: Record<string, unknown>, expiresIn = 3600) =>
    new SignJWT({ iss: ISSUER, sub: SUBJECT, aud: "api://AzureADTokenExchange", iat: nowSec(), exp: nowSec() + expiresIn, ...claims })
      .setProtectedHeader({ alg: "RS256", typ: "JWT" })
      .sign(fic.privateKey);
  const certificate = (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) =>
    new SignJWT({
      iss: CLIENT_ID,
      sub: CLIENT_ID,
      aud: `${entra.url}/${TENANT}/oauth2/v2.0/token`,
      jti: randomUUID(),
      iat: nowSec(),
      exp: nowSec() + 600,
      ...claims,
    })
      .setProtectedHeader({ alg: "PS256", typ: "JWT", "x5t#S256": createHash("sha256").update(certDer).digest("base64url"), ...header })
      .sign(certKey.privateKey);
  function assertCode(answer: TokenAnswer, aadsts: number): void {
    assert.deepEqual(answer.body.error_codes, [aadsts], JSON.stringify(answer.body));
  }

  before(async () => {
    await entra.start();
    entra.registerApp({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [REDIRECT_URI] });
    entra.addTenant(TENANT);
    entra.trustIssuer(ISSUER, fic.publicKey);
    entra.addFederatedCredential(CLIENT_ID, { name: "mi", issuer: ISSUER, subject: SUBJECT, audiences: ["api://AzureADTokenExchange"] });
    const forgeKey = forge.pki.privateKeyFromPem(certKey.privateKey.export({ type: "pkcs1", format: "pem" }).toString());
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
    cert.serialNumber = "01";
    cert.validity.notBefore = new Date(Date.now() - 60_000);
    cert.validity.notAfter = new Date(Date.now() + 24 * 3600_000);
    cert.setSubject([{ name: "commonName", value: "collector" }]);
    cert.setIssuer([{ name: "commonName", value: "collector" }]);
    cert.sign(forgeKey, forge.md.sha256.create());
    certDer = Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), "binary");
    entra.addCertificate(CLIENT_ID, certDer);
  });
  after(() => entra.stop());

  it("admin consent redirects back with admin_consent=True, tenant, scope and state, and creates the service principal with the app roles", async () => {
    const url = new URL(`${entra.url}/${TENANT}/v2.0/adminconsent`);
    url.searchParams.set("client_id", CLIENT_ID);
    url.searchParams.set("scope", `${DEFENDER_RESOURCE}/.default`);
    url.searchParams.set("redirect_uri", REDIRECT_URI);
    url.searchParams.set("state", "state-789");
    assertCode(await cc({ client_secret: CLIENT_SECRET }), 7000229);
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /Alert\.Read\.All/);
    const back = new URL(entra.adminConsent(url.href));
    assert.equal(back.origin + back.pathname, REDIRECT_URI);
    assert.deepEqual(Object.fromEntries(back.searchParams), { admin_consent: "True", tenant: TENANT, scope: `${DEFENDER_RESOURCE}/.default`, state: "state-789" });
    assert.ok(entra.hasServicePrincipal(TENANT, CLIENT_ID));
    const declined = new URL(entra.adminConsent(url.href, { decision: "cancel" }));
    assert.equal(declined.searchParams.get("error"), "access_denied");
    const common = new URL(url.href.replace(`/${TENANT}/`, "/common/"));
    assert.throws(() => entra.adminConsent(common.href), /AADSTS90002/);
  });

  it("client credentials give an app-only token with the granted roles; Defender refuses one without them", async () => {
    const answer = await cc({ client_secret: CLIENT_SECRET });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const verified = await entra.verifyAccessToken(String(answer.body.access_token));
    assert.deepEqual([verified?.idtyp, verified?.roles, verified?.scp], ["app", ["Alert.Read.All"], ""]);
    const authenticate = defenderAuthenticator(entra);
    assert.deepEqual(await authenticate(String(answer.body.access_token)), { tenantId: TENANT });
    entra.delayAppAccess(TENANT, CLIENT_ID, [65001, 7000229, "no-roles"]);
    assertCode(await cc({ client_secret: CLIENT_SECRET }), 65001);
    assertCode(await cc({ client_secret: CLIENT_SECRET }), 7000229);
    const noRoles = await cc({ client_secret: CLIENT_SECRET });
    assert.equal(noRoles.status, 200);
    assert.match(String((await authenticate(String(noRoles.body.access_token)))?.forbidden), /Alert\.Read\.All/);
    assertCode(await cc({ client_secret: CLIENT_SECRET }, `${DEFENDER_RESOURCE}/Alert.Read`), 1002012);
    assertCode(await cc({ client_secret: CLIENT_SECRET }, `${DEFENDER_RESOURCE}/.default`, "common"), 9001023);
    assert.ok(entra.appTokensIssued(TENANT).includes(String(answer.body.access_token)));
  });

  it("accepts a federated assertion and rejects wrong issuer, audience, subject, an expired one and a bad signature with Entra's codes", async () => {
    assert.equal((await cc(assertion(await federated({})))).status, 200);
    const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const cases: [string, Promise<string>, number][] = [
      ["issuer", federated({ iss: "https://elsewhere.example/v2.0" }), 700211],
      ["audience", federated({ aud: "api://AzureADTokenExchangeUSGov" }), 700212],
      ["subject", federated({ sub: randomUUID() }), 700213],
      ["expired", federated({}, -60), 700024],
      ["signature", new SignJWT({ iss: ISSUER, sub: SUBJECT, aud: "api://AzureADTokenExchange", exp: nowSec() + 600 }).setProtectedHeader({ alg: "RS256" }).sign(other.privateKey), 700027],
    ];
    for (const [what, jwt, code] of cases) {
      const answer = await cc(assertion(await jwt));
      assert.equal(answer.body.error, "invalid_client", what);
      assertCode(answer, code);
    }
    entra.federatedCredentialInactiveFor(CLIENT_ID, 1);
    assertCode(await cc(assertion(await federated({}))), 70021);
    assert.equal((await cc(assertion(await federated({})))).status, 200);
    assert.ok(entra.assertionsSeen().length >= 8);
  });

  it("accepts a PS256 certificate assertion by x5t#S256, and rejects an unknown certificate, another audience and another issuer", async () => {
    assert.equal((await cc(assertion(await certificate()))).status, 200);
    assertCode(await cc(assertion(await certificate({}, { "x5t#S256": "A".repeat(43) }))), 700027);
    assertCode(await cc(assertion(await certificate({ aud: `${entra.url}/common/oauth2/v2.0/token` }))), 50013);
    assertCode(await cc(assertion(await certificate({ iss: randomUUID() }))), 700021);
    assert.ok(entra.requestLog.some((r) => r.clientAuth === "certificate" && r.status === 200));
  });
});
