import { constants, createHash, generateKeyPairSync, type KeyObject, privateEncrypt, randomBytes, randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import forge from "node-forge";
import type { TestCerts } from "./tls.js";
import { HttpsFake, readBody, sendJson } from "./https.js";

/**
 * Fake Azure Key Vault (secrets, and the keys of certificates), speaking the REST protocol
 * that @azure/keyvault-secrets 4.12 and @azure/keyvault-keys 4.10 use (default api-version
 * 2026-04-01; any `7.x` or dated version is accepted, a missing one is a 400 like the real
 * service):
 *
 *   PUT    /secrets/{name}                     set: a new version every time (200 SecretBundle with value)
 *   GET    /secrets/{name}/{version}           get; the SDK asks for the latest as `/secrets/{name}/` (trailing slash)
 *   PATCH  /secrets/{name}/{version}           update contentType, tags, attributes (no value in the answer)
 *   GET    /secrets/{name}/versions            paged list (`nextLink` with `$skiptoken`, `maxresults` 1..25)
 *   GET    /secrets                            paged list, one item per live secret (id without version)
 *   DELETE /secrets/{name}                     soft delete (DeletedSecretBundle with recoveryId)
 *   GET    /deletedsecrets[/{name}]            deleted secret(s)
 *   POST   /deletedsecrets/{name}/recover      recover (immediate unless `lagReads` is set)
 *   DELETE /deletedsecrets/{name}              purge (204; 403 when purge protection is on)
 *   GET    /keys/{name}/{version}              the public key (JWK) of a certificate's key; the SDK asks for the latest as `/keys/{name}/`
 *   POST   /keys/{name}/{version}/sign         sign a digest: {alg: PS256 | RS256, value: base64url SHA-256} -> {kid, value}
 *
 * Keys exist only through `createCertificate` (what `az keyvault certificate create` with a
 * non-exportable key makes): the private key never leaves the fake, and its PEM is among
 * `secretsSeen()` so a leak of it would be caught.
 * Challenge authentication as the SDK expects: its first request to a vault goes without
 * a body and without a token, and gets `401` with `WWW-Authenticate: Bearer
 * authorization="https://login.microsoftonline.com/<tenant>", resource="<resource>"`. The SDK
 * then insists that the vault host ends with `.<resource host>`; hence the default vault
 * host `test.vault.localhost` with resource `https://vault.localhost`, reached through the
 * `dev/loopback-dns.cjs` preload.
 *
 * Quirks reproduced: names are case-insensitive; a disabled version answers 403 Forbidden
 * with innererror SecretDisabled; setting a soft-deleted name answers 409 Conflict
 * (innererror ObjectIsDeletedButRecoverable); recovered secrets come back with all their
 * versions, enabled flags unchanged.
 *
 * Pollers: `beginDeleteSecret` sends DELETE and then polls `GET /deletedsecrets/{name}`
 * until it is 200 (403 also counts as done); `beginRecoverDeletedSecret` first tries
 * `GET /secrets/{name}/` (done if 200), else POSTs `/recover` and polls `GET /secrets/{name}/`.
 * Both poll once right away inside `begin*`, so with the default `lagReads: 0` the poller is
 * already done when `begin*` resolves and `pollUntilDone()` costs nothing. With `lagReads > 0`
 * the poller waits `intervalInMs` (SDK default 2000 ms) between polls: pass a small
 * `intervalInMs` to `begin*` then.
 */

export interface FakeKeyVaultOptions {
  certs: TestCerts;
  port?: number;
  /** Host name in the vault URL; must end with `.` + the resource host and resolve to 127.0.0.1. */
  host?: string;
  /** The `resource` of the auth challenge; the token audience the vault expects. */
  resource?: string;
  /** Tenant in the challenge's `authorization` URL. */
  tenantId?: string;
  authorityHost?: string;
  purgeProtection?: boolean;
  softDeleteRetentionDays?: number;
  /**
   * Checks a bearer token (e.g. `(t, aud) => identity.isValid(t, aud)` with a
   * FakeManagedIdentity). Without it any bearer token is accepted.
   */
  verifyToken?: (token: string, audience: string) => boolean | Promise<boolean>;
  /**
   * Reads that still see the previous state after a delete or recover (deleted secret not
   * yet visible in /deletedsecrets, recovered secret not yet readable), like the real
   * service's eventual consistency. Default 0: operations are visible at once.
   */
  lagReads?: number;
  now?: () => number;
}

export interface KeyVaultRequest {
  method: string;
  /** Path without the query string, e.g. `/secrets/foo/`. */
  path: string;
  apiVersion: string | null;
  status: number;
  /** Whether the request carried an accepted bearer token. */
  authenticated: boolean;
}

export interface SecretVersionState {
  version: string;
  value: string;
  enabled: boolean;
  contentType?: string;
  tags?: Record<string, string>;
  notBefore?: Date;
  expiresOn?: Date;
  created: Date;
  updated: Date;
}

/** A certificate `createCertificate` made: what the app registration gets and the app is configured with. */
export interface CertificateState {
  name: string;
  /** Key identifier with version, https://<vault>/keys/<name>/<version>. */
  keyId: string;
  /** The certificate (public part), DER. */
  certificateDer: Buffer;
  /** x5t#S256: base64url SHA-256 of the DER. */
  thumbprintSha256: string;
}

interface KeyEntry {
  name: string;
  version: string;
  privateKey: KeyObject;
  publicJwk: Record<string, unknown>;
  enabled: boolean;
  created: number;
}

export interface SecretState {
  name: string;
  deleted: boolean;
  deletedDate?: Date;
  scheduledPurgeDate?: Date;
  /** Oldest first; the last is the current version. */
  versions: SecretVersionState[];
}

interface Version {
  version: string;
  value: string;
  enabled: boolean;
  contentType?: string;
  tags?: Record<string, string>;
  nbf?: number;
  exp?: number;
  created: number;
  updated: number;
}

interface Entry {
  name: string;
  versions: Version[];
  deleted?: { deletedDate: number; scheduledPurgeDate: number };
  /** Remaining reads that still see the pre-operation state. */
  lag?: { kind: "delete" | "recover"; reads: number };
}

class KvError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly inner?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const NAME_RE = /^[0-9a-zA-Z-]{1,127}$/;
const API_VERSION_RE = /^(\d+\.\d+|\d{4}-\d{2}-\d{2})(-preview(\.\d+)?)?$/;
const MAX_VALUE_BYTES = 25 * 1024;
const MAX_PAGE = 25;

export class FakeKeyVault extends HttpsFake {
  readonly host: string;
  readonly resource: string;
  readonly tenantId: string;
  purgeProtection: boolean;
  now: () => number;
  /** Every request, newest last (paths only, never values or tokens). */
  readonly requestLog: KeyVaultRequest[] = [];
  private readonly options: FakeKeyVaultOptions;
  private readonly secrets = new Map<string, Entry>();
  private readonly keys = new Map<string, KeyEntry[]>();
  private readonly seen = new Set<string>();
  private failures: { remaining: number; status: number; retryAfterSec?: number } = { remaining: 0, status: 503 };

  constructor(options: FakeKeyVaultOptions) {
    super("FakeKeyVault", { ...options, host: options.host ?? "test.vault.localhost" });
    this.options = options;
    this.host = options.host ?? "test.vault.localhost";
    this.resource = options.resource ?? "https://vault.localhost";
    this.tenantId = options.tenantId ?? "72f988bf-86f1-41af-91ab-2d7cd011db47";
    this.purgeProtection = options.purgeProtection ?? false;
    this.now = options.now ?? Date.now;
  }

  /** Every secret value written and bearer token received (8+ chars), for leak checks. */
  secretsSeen(): string[] {
    return [...this.seen];
  }

  /**
   * The next `n` authenticated requests fail with `status` (503 ServiceUnavailable,
   * 429 Throttled with Retry-After, 500 InternalServerError, ...). The SDK's own retry
   * policy retries 5xx and 429; construct the client with `retryOptions` to control that.
   */
  failNext(n: number, status = 503, options: { retryAfterSec?: number } = {}): void {
    this.failures = { remaining: n, status, ...options };
  }

  /** The state of a secret, for assertions; undefined when it never existed or was purged. */
  inspect(name: string): SecretState | undefined {
    const e = this.secrets.get(name.toLowerCase());
    if (!e) return undefined;
    return {
      name: e.name,
      deleted: Boolean(e.deleted),
      ...(e.deleted
        ? { deletedDate: new Date(e.deleted.deletedDate * 1000), scheduledPurgeDate: new Date(e.deleted.scheduledPurgeDate * 1000) }
        : {}),
      versions: e.versions.map((v) => ({
        version: v.version,
        value: v.value,
        enabled: v.enabled,
        ...(v.contentType !== undefined ? { contentType: v.contentType } : {}),
        ...(v.tags !== undefined ? { tags: { ...v.tags } } : {}),
        ...(v.nbf !== undefined ? { notBefore: new Date(v.nbf * 1000) } : {}),
        ...(v.exp !== undefined ? { expiresOn: new Date(v.exp * 1000) } : {}),
        created: new Date(v.created * 1000),
        updated: new Date(v.updated * 1000),
      })),
    };
  }

  /**
   * Stores a new version of a secret directly, as an administrator would with
   * `az keyvault secret set` (the sandbox puts the destinations' secrets in this way).
   */
  putSecret(name: string, value: string, contentType?: string): void {
    if (!NAME_RE.test(name)) throw new Error(`not a Key Vault secret name: ${name}`);
    this.setSecret(name, JSON.stringify({ value, ...(contentType ? { contentType } : {}) }));
  }

  /** Names of all secrets, live and soft-deleted. */
  names(): string[] {
    return [...this.secrets.values()].map((e) => e.name);
  }

  /** Purges a soft-deleted secret regardless of purge protection (the retention period ran out). */
  expireDeleted(name: string): void {
    const e = this.secrets.get(name.toLowerCase());
    if (e?.deleted) this.secrets.delete(name.toLowerCase());
  }

  /**
   * Creates a self-signed certificate whose RSA key is not exportable, as a Key Vault
   * certificate (policy `exportable: false`): returns what is public. A second call makes a
   * new version.
   */
  createCertificate(name: string, subject = `CN=${name}`): CertificateState {
    checkName(name);
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pem = privateKey.export({ type: "pkcs1", format: "pem" }).toString();
    this.seen.add(pem);
    const forgeKey = forge.pki.privateKeyFromPem(pem);
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
    cert.serialNumber = randomBytes(8).toString("hex").replace(/^[89a-f]/, "1");
    cert.validity.notBefore = new Date(this.now() - 3600_000);
    cert.validity.notAfter = new Date(this.now() + 365 * 24 * 3600_000);
    const attrs = [{ name: "commonName", value: subject.replace(/^CN=/, "") }];
    cert.setSubject(attrs);
    cert.setIssuer(attrs);
    cert.sign(forgeKey, forge.md.sha256.create());
    const certificateDer = Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), "binary");
    const version = randomBytes(16).toString("hex");
    const entry: KeyEntry = {
      name,
      version,
      privateKey,
      publicJwk: publicKey.export({ format: "jwk" }) as Record<string, unknown>,
      enabled: true,
      created: this.nowSec(),
    };
    const versions = this.keys.get(name.toLowerCase()) ?? [];
    versions.push(entry);
    this.keys.set(name.toLowerCase(), versions);
    return {
      name,
      keyId: `${this.url}/keys/${name}/${version}`,
      certificateDer,
      thumbprintSha256: createHash("sha256").update(certificateDer).digest("base64url"),
    };
  }

  /** Signatures made with a key so far (sign operations, by key name). */
  signCount(name: string): number {
    return this.requestLog.filter((r) => r.method === "POST" && r.status === 200 && r.path.toLowerCase().startsWith(`/keys/${name.toLowerCase()}/`) && r.path.endsWith("/sign")).length;
  }

  reset(): void {
    this.secrets.clear();
    this.requestLog.length = 0;
    this.failures = { remaining: 0, status: 503 };
  }

  protected async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://vault");
    const apiVersion = url.searchParams.get("api-version");
    const entry: KeyVaultRequest = { method: req.method ?? "", path: url.pathname, apiVersion, status: 0, authenticated: false };
    this.requestLog.push(entry);
    const headers = {
      "Cache-Control": "no-cache",
      "x-ms-request-id": randomUUID(),
      "x-ms-keyvault-region": "westeurope",
      "x-ms-keyvault-service-version": "1.9.2000.1",
      "x-ms-keyvault-network-info": "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
    };
    try {
      let body: string;
      try {
        body = await readBody(req);
      } catch {
        throw new KvError(413, "RequestEntityTooLarge", "The request body is too large.");
      }
      await this.authenticate(req);
      entry.authenticated = true;
      if (this.failures.remaining > 0) {
        this.failures.remaining--;
        throw injected(this.failures.status, this.failures.retryAfterSec);
      }
      if (!apiVersion) throw new KvError(400, "BadParameter", "The api-version query parameter (?api-version=) is required for all requests.");
      if (!API_VERSION_RE.test(apiVersion)) {
        throw new KvError(400, "BadParameter", `The specified version (${apiVersion}) is not recognized. Consider using the latest supported version (7.6).`);
      }
      const { status, json } = this.route(req.method ?? "GET", url, body);
      entry.status = status;
      if (json === undefined) {
        res.writeHead(status, headers);
        res.end();
      } else {
        sendJson(res, status, json, headers);
      }
    } catch (err) {
      const e = err instanceof KvError ? err : new KvError(500, "InternalServerError", String(err));
      entry.status = e.status;
      const error: Record<string, unknown> = { code: e.code, message: e.message };
      if (e.inner) error.innererror = { code: e.inner };
      sendJson(res, e.status, { error }, { ...headers, ...e.headers });
    }
  }

  private async authenticate(req: IncomingMessage): Promise<void> {
    const challenge = {
      "WWW-Authenticate": `Bearer authorization="${this.options.authorityHost ?? "https://login.microsoftonline.com"}/${this.tenantId}", resource="${this.resource}"`,
    };
    const auth = req.headers.authorization;
    const match = auth ? /^Bearer\s+(\S+)$/i.exec(auth) : null;
    if (match && match[1]!.length >= 8) this.seen.add(match[1]!);
    if (!match) {
      throw new KvError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", undefined, challenge);
    }
    const verify = this.options.verifyToken;
    if (verify && !(await verify(match[1]!, this.resource))) {
      throw new KvError(401, "Unauthorized", "AKV10022: Invalid audience, issuer, signature or lifetime.", undefined, challenge);
    }
  }

  private route(method: string, url: URL, body: string): { status: number; json?: unknown } {
    const parts = url.pathname.split("/").slice(1).map(decodeURIComponent);
    const [collection, rawName, third, fourth] = parts;
    if (collection === "secrets") {
      if (parts.length === 1 || (parts.length === 2 && rawName === "")) {
        if (method === "GET") return this.listSecrets(url);
        throw methodNotAllowed(method);
      }
      const name = checkName(rawName!);
      if (parts.length === 2) {
        if (method === "PUT") return this.setSecret(name, body);
        if (method === "DELETE") return this.deleteSecret(name);
        if (method === "GET") return this.getSecret(name, "");
        throw methodNotAllowed(method);
      }
      if (parts.length === 3 && third === "versions") {
        if (method === "GET") return this.listVersions(name, url);
        throw methodNotAllowed(method);
      }
      if (parts.length === 3 && (third === "backup" || third === "restore")) {
        throw new KvError(400, "BadParameter", "Backup and restore are not supported by the fake vault.");
      }
      if (parts.length === 3) {
        if (method === "GET") return this.getSecret(name, third!);
        if (method === "PATCH") return this.updateSecret(name, third!, body);
        throw methodNotAllowed(method);
      }
    }
    if (collection === "keys" && rawName !== undefined && rawName !== "") {
      const name = checkName(rawName);
      if (parts.length === 3 && method === "GET") return this.getKey(name, third ?? "");
      if (parts.length === 4 && fourth === "sign") {
        if (method === "POST") return this.sign(name, third ?? "", body);
        throw methodNotAllowed(method);
      }
      if (parts.length === 2 && method === "GET") return this.getKey(name, "");
    }
    if (collection === "deletedsecrets") {
      if (parts.length === 1 || (parts.length === 2 && rawName === "")) {
        if (method === "GET") return this.listDeleted(url);
        throw methodNotAllowed(method);
      }
      const name = checkName(rawName!);
      if (parts.length === 2) {
        if (method === "GET") return this.getDeleted(name);
        if (method === "DELETE") return this.purge(name);
        throw methodNotAllowed(method);
      }
      if (parts.length === 3 && third === "recover" && fourth === undefined) {
        if (method === "POST") return this.recover(name);
        throw methodNotAllowed(method);
      }
    }
    throw new KvError(404, "NotFound", `The requested path ${url.pathname} was not found.`);
  }

  private findKey(name: string, version: string): KeyEntry {
    const versions = this.keys.get(name.toLowerCase()) ?? [];
    const key = version ? versions.find((k) => k.version === version.toLowerCase()) : versions.at(-1);
    if (!key) throw new KvError(404, "KeyNotFound", `A key with (name/id) ${version ? `${name}/${version}` : name} was not found in this key vault.`);
    if (!key.enabled) throw new KvError(403, "Forbidden", "Operation is not allowed on a disabled key.", "KeyDisabled");
    return key;
  }

  private getKey(name: string, version: string): { status: number; json: unknown } {
    const key = this.findKey(name, version);
    return {
      status: 200,
      json: {
        key: { ...key.publicJwk, kid: `${this.url}/keys/${key.name}/${key.version}`, key_ops: ["sign", "verify"] },
        attributes: { enabled: key.enabled, created: key.created, updated: key.created, recoveryLevel: this.recoveryLevel(), exportable: false },
        managed: true,
      },
    };
  }

  /** Signs a SHA-256 digest with the certificate's private key, as the keys API's sign operation does. */
  private sign(name: string, version: string, body: string): { status: number; json: unknown } {
    const key = this.findKey(name, version);
    const params = parseJson(body) as { alg?: unknown; value?: unknown };
    if (params.alg !== "PS256" && params.alg !== "RS256") {
      throw new KvError(400, "BadParameter", `Invalid algorithm ${String(params.alg)}: the fake vault signs with PS256 and RS256.`);
    }
    const digest = typeof params.value === "string" ? Buffer.from(params.value, "base64url") : Buffer.alloc(0);
    if (digest.length !== 32) throw new KvError(400, "BadParameter", "The value must be a base64url SHA-256 digest (32 bytes).");
    const signature =
      params.alg === "RS256"
        ? privateEncrypt({ key: key.privateKey, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO, digest]))
        : privateEncrypt({ key: key.privateKey, padding: constants.RSA_NO_PADDING }, emsaPss(digest, (key.privateKey.asymmetricKeyDetails?.modulusLength ?? 2048) - 1));
    return { status: 200, json: { kid: `${this.url}/keys/${key.name}/${key.version}`, value: signature.toString("base64url") } };
  }

  private nowSec(): number {
    return Math.floor(this.now() / 1000);
  }

  private recoveryLevel(): string {
    const days = this.options.softDeleteRetentionDays ?? 90;
    const base = this.purgeProtection ? "Recoverable" : "Recoverable+Purgeable";
    return days < 90 ? `Customized${base}` : base;
  }

  private live(name: string): Entry | undefined {
    const e = this.secrets.get(name.toLowerCase());
    if (!e || e.deleted) return undefined;
    return e;
  }

  /** Consumes one lagging read of the given kind; true when this read must still see the old state. */
  private lagging(e: Entry | undefined, kind: "delete" | "recover"): boolean {
    if (!e?.lag || e.lag.kind !== kind || e.lag.reads <= 0) return false;
    e.lag.reads--;
    if (e.lag.reads === 0) delete e.lag;
    return true;
  }

  private attributes(v: Version): Record<string, unknown> {
    return {
      enabled: v.enabled,
      ...(v.nbf !== undefined ? { nbf: v.nbf } : {}),
      ...(v.exp !== undefined ? { exp: v.exp } : {}),
      created: v.created,
      updated: v.updated,
      recoveryLevel: this.recoveryLevel(),
      recoverableDays: this.options.softDeleteRetentionDays ?? 90,
    };
  }

  private bundle(e: Entry, v: Version, withValue: boolean): Record<string, unknown> {
    return {
      ...(withValue ? { value: v.value } : {}),
      ...(v.contentType !== undefined ? { contentType: v.contentType } : {}),
      id: `${this.url}/secrets/${e.name}/${v.version}`,
      attributes: this.attributes(v),
      ...(v.tags !== undefined ? { tags: v.tags } : {}),
    };
  }

  private deletedBundle(e: Entry): Record<string, unknown> {
    const latest = e.versions.at(-1)!;
    return {
      recoveryId: `${this.url}/deletedsecrets/${e.name}`,
      deletedDate: e.deleted!.deletedDate,
      scheduledPurgeDate: e.deleted!.scheduledPurgeDate,
      ...this.bundle(e, latest, false),
    };
  }

  private setSecret(name: string, body: string): { status: number; json: unknown } {
    const params = parseJson(body) as {
      value?: unknown;
      contentType?: unknown;
      tags?: unknown;
      attributes?: { enabled?: unknown; nbf?: unknown; exp?: unknown };
    };
    if (typeof params.value !== "string") throw new KvError(400, "BadParameter", "Property 'value' is required and must be a string.");
    if (Buffer.byteLength(params.value) > MAX_VALUE_BYTES) {
      throw new KvError(400, "BadParameter", "The secret value exceeds the maximum allowed size of 25 KB.");
    }
    const tags = checkTags(params.tags);
    const existing = this.secrets.get(name.toLowerCase());
    if (existing?.deleted) {
      throw new KvError(
        409,
        "Conflict",
        `Secret ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.`,
        "ObjectIsDeletedButRecoverable",
      );
    }
    if (existing?.lag?.kind === "recover") {
      throw new KvError(409, "Conflict", `Secret ${name} is currently being recovered.  Please retry the operation later.`, "ObjectIsBeingRecovered");
    }
    const entry = existing ?? { name, versions: [] };
    const now = this.nowSec();
    const attrs = params.attributes ?? {};
    if (params.value.length >= 8) this.seen.add(params.value);
    const v: Version = {
      version: randomBytes(16).toString("hex"),
      value: params.value,
      enabled: attrs.enabled === undefined ? true : Boolean(attrs.enabled),
      ...(typeof params.contentType === "string" ? { contentType: params.contentType } : {}),
      ...(tags ? { tags } : {}),
      ...(typeof attrs.nbf === "number" ? { nbf: attrs.nbf } : {}),
      ...(typeof attrs.exp === "number" ? { exp: attrs.exp } : {}),
      created: now,
      updated: now,
    };
    entry.versions.push(v);
    this.secrets.set(name.toLowerCase(), entry);
    return { status: 200, json: this.bundle(entry, v, true) };
  }

  private findVersion(name: string, version: string): { e: Entry; v: Version } {
    const e = this.live(name);
    const notFound = () =>
      new KvError(
        404,
        "SecretNotFound",
        `A secret with (name/id) ${version ? `${name}/${version}` : name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
      );
    if (!e || this.lagging(e, "recover")) throw notFound();
    const v = version ? e.versions.find((x) => x.version === version.toLowerCase()) : e.versions.at(-1);
    if (!v) throw notFound();
    return { e, v };
  }

  private getSecret(name: string, version: string): { status: number; json: unknown } {
    const { e, v } = this.findVersion(name, version);
    if (!v.enabled) throw new KvError(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled");
    return { status: 200, json: this.bundle(e, v, true) };
  }

  private updateSecret(name: string, version: string, body: string): { status: number; json: unknown } {
    const params = parseJson(body) as {
      contentType?: unknown;
      tags?: unknown;
      attributes?: { enabled?: unknown; nbf?: unknown; exp?: unknown };
    };
    const { e, v } = this.findVersion(name, version);
    const tags = checkTags(params.tags);
    const attrs = params.attributes ?? {};
    if (attrs.enabled !== undefined && attrs.enabled !== null) v.enabled = Boolean(attrs.enabled);
    if (typeof attrs.nbf === "number") v.nbf = attrs.nbf;
    if (typeof attrs.exp === "number") v.exp = attrs.exp;
    if (typeof params.contentType === "string") v.contentType = params.contentType;
    if (tags) v.tags = tags;
    v.updated = this.nowSec();
    return { status: 200, json: this.bundle(e, v, false) };
  }

  private deleteSecret(name: string): { status: number; json: unknown } {
    const e = this.live(name);
    if (!e) {
      throw new KvError(
        404,
        "SecretNotFound",
        `A secret with (name/id) ${name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
      );
    }
    const now = this.nowSec();
    e.deleted = { deletedDate: now, scheduledPurgeDate: now + (this.options.softDeleteRetentionDays ?? 90) * 86400 };
    const lag = this.options.lagReads ?? 0;
    if (lag > 0) e.lag = { kind: "delete", reads: lag };
    else delete e.lag;
    return { status: 200, json: this.deletedBundle(e) };
  }

  private deletedEntry(name: string): Entry {
    const e = this.secrets.get(name.toLowerCase());
    if (!e?.deleted || this.lagging(e, "delete")) throw new KvError(404, "SecretNotFound", `Deleted Secret not found`);
    return e;
  }

  private getDeleted(name: string): { status: number; json: unknown } {
    return { status: 200, json: this.deletedBundle(this.deletedEntry(name)) };
  }

  private recover(name: string): { status: number; json: unknown } {
    const e = this.deletedEntry(name);
    delete e.deleted;
    const lag = this.options.lagReads ?? 0;
    if (lag > 0) e.lag = { kind: "recover", reads: lag };
    return { status: 200, json: this.bundle(e, e.versions.at(-1)!, false) };
  }

  private purge(name: string): { status: number; json?: unknown } {
    const e = this.deletedEntry(name);
    if (this.purgeProtection) {
      throw new KvError(
        403,
        "Forbidden",
        `Operation "purge" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.\r\nVault: ${this.host.split(".")[0]};location=westeurope`,
        "OperationNotAllowed",
      );
    }
    this.secrets.delete(e.name.toLowerCase());
    return { status: 204 };
  }

  private page<T>(items: T[], url: URL): { value: T[]; nextLink: string | null } {
    const maxParam = url.searchParams.get("maxresults");
    const max = maxParam === null ? MAX_PAGE : Number(maxParam);
    if (!Number.isInteger(max) || max < 1 || max > MAX_PAGE) {
      throw new KvError(400, "BadParameter", `Invalid maxresults value ${maxParam}. The value must be between 1 and 25.`);
    }
    let offset = 0;
    const skip = url.searchParams.get("$skiptoken");
    if (skip) {
      try {
        offset = (JSON.parse(Buffer.from(skip, "base64url").toString("utf8")) as { o: number }).o;
      } catch {
        throw new KvError(400, "BadParameter", "Invalid $skiptoken.");
      }
    }
    const value = items.slice(offset, offset + max);
    let nextLink: string | null = null;
    if (offset + max < items.length) {
      const next = new URL(`${this.url}${url.pathname}`);
      next.searchParams.set("api-version", url.searchParams.get("api-version") ?? "");
      next.searchParams.set("$skiptoken", Buffer.from(JSON.stringify({ o: offset + max })).toString("base64url"));
      next.searchParams.set("maxresults", String(max));
      nextLink = next.href;
    }
    return { value, nextLink };
  }

  private item(e: Entry, v: Version, withVersion: boolean): Record<string, unknown> {
    return {
      id: withVersion ? `${this.url}/secrets/${e.name}/${v.version}` : `${this.url}/secrets/${e.name}`,
      attributes: this.attributes(v),
      ...(v.tags !== undefined ? { tags: v.tags } : {}),
      ...(v.contentType !== undefined ? { contentType: v.contentType } : {}),
    };
  }

  private listSecrets(url: URL): { status: number; json: unknown } {
    const items = [...this.secrets.values()]
      .filter((e) => !e.deleted && e.lag?.kind !== "recover")
      .map((e) => this.item(e, e.versions.at(-1)!, false));
    return { status: 200, json: this.page(items, url) };
  }

  private listVersions(name: string, url: URL): { status: number; json: unknown } {
    const e = this.live(name);
    const items = e && e.lag?.kind !== "recover" ? e.versions.map((v) => this.item(e, v, true)) : [];
    return { status: 200, json: this.page(items, url) };
  }

  private listDeleted(url: URL): { status: number; json: unknown } {
    const items = [...this.secrets.values()]
      .filter((e) => e.deleted && e.lag?.kind !== "delete")
      .map((e) => {
        const latest = e.versions.at(-1)!;
        return {
          recoveryId: `${this.url}/deletedsecrets/${e.name}`,
          deletedDate: e.deleted!.deletedDate,
          scheduledPurgeDate: e.deleted!.scheduledPurgeDate,
          ...this.item(e, latest, false),
        };
      });
    return { status: 200, json: this.page(items, url) };
  }
}

/** DER prefix of a SHA-256 DigestInfo (RFC 8017 9.2 note 1), for PKCS#1 v1.5 signatures. */
const SHA256_DIGEST_INFO = Buffer.from("3031300d060960864801650304020105000420", "hex");

/** EMSA-PSS encoding of a SHA-256 digest with a 32-byte salt and MGF1-SHA-256 (RFC 8017 9.1.1), as JWA PS256 needs. */
function emsaPss(mHash: Buffer, emBits: number): Buffer {
  const hLen = 32;
  const emLen = Math.ceil(emBits / 8);
  const salt = randomBytes(hLen);
  const h = createHash("sha256").update(Buffer.concat([Buffer.alloc(8), mHash, salt])).digest();
  const db = Buffer.concat([Buffer.alloc(emLen - 2 * hLen - 2), Buffer.from([1]), salt]);
  const mask = Buffer.alloc(db.length);
  for (let counter = 0, offset = 0; offset < mask.length; counter++) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    const block = createHash("sha256").update(Buffer.concat([h, c])).digest();
    block.copy(mask, offset);
    offset += block.length;
  }
  for (let i = 0; i < db.length; i++) db[i] = (db[i] ?? 0) ^ (mask[i] ?? 0);
  db[0] = (db[0] ?? 0) & (0xff >> (8 * emLen - emBits));
  return Buffer.concat([db, h, Buffer.from([0xbc])]);
}

function checkName(name: string): string {
  if (!NAME_RE.test(name)) throw new KvError(400, "BadParameter", `The request URI contains an invalid name: ${name}`);
  return name;
}

function checkTags(tags: unknown): Record<string, string> | undefined {
  if (tags === undefined || tags === null) return undefined;
  if (typeof tags !== "object" || Array.isArray(tags)) throw new KvError(400, "BadParameter", "Tags must be an object.");
  const entries = Object.entries(tags as Record<string, unknown>);
  if (entries.length > 15) throw new KvError(400, "BadParameter", "The number of tags exceeds the maximum of 15.");
  for (const [k, v] of entries) {
    if (typeof v !== "string") throw new KvError(400, "BadParameter", `Tag '${k}' must have a string value.`);
    if (k.length > 512 || v.length > 256) throw new KvError(400, "BadParameter", `Tag '${k}' is too long.`);
  }
  return Object.fromEntries(entries) as Record<string, string>;
}

function parseJson(body: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(body || "{}");
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
    return parsed as Record<string, unknown>;
  } catch {
    throw new KvError(400, "BadParameter", "The request body is not valid JSON.");
  }
}

function methodNotAllowed(method: string): KvError {
  return new KvError(405, "MethodNotAllowed", `The requested resource does not support http method '${method}'.`);
}

function injected(status: number, retryAfterSec?: number): KvError {
  const headers: Record<string, string> = retryAfterSec !== undefined ? { "Retry-After": String(retryAfterSec) } : {};
  if (status === 429) {
    return new KvError(
      429,
      "Throttled",
      "Request was not processed because too many requests were received. Reason: A1",
      undefined,
      { "Retry-After": String(retryAfterSec ?? 1), ...headers },
    );
  }
  if (status === 503) return new KvError(503, "ServiceUnavailable", "The service is temporarily unavailable.", undefined, headers);
  if (status === 500) return new KvError(500, "InternalServerError", "An internal server error occurred.", undefined, headers);
  return new KvError(status, "InjectedFailure", `Injected failure with status ${status}.`, undefined, headers);
}
