/**
 * Operator identity: every registered HTTP route is either public (the consent routes,
 * health, the console's static files) or an operator route with a role decision, and every
 * operator route answers each kind of caller as it should: no token, an expired one, one for
 * another audience, from another issuer or another tenant, and Reader, Operator and Admin, as
 * applications (client credentials) and as users (code + PKCE through the console's
 * registration). A function key grants nothing. The matrix is built from the routes the host
 * really registered, so a new route without a decision fails here.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { operatorRoutes } from "../shared/operator/route.js";
import type { Role } from "../simulators/operators.js";
import { loadFunctions } from "./support/functions.js";
import { type Harness, startHarness } from "./support/harness.js";

/** Routes anyone may call; everything else must be an operator route. */
const PUBLIC = new Set(["consent-start", "consent-callback", "health", "console"]);

/** The decision for each operator route: the lowest role that may call it. */
const EXPECTED: Record<string, Role> = {
  "tenants-list": "Reader",
  "tenants-get": "Reader",
  "alerts-list": "Reader",
  "alerts-get": "Reader",
  "health-details": "Reader",
  "tenants-purge": "Reader",
  "tenants-create": "Operator",
  "tenants-pull": "Operator",
  "tenants-reconcile": "Operator",
  "tenants-export": "Operator",
  "destinations-replay": "Operator",
  "tenants-delete": "Admin",
  "tenants-patch": "Admin",
  "destinations-enable": "Admin",
  "audit-list": "Admin",
};

const RANK: Record<Role, number> = { Reader: 1, Operator: 2, Admin: 3 };

/** A tenant nobody registered: authorized calls about it change nothing (404 / 422). */
const NOBODY = "0badc0de-0000-4000-8000-00000000abcd";

interface Probe {
  method: string;
  path: string;
  params?: Record<string, string>;
  body?: string;
  /** What an authorized caller gets (nothing changes). */
  authorized: number;
}

const PROBES: Record<string, Probe> = {
  "tenants-list": { method: "GET", path: "tenants", authorized: 200 },
  "tenants-get": { method: "GET", path: `tenants/${NOBODY}`, params: { tenantId: NOBODY }, authorized: 404 },
  "alerts-list": { method: "GET", path: `alerts?tenantId=${NOBODY}`, authorized: 200 },
  "alerts-get": { method: "GET", path: `tenants/${NOBODY}/alerts/a1`, params: { tenantId: NOBODY, alertId: "a1" }, authorized: 404 },
  "health-details": { method: "GET", path: "health/details", authorized: 200 },
  "tenants-purge": { method: "GET", path: `tenants/${NOBODY}/purge`, params: { tenantId: NOBODY }, authorized: 404 },
  // Entra does not know the tenant: 422, nothing registered.
  "tenants-create": { method: "POST", path: "tenants", body: JSON.stringify({ tenantId: NOBODY }), authorized: 422 },
  "tenants-pull": { method: "POST", path: `tenants/${NOBODY}/pull`, params: { tenantId: NOBODY }, authorized: 404 },
  "tenants-reconcile": {
    method: "POST",
    path: `tenants/${NOBODY}/reconcile`,
    params: { tenantId: NOBODY },
    body: JSON.stringify({ lookbackHours: 2 }),
    authorized: 404,
  },
  "tenants-export": { method: "GET", path: `tenants/${NOBODY}/export`, params: { tenantId: NOBODY }, authorized: 404 },
  "tenants-delete": { method: "DELETE", path: `tenants/${NOBODY}`, params: { tenantId: NOBODY }, authorized: 404 },
  "tenants-patch": { method: "PATCH", path: `tenants/${NOBODY}`, params: { tenantId: NOBODY }, body: JSON.stringify({ destinations: null }), authorized: 404 },
  // The harness configures no destination: an authorized caller learns that, nothing changes.
  "destinations-enable": { method: "POST", path: "destinations/nowhere/enable", params: { name: "nowhere" }, authorized: 404 },
  "destinations-replay": {
    method: "POST",
    path: "destinations/nowhere/replay",
    params: { name: "nowhere" },
    body: JSON.stringify({ since: "2026-01-01T00:00:00Z" }),
    authorized: 404,
  },
  "audit-list": { method: "GET", path: "audit", authorized: 200 },
};

let h: Harness;
const tokens = {} as Record<"expired" | "audience" | "issuer" | "otherTenant" | "signature" | "noScope" | "userNoRole" | "appNoRole", string>;
const appTokens = {} as Record<Role, string>;
const userTokens = {} as Record<Role, string>;

before(async () => {
  h = await startHarness();
  const { operators, entra } = h;
  const now = Math.floor(Date.now() / 1000);
  const base = {
    aud: operators.apiClientId,
    iss: `${entra.url}/${operators.tenantId}/v2.0`,
    tid: operators.tenantId,
    oid: operators.users.Admin.oid,
    azp: operators.consoleClientId,
    preferred_username: operators.users.Admin.upn,
    scp: "Operator.Access",
    roles: ["Admin"],
    iat: now - 60,
    nbf: now - 60,
    exp: now + 3600,
    ver: "2.0",
  };
  // Each differs from a valid Admin token in one way only.
  tokens.expired = await entra.issueToken({ ...base, iat: now - 7200, nbf: now - 7200, exp: now - 600 });
  tokens.audience = await entra.issueToken({ ...base, aud: randomUUID() });
  tokens.issuer = await entra.issueToken({ ...base, iss: `https://sts.windows.net/${operators.tenantId}/` });
  const customer = h.newTenant();
  tokens.otherTenant = await entra.issueToken({ ...base, tid: customer, iss: `${entra.url}/${customer}/v2.0` });
  tokens.noScope = await entra.issueToken({ ...base, scp: "User.Read" });
  const { scp: _scp, roles: _roles, ...appBase } = base;
  tokens.appNoRole = await entra.issueToken({ ...appBase, idtyp: "app" });
  for (const role of ["Reader", "Operator", "Admin"] as const) {
    appTokens[role] = await h.appToken(role);
    userTokens[role] = await h.userToken(role);
  }
  // A user of the MSSP tenant with no operator role: signs in, but may do nothing.
  entra.unassignRoles(operators.apiClientId, operators.users.Reader.oid);
  tokens.userNoRole = await h.userToken("Reader");
  entra.assignRole(operators.apiClientId, operators.users.Reader.oid, "Reader");
  // Signed with a key that is not in the tenant's JWKS: a valid token with its signature swapped.
  const forged = await entra.issueToken(base);
  const other = await h.appToken("Admin");
  tokens.signature = `${forged.split(".").slice(0, 2).join(".")}.${other.split(".")[2]}`;
});

after(async () => {
  await h?.stop();
});

function call(name: string, auth: { bearer?: string; as?: null; headers?: Record<string, string> }) {
  const probe = PROBES[name]!;
  return h.http(name, {
    method: probe.method,
    path: probe.path,
    ...(probe.params ? { params: probe.params } : {}),
    ...(probe.body !== undefined ? { body: probe.body } : {}),
    ...(auth.bearer ? { bearer: auth.bearer } : { as: null }),
    ...(auth.headers ? { headers: { ...(probe.body !== undefined ? { "content-type": "application/json" } : {}), ...auth.headers } } : {}),
  });
}

describe("operator authorization", () => {
  it("has a decision for every HTTP route the host registered: public, or an operator route with a role", async () => {
    const http = [...(await loadFunctions()).values()].filter((fn) => fn.kind === "http");
    for (const fn of http) {
      assert.equal(fn.options.authLevel, "anonymous", `${fn.name}: Functions keys grant nothing; the app authorizes`);
      if (PUBLIC.has(fn.name)) {
        assert.equal(operatorRoutes().has(fn.name), false, `${fn.name} is public`);
        continue;
      }
      const decision = operatorRoutes().get(fn.name);
      assert.ok(decision, `${fn.name} is neither public nor registered through operatorHttp`);
      assert.equal(decision.role, EXPECTED[fn.name], `${fn.name}: role decision (add it to EXPECTED and PROBES)`);
      assert.ok(PROBES[fn.name], `${fn.name} has a probe`);
    }
    assert.deepEqual(
      Object.keys(EXPECTED).sort(),
      http.map((fn) => fn.name).filter((n) => !PUBLIC.has(n)).sort(),
      "every expected route is registered",
    );
  });

  for (const name of Object.keys(EXPECTED)) {
    it(`${name}: 401 for no, expired, foreign-audience, foreign-issuer, other-tenant, forged and scope-less tokens; 403 below ${EXPECTED[name]}; served from ${EXPECTED[name]} up`, async () => {
      const none = await call(name, {});
      assert.equal(none.status, 401, `${name} without a token`);
      assert.equal(none.headers["www-authenticate"], 'Bearer realm="operator-api"');
      assert.equal((none.json as { error: { code: string } }).error.code, "Unauthenticated");
      const keyOnly = await call(name, { headers: { "x-functions-key": h.host.key } });
      assert.equal(keyOnly.status, 401, `${name}: a function key is no credential`);
      for (const [kind, token] of Object.entries(tokens)) {
        if (kind === "userNoRole") continue;
        const result = await call(name, { bearer: token });
        assert.equal(result.status, 401, `${name} with the ${kind} token: ${result.text}`);
        assert.match(result.headers["www-authenticate"] ?? "", /^Bearer realm="operator-api", error="invalid_token"/);
      }
      const noRole = await call(name, { bearer: tokens.userNoRole });
      assert.equal(noRole.status, 403, `${name}: a user without an operator role`);
      assert.equal((noRole.json as { error: { code: string } }).error.code, "NoOperatorRole");
      for (const role of ["Reader", "Operator", "Admin"] as const) {
        const allowed = RANK[role] >= RANK[EXPECTED[name]!];
        for (const [kind, token] of [
          ["app", appTokens[role]],
          ["user", userTokens[role]],
        ] as const) {
          const result = await call(name, { bearer: token });
          if (allowed) {
            assert.equal(result.status, PROBES[name]!.authorized, `${name} as ${role} (${kind}): ${result.text}`);
          } else {
            assert.equal(result.status, 403, `${name} as ${role} (${kind})`);
            assert.equal((result.json as { error: { code: string } }).error.code, "InsufficientRole");
          }
        }
      }
    });
  }

  it("names the problem of a refused token, never the token, and logs the reason only", async () => {
    const expired = await call("tenants-list", { bearer: tokens.expired });
    assert.equal((expired.json as { error: { code: string } }).error.code, "TokenExpired");
    const audience = await call("tenants-list", { bearer: tokens.audience });
    assert.match((audience.json as { error: { message: string } }).error.message, /audience/);
    const malformed = await h.http("tenants-list", { path: "tenants", headers: { authorization: "Bearer not-a-jwt" } });
    assert.equal(malformed.status, 401);
    const basic = await h.http("tenants-list", { path: "tenants", headers: { authorization: "Basic dXNlcjpwYXNz" } });
    assert.equal(basic.status, 401);
    assert.ok(h.logs.some((l) => /operator\.unauthenticated function=tenants-list reason=expired/.test(l)));
    assert.ok(h.logs.some((l) => /operator\.forbidden function=\S+ needs=\w+ has=Reader oid=/.test(l)));
  });

  it("accepts up to 5 minutes of clock skew on exp and nbf, and no more", async () => {
    const { operators, entra } = h;
    const now = Math.floor(Date.now() / 1000);
    const claims = (exp: number, nbf: number) => ({
      aud: operators.apiClientId,
      iss: `${entra.url}/${operators.tenantId}/v2.0`,
      tid: operators.tenantId,
      oid: operators.automation.Reader.servicePrincipalId,
      azp: operators.automation.Reader.clientId,
      idtyp: "app",
      roles: ["Reader"],
      iat: nbf,
      nbf,
      exp,
      ver: "2.0",
    });
    const status = async (exp: number, nbf: number) =>
      (await h.http("tenants-list", { path: "tenants", bearer: await entra.issueToken(claims(exp, nbf)) })).status;
    assert.equal(await status(now - 240, now - 3600), 200, "expired 4 minutes ago");
    assert.equal(await status(now - 360, now - 3600), 401, "expired 6 minutes ago");
    assert.equal(await status(now + 3600, now + 240), 200, "valid in 4 minutes");
    assert.equal(await status(now + 3600, now + 360), 401, "valid in 6 minutes");
  });
});
