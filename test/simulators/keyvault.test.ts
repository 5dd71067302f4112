import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { constants, createHash, verify as verifySignature, X509Certificate } from "node:crypto";
import { DefaultAzureCredential } from "@azure/identity";
import { CryptographyClient } from "@azure/keyvault-keys";
import { SecretClient } from "@azure/keyvault-secrets";
import { loadLoopbackDns, testCerts } from "../../simulators/https.js";
import { FakeKeyVault } from "../../simulators/keyvault.js";
import { FakeManagedIdentity } from "../../simulators/managed-identity.js";

// Proof that the real SDKs (SecretClient + DefaultAzureCredential -> MSAL App Service managed
// identity) work against the fakes, and a check of the quirks the app relies on.

loadLoopbackDns();
const certs = testCerts();
if (!process.env.NODE_EXTRA_CA_CERTS) {
  // Run outside run-tests.js: trust the local CA in-process instead.
  tls.setDefaultCACertificates([...tls.getCACertificates("default"), certs.caPem]);
}

function statusOf(err: unknown): number | undefined {
  return (err as { statusCode?: number }).statusCode;
}

async function rejectsWith(promise: Promise<unknown>, status: number): Promise<Record<string, unknown>> {
  try {
    await promise;
  } catch (err) {
    assert.equal(statusOf(err), status, String(err));
    return err as Record<string, unknown>;
  }
  assert.fail(`expected HTTP ${status}`);
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of iterable) out.push(x);
  return out;
}

describe("FakeKeyVault with the real SecretClient and DefaultAzureCredential", () => {
  const identity = new FakeManagedIdentity();
  const vault = new FakeKeyVault({
    certs,
    host: "test.vault.localhost",
    resource: "https://vault.localhost",
    purgeProtection: true,
    verifyToken: (token, audience) => identity.isValid(token, audience),
  });
  const other = new FakeKeyVault({
    certs,
    host: "other.vault.localhost",
    lagReads: 2,
    verifyToken: (token, audience) => identity.isValid(token, audience),
  });
  let restoreEnv: () => void = () => {};
  let client: SecretClient;
  let credential: DefaultAzureCredential;

  before(async () => {
    await Promise.all([identity.start(), vault.start(), other.start()]);
    restoreEnv = identity.applyEnv();
    credential = new DefaultAzureCredential();
    client = new SecretClient(vault.url, credential, { retryOptions: { maxRetries: 0 } });
  });

  after(async () => {
    restoreEnv();
    await Promise.all([identity.stop(), vault.stop(), other.stop()]);
  });

  it("answers the challenge, gets a managed identity token and sets and gets a secret", async () => {
    assert.match(vault.url, /^https:\/\/test\.vault\.localhost:\d+$/);
    const set = await client.setSecret("tenant-a-refresh-token", "rt-1", {
      tags: { tenant: "a" },
      contentType: "application/x-refresh-token",
    });
    assert.equal(set.value, "rt-1");
    assert.match(set.properties.version ?? "", /^[0-9a-f]{32}$/);
    assert.equal(set.properties.vaultUrl, vault.url);
    assert.equal(set.properties.recoveryLevel, "Recoverable");

    const got = await client.getSecret("tenant-a-refresh-token");
    assert.equal(got.value, "rt-1");
    assert.deepEqual(got.properties.tags, { tenant: "a" });
    assert.equal(got.properties.contentType, "application/x-refresh-token");
    // Names are case-insensitive, like the real service.
    assert.equal((await client.getSecret("TENANT-A-REFRESH-TOKEN")).value, "rt-1");

    // The SDK's first request was the bodyless challenge probe.
    const first = vault.requestLog[0]!;
    assert.deepEqual([first.method, first.status, first.authenticated], ["PUT", 401, false]);
    assert.equal(first.apiVersion, "2026-04-01");
    assert.ok(vault.requestLog.slice(1).every((r) => r.authenticated));
    // One token request with the App Service protocol.
    assert.equal(identity.tokensIssued, 1);
    assert.deepEqual(identity.requestLog[0], {
      method: "GET",
      resource: "https://vault.localhost",
      clientId: null,
      apiVersion: "2019-08-01",
      status: 200,
    });
  });

  it("keeps versions, lists them page by page and refuses disabled versions", async () => {
    const name = "tenant-b-refresh-token";
    const v1 = (await client.setSecret(name, "b-1")).properties.version!;
    const v2 = (await client.setSecret(name, "b-2")).properties.version!;
    const v3 = (await client.setSecret(name, "b-3")).properties.version!;
    assert.equal((await client.getSecret(name)).value, "b-3");
    assert.equal((await client.getSecret(name, { version: v1 })).value, "b-1");

    const pages: string[][] = [];
    for await (const page of client.listPropertiesOfSecretVersions(name).byPage({ maxPageSize: 2 })) {
      pages.push(page.map((p) => p.version!));
    }
    assert.deepEqual(pages, [[v1, v2], [v3]]);
    // The second page came from following nextLink.
    assert.equal(vault.requestLog.filter((r) => r.path === `/secrets/${name}/versions` && r.status === 200).length, 2);

    for (const v of [v1, v2]) await client.updateSecretProperties(name, v, { enabled: false });
    const err = await rejectsWith(client.getSecret(name, { version: v1 }), 403);
    assert.equal((err.code as string) ?? "", "Forbidden");
    assert.match(String(err.message), /disabled secret/);
    assert.equal((await client.getSecret(name)).value, "b-3");
    assert.deepEqual(
      vault.inspect(name)?.versions.map((v) => [v.value, v.enabled]),
      [
        ["b-1", false],
        ["b-2", false],
        ["b-3", true],
      ],
    );

    const names = (await collect(client.listPropertiesOfSecrets())).map((p) => p.name);
    assert.ok(names.includes(name));
    await rejectsWith(client.getSecret("no-such-secret"), 404);
  });

  it("soft-deletes, answers 409 to a set on the deleted name, recovers, and refuses purge under purge protection", async () => {
    const name = "tenant-c-refresh-token";
    const old = (await client.setSecret(name, "c-1")).properties.version!;
    await client.setSecret(name, "c-2");
    await client.updateSecretProperties(name, old, { enabled: false });

    const deletePoller = await client.beginDeleteSecret(name);
    assert.ok(deletePoller.isDone(), "the delete poller finishes inside beginDeleteSecret");
    const deleted = await deletePoller.pollUntilDone();
    assert.equal(deleted.properties.recoveryId, `${vault.url}/deletedsecrets/${name}`);
    assert.ok(deleted.properties.scheduledPurgeDate instanceof Date);
    assert.equal(vault.inspect(name)?.deleted, true);

    await rejectsWith(client.getSecret(name), 404);
    const conflict = await rejectsWith(client.setSecret(name, "c-3"), 409);
    assert.match(String(conflict.message), /deleted but recoverable state, and its name cannot be reused/);
    assert.equal((await client.getDeletedSecret(name)).name, name);
    assert.ok((await collect(client.listDeletedSecrets())).some((d) => d.name === name));

    await rejectsWith(client.purgeDeletedSecret(name), 403);

    const recoverPoller = await client.beginRecoverDeletedSecret(name);
    assert.ok(recoverPoller.isDone());
    await recoverPoller.pollUntilDone();
    assert.equal((await client.getSecret(name)).value, "c-2");
    // Recovered versions keep their enabled flags.
    await rejectsWith(client.getSecret(name, { version: old }), 403);
    assert.equal((await client.setSecret(name, "c-3")).value, "c-3");
    assert.equal(vault.inspect(name)?.versions.length, 3);
  });

  it("purges without purge protection, and pollers wait out lagging reads", async () => {
    const lagging = new SecretClient(other.url, credential, { retryOptions: { maxRetries: 0 } });
    const name = "lagging";
    await lagging.setSecret(name, "x");
    const deletePoller = await lagging.beginDeleteSecret(name, { intervalInMs: 1 });
    assert.equal(deletePoller.isDone(), false, "the deleted secret is not visible yet");
    await deletePoller.pollUntilDone();
    assert.equal(other.inspect(name)?.deleted, true);

    const recoverPoller = await lagging.beginRecoverDeletedSecret(name, { intervalInMs: 1 });
    await recoverPoller.pollUntilDone();
    assert.equal((await lagging.getSecret(name)).value, "x");

    await (await lagging.beginDeleteSecret(name, { intervalInMs: 1 })).pollUntilDone();
    await lagging.purgeDeletedSecret(name);
    assert.equal(other.inspect(name), undefined);
    assert.equal((await lagging.setSecret(name, "fresh")).value, "fresh");
    // The MSAL token cache is process-wide: the second vault reused the first token.
    assert.equal(identity.tokensIssued, 1);
  });

  it("injects failures", async () => {
    vault.failNext(1, 503);
    await rejectsWith(client.getSecret("tenant-a-refresh-token"), 503);
    vault.failNext(1, 429, { retryAfterSec: 7 });
    await rejectsWith(client.getSecret("tenant-a-refresh-token"), 429);
    assert.equal((await client.getSecret("tenant-a-refresh-token")).value, "rt-1");
  });

  it("signs with a certificate's key through the real CryptographyClient (PS256 and RS256), and never hands out the private key", async () => {
    const cert = vault.createCertificate("client-cert", "CN=collector");
    assert.match(cert.keyId, new RegExp(`^${vault.url}/keys/client-cert/[0-9a-f]{32}$`));
    assert.equal(cert.thumbprintSha256, createHash("sha256").update(cert.certificateDer).digest("base64url"));
    const publicKey = new X509Certificate(cert.certificateDer).publicKey;
    const crypto = new CryptographyClient(cert.keyId, credential, { retryOptions: { maxRetries: 0 } });
    const data = Buffer.from("header.payload");
    const pss = await crypto.signData("PS256", data);
    assert.ok(verifySignature("sha256", data, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, pss.result), "a valid PS256 signature");
    const pkcs1 = await crypto.signData("RS256", data);
    assert.ok(verifySignature("sha256", data, publicKey, pkcs1.result), "a valid RS256 signature");
    assert.equal(pss.keyID, cert.keyId);
    const key = vault.requestLog.filter((r) => r.path.startsWith("/keys/client-cert/"));
    assert.ok(key.some((r) => r.method === "GET" && r.status === 200), "the SDK read the public key");
    assert.equal(vault.signCount("client-cert"), 2);
    assert.ok(vault.secretsSeen().some((s) => s.includes("PRIVATE KEY")), "the private key is known to the leak check");
    const unknown = new CryptographyClient(`${vault.url}/keys/client-cert/ffffffffffffffffffffffffffffffff`, credential, { retryOptions: { maxRetries: 0 } });
    await rejectsWith(unknown.signData("PS256", data), 404);
  });

  it("challenges requests without a token and rejects tokens it did not get from the identity", async () => {
    const bare = await fetch(`${vault.url}/secrets/tenant-a-refresh-token/?api-version=7.6`);
    assert.equal(bare.status, 401);
    assert.equal(
      bare.headers.get("www-authenticate"),
      `Bearer authorization="https://login.microsoftonline.com/${vault.tenantId}", resource="https://vault.localhost"`,
    );
    assert.match(((await bare.json()) as { error: { message: string } }).error.message, /^AKV10000/);

    const forged = await fetch(`${vault.url}/secrets/tenant-a-refresh-token/?api-version=7.6`, {
      headers: { authorization: "Bearer eyJhbGciOiJub25lIn0.e30." },
    });
    assert.equal(forged.status, 401);
    await forged.body?.cancel();

    const wrongAudience = await credential.getToken("https://storage.azure.com/.default");
    const res = await fetch(`${vault.url}/secrets/tenant-a-refresh-token/?api-version=7.6`, {
      headers: { authorization: `Bearer ${wrongAudience.token}` },
    });
    assert.equal(res.status, 401);
    await res.body?.cancel();

    const token = await credential.getToken("https://vault.localhost/.default");
    const ok = await fetch(`${vault.url}/secrets/tenant-a-refresh-token/?api-version=7.6`, {
      headers: { authorization: `Bearer ${token.token}` },
    });
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as { value: string }).value, "rt-1");

    const noVersion = await fetch(`${vault.url}/secrets/tenant-a-refresh-token/`, { headers: { authorization: `Bearer ${token.token}` } });
    assert.equal(noVersion.status, 400);
    await noVersion.body?.cancel();
  });
});

describe("FakeManagedIdentity protocol", () => {
  const identity = new FakeManagedIdentity({ userAssignedClientIds: ["11111111-1111-1111-1111-111111111111"] });
  before(() => identity.start());
  after(() => identity.stop());

  const get = (query: string, header?: string) =>
    fetch(`${identity.endpoint}?${query}`, header === undefined ? {} : { headers: { "X-IDENTITY-HEADER": header } });

  it("issues tokens for the resource, with expires_on in unix seconds as a string", async () => {
    const res = await get("api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net", identity.identityHeader);
    assert.equal(res.status, 200);
    const body = (await res.json()) as Record<string, string>;
    assert.equal(body.token_type, "Bearer");
    assert.equal(body.resource, "https://vault.azure.net");
    assert.equal(body.client_id, identity.clientId);
    assert.match(body.expires_on!, /^\d+$/);
    assert.ok(identity.isValid(body.access_token!, "https://vault.azure.net"));
    assert.ok(identity.isValid(body.access_token!, "https://vault.azure.net/"));
    assert.equal(identity.isValid(body.access_token!, "https://vault.localhost"), false);
    assert.equal(identity.verify(body.access_token!)?.oid, identity.principalId);

    const ua = await get("api-version=2019-08-01&resource=r&client_id=11111111-1111-1111-1111-111111111111", identity.identityHeader);
    assert.equal(((await ua.json()) as Record<string, string>).client_id, "11111111-1111-1111-1111-111111111111");
  });

  it("issues the token-exchange token a federated credential trusts: v2 issuer, subject = principal id", async () => {
    identity.authorityHost = "https://login.example.test";
    const res = await get("api-version=2019-08-01&resource=api://AzureADTokenExchange", identity.identityHeader);
    const body = (await res.json()) as Record<string, string>;
    const claims = identity.verify(body.access_token!, "api://AzureADTokenExchange");
    assert.equal(claims?.iss, `https://login.example.test/${identity.tenantId}/v2.0`);
    assert.equal(identity.exchangeIssuer, claims?.iss);
    assert.equal(claims?.sub, identity.principalId);
    assert.ok(identity.secretsSeen().includes(body.access_token!));
  });

  it("rejects a missing or wrong header, a wrong api-version, an unknown client id, and injected failures", async () => {
    const cases: Array<[string, string | undefined, number]> = [
      ["api-version=2019-08-01&resource=r", undefined, 400],
      ["api-version=2019-08-01&resource=r", "wrong", 401],
      ["api-version=2017-09-01&resource=r", identity.identityHeader, 400],
      ["api-version=2019-08-01", identity.identityHeader, 400],
      ["api-version=2019-08-01&resource=r&client_id=nope", identity.identityHeader, 400],
    ];
    for (const [query, header, status] of cases) {
      const res = await get(query, header);
      assert.equal(res.status, status, `${query} ${header}`);
      assert.equal(typeof ((await res.json()) as { message: string }).message, "string");
    }
    identity.failNext(1, 500);
    assert.equal((await get("api-version=2019-08-01&resource=r", identity.identityHeader)).status, 500);
    assert.equal((await get("api-version=2019-08-01&resource=r", identity.identityHeader)).status, 200);
  });
});
