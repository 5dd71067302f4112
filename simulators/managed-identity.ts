import { createPublicKey, createSign, createVerify, generateKeyPairSync, type KeyObject, randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { type Listening, listenHttp, sendJson } from "./https.js";

/**
 * Fake of the App Service / Azure Functions local managed identity endpoint, the one
 * `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` point at. @azure/identity 4.x hands managed
 * identity to @azure/msal-node, whose `AppService` source sends:
 *
 *   GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<scope without /.default>[&client_id=<id>]
 *   X-IDENTITY-HEADER: {IDENTITY_HEADER}
 *
 * (plus a meaningless `Content-Type: application/x-www-form-urlencoded`), and expects
 * `{access_token, expires_on: "<unix seconds>", resource, token_type: "Bearer", client_id}`.
 *
 * Process-wide quirks of MSAL worth knowing:
 * - MSAL picks the managed identity source (endpoint URL + header) once per process, on the
 *   first token request, and never re-reads the environment. Use one fake per process, or
 *   restart it with the same `port` and `identityHeader`.
 * - MSAL caches managed identity tokens process-wide (a static cache shared by every
 *   credential instance). All instances of this fake therefore sign with one process-wide
 *   key, so a token cached from an earlier instance still verifies against a later one.
 * - Source selection order is Service Fabric (IDENTITY_ENDPOINT + IDENTITY_HEADER +
 *   IDENTITY_SERVER_THUMBPRINT), App Service, Machine Learning (MSI_ENDPOINT + MSI_SECRET),
 *   Cloud Shell, Azure Arc, IMDS; `applyEnv` removes the variables that would win over us.
 * - `@azure/identity` adds a retry policy that retries 404 and 410 with 0.8 s+ backoff, and the
 *   default pipeline retries 5xx; give the credential `retryOptions: {maxRetries: 0}` when a
 *   test uses `failNext`.
 *
 * Tokens for the token-exchange audience (`api://AzureADTokenExchange`, `...USGov`,
 * `...China`) are what a federated identity credential trusts, shaped like Entra's v2
 * tokens: `iss` `{authorityHost}/{tenant}/v2.0` and `sub` the identity's principal id.
 * Give `publicKey` to the fake Entra (`trustIssuer(exchangeIssuer, publicKey)`).
 */

export interface FakeManagedIdentityOptions {
  port?: number;
  /** Secret the caller must echo in X-IDENTITY-HEADER (random by default). */
  identityHeader?: string;
  /** Client id of the system-assigned identity (random by default). */
  clientId?: string;
  /** Principal (object) id of the system-assigned identity (random by default). */
  principalId?: string;
  /** Client ids of user-assigned identities that may be asked for with `client_id`. */
  userAssignedClientIds?: string[];
  /** Tenant the identity lives in (appears in `tid` and `iss`). */
  tenantId?: string;
  /** Token lifetime in seconds (App Service hands out roughly 24 h tokens). */
  tokenLifetimeSec?: number;
  now?: () => number;
  /** Entra's authority host, for the issuer of exchange tokens (default https://login.microsoftonline.com). */
  authorityHost?: string;
}

export interface ManagedIdentityClaims {
  aud: string;
  iss: string;
  /** The principal (object) id, on exchange tokens. */
  sub?: string;
  tid: string;
  oid: string;
  appid: string;
  idtyp: "app";
  iat: number;
  nbf: number;
  exp: number;
  xms_mirid: string;
}

export interface ManagedIdentityRequest {
  method: string;
  resource: string | null;
  clientId: string | null;
  apiVersion: string | null;
  status: number;
}

interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

let processKey: SigningKey | undefined;
function signingKey(): SigningKey {
  if (!processKey) {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    processKey = { kid: randomUUID(), privateKey, publicKey: createPublicKey(privateKey) };
  }
  return processKey;
}

const b64url = (value: string | Buffer): string => Buffer.from(value).toString("base64url");

/** Environment variables that would make MSAL or DefaultAzureCredential use something other than App Service MI. */
export const INTERFERING_ENV = [
  "IDENTITY_SERVER_THUMBPRINT",
  "MSI_ENDPOINT",
  "MSI_SECRET",
  "IMDS_ENDPOINT",
  "AZURE_CLIENT_ID",
  "AZURE_TENANT_ID",
  "AZURE_CLIENT_SECRET",
  "AZURE_CLIENT_CERTIFICATE_PATH",
  "AZURE_CLIENT_CERTIFICATE_PASSWORD",
  "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
  "AZURE_USERNAME",
  "AZURE_PASSWORD",
  "AZURE_FEDERATED_TOKEN_FILE",
  "AZURE_TOKEN_CREDENTIALS",
  "AZURE_POD_IDENTITY_AUTHORITY_HOST",
  "AZURE_AUTHORITY_HOST",
];

export class FakeManagedIdentity {
  readonly identityHeader: string;
  readonly clientId: string;
  readonly principalId: string;
  readonly tenantId: string;
  readonly userAssignedClientIds: string[];
  tokenLifetimeSec: number;
  now: () => number;
  /** Entra's authority host in the issuer of exchange tokens (the fake Entra's URL in tests). */
  authorityHost: string;
  /** Every request, newest last (no token values). */
  readonly requestLog: ManagedIdentityRequest[] = [];
  private listening: Listening | undefined;
  private readonly port: number;
  private failures: { remaining: number; status: number } = { remaining: 0, status: 500 };
  private issued = 0;
  private readonly seen = new Set<string>();

  constructor(options: FakeManagedIdentityOptions = {}) {
    this.port = options.port ?? 0;
    this.identityHeader = options.identityHeader ?? randomUUID();
    this.clientId = options.clientId ?? randomUUID();
    this.principalId = options.principalId ?? randomUUID();
    this.tenantId = options.tenantId ?? randomUUID();
    this.userAssignedClientIds = options.userAssignedClientIds ?? [];
    this.tokenLifetimeSec = options.tokenLifetimeSec ?? 24 * 3600;
    this.now = options.now ?? Date.now;
    this.authorityHost = options.authorityHost ?? "https://login.microsoftonline.com";
  }

  /** The issuer of this identity's exchange tokens: what a federated identity credential names. */
  get exchangeIssuer(): string {
    return `${this.authorityHost}/${this.tenantId}/v2.0`;
  }

  /** The key every FakeManagedIdentity of this process signs with (an issuer's published key). */
  get publicKey(): KeyObject {
    return signingKey().publicKey;
  }

  /** The principal (object) id behind a client id (the `sub` of its exchange tokens). */
  principalIdOf(clientId?: string): string {
    return !clientId || clientId === this.clientId ? this.principalId : clientId;
  }

  async start(): Promise<void> {
    if (this.listening) return;
    signingKey();
    this.listening = await listenHttp((req, res) => this.handle(req, res), { port: this.port });
  }

  async stop(): Promise<void> {
    const l = this.listening;
    this.listening = undefined;
    await l?.close();
  }

  /** `http://127.0.0.1:PORT/msi/token`, what App Service puts in IDENTITY_ENDPOINT. */
  get endpoint(): string {
    if (!this.listening) throw new Error("FakeManagedIdentity is not started");
    return `${this.listening.url}/msi/token`;
  }

  get env(): { IDENTITY_ENDPOINT: string; IDENTITY_HEADER: string } {
    return { IDENTITY_ENDPOINT: this.endpoint, IDENTITY_HEADER: this.identityHeader };
  }

  /**
   * Puts IDENTITY_ENDPOINT/IDENTITY_HEADER into `env` (default process.env) and removes the
   * variables that would select another credential; returns a function restoring the old values.
   */
  applyEnv(env: NodeJS.ProcessEnv = process.env): () => void {
    const names = ["IDENTITY_ENDPOINT", "IDENTITY_HEADER", ...INTERFERING_ENV];
    const saved = new Map(names.map((n) => [n, env[n]]));
    for (const n of INTERFERING_ENV) delete env[n];
    Object.assign(env, this.env);
    return () => {
      for (const [n, v] of saved) {
        if (v === undefined) delete env[n];
        else env[n] = v;
      }
    };
  }

  /** The next `n` token requests fail with `status` (App Service style JSON error body). */
  failNext(n: number, status = 500): void {
    this.failures = { remaining: n, status };
  }

  /** Every token handed out, for leak checks. */
  secretsSeen(): string[] {
    return [...this.seen];
  }

  /** Number of tokens handed out so far. */
  get tokensIssued(): number {
    return this.issued;
  }

  /**
   * Verifies a token issued by any FakeManagedIdentity in this process: signature, lifetime
   * and, when given, audience (`resource`, compared without a trailing slash).
   */
  verify(token: string, audience?: string): ManagedIdentityClaims | null {
    const parts = token.split(".");
    if (parts.length !== 3) return null;
    const [h, p, s] = parts as [string, string, string];
    try {
      const header = JSON.parse(Buffer.from(h, "base64url").toString("utf8")) as { alg?: string; kid?: string };
      const key = signingKey();
      if (header.alg !== "RS256" || header.kid !== key.kid) return null;
      const verifier = createVerify("RSA-SHA256");
      verifier.update(`${h}.${p}`);
      if (!verifier.verify(key.publicKey, Buffer.from(s, "base64url"))) return null;
      const claims = JSON.parse(Buffer.from(p, "base64url").toString("utf8")) as ManagedIdentityClaims;
      const nowSec = Math.floor(this.now() / 1000);
      if (typeof claims.exp !== "number" || claims.exp <= nowSec) return null;
      if (typeof claims.nbf === "number" && claims.nbf > nowSec + 300) return null;
      if (audience !== undefined && trimSlash(claims.aud) !== trimSlash(audience)) return null;
      return claims;
    } catch {
      return null;
    }
  }

  isValid(token: string, audience?: string): boolean {
    return this.verify(token, audience) !== null;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const resource = url.searchParams.get("resource");
    const clientId = url.searchParams.get("client_id");
    const apiVersion = url.searchParams.get("api-version");
    const { status, body } = this.answer(req, url, resource, clientId, apiVersion);
    this.requestLog.push({ method: req.method ?? "", resource, clientId, apiVersion, status });
    // MSAL sends no body, but drain anyway so keep-alive works.
    req.resume();
    sendJson(res, status, body);
  }

  private answer(
    req: IncomingMessage,
    url: URL,
    resource: string | null,
    clientId: string | null,
    apiVersion: string | null,
  ): { status: number; body: unknown } {
    const fail = (status: number, message: string) => ({ status, body: { statusCode: status, message, correlationId: randomUUID() } });
    if (!/^\/msi\/token\/?$/i.test(url.pathname)) return fail(404, "Not Found");
    if (req.method !== "GET") return fail(405, "Method not allowed");
    const header = req.headers["x-identity-header"];
    if (header === undefined) return fail(400, "Missing X-IDENTITY-HEADER header");
    if (header !== this.identityHeader) return fail(401, "Unauthorized: X-IDENTITY-HEADER does not match");
    if (apiVersion !== "2019-08-01") {
      return fail(400, `Unsupported api-version '${apiVersion ?? ""}'. Supported: 2019-08-01`);
    }
    if (!resource) return fail(400, "Required query parameter 'resource' is missing");
    if (url.searchParams.has("mi_res_id") || url.searchParams.has("object_id") || url.searchParams.has("principal_id")) {
      return fail(400, "The fake managed identity only knows identities by client_id");
    }
    if (clientId && clientId !== this.clientId && !this.userAssignedClientIds.includes(clientId)) {
      return fail(400, `No managed identity found for client_id '${clientId}'`);
    }
    if (this.failures.remaining > 0) {
      this.failures.remaining--;
      return fail(this.failures.status, "Injected failure");
    }
    const appid = clientId ?? this.clientId;
    const nowSec = Math.floor(this.now() / 1000);
    const exp = nowSec + this.tokenLifetimeSec;
    const exchange = /^api:\/\/AzureADTokenExchange(USGov|China)?\/?$/i.test(resource);
    const oid = this.principalIdOf(appid);
    const claims: ManagedIdentityClaims = {
      aud: resource,
      iss: exchange ? this.exchangeIssuer : `https://sts.windows.net/${this.tenantId}/`,
      ...(exchange ? { sub: oid } : {}),
      tid: this.tenantId,
      oid,
      appid,
      idtyp: "app",
      iat: nowSec,
      nbf: nowSec,
      exp,
      xms_mirid: "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/local/providers/Microsoft.Web/sites/fake",
    };
    const key = signingKey();
    const head = b64url(JSON.stringify({ typ: "JWT", alg: "RS256", kid: key.kid }));
    const payload = b64url(JSON.stringify(claims));
    const signer = createSign("RSA-SHA256");
    signer.update(`${head}.${payload}`);
    const token = `${head}.${payload}.${signer.sign(key.privateKey).toString("base64url")}`;
    this.issued++;
    this.seen.add(token);
    return {
      status: 200,
      body: { access_token: token, expires_on: String(exp), resource, token_type: "Bearer", client_id: appid },
    };
  }
}

function trimSlash(value: string): string {
  return value.endsWith("/") ? value.slice(0, -1) : value;
}
