import { randomUUID } from "node:crypto";
import type { TokenCredential } from "@azure/identity";
import { CryptographyClient } from "@azure/keyvault-keys";
import type * as oauth from "oauth4webapi";
import type { ClientCredentialConfig, ClientCredentialKind } from "./config.js";
import { errorName } from "./http.js";

/**
 * The app's own credential at every customer tenant's token endpoint (MSSP_CLIENT_CREDENTIAL),
 * as an oauth4webapi client authentication hook for all three grants (authorization code,
 * refresh token, client credentials):
 *
 * - `secret`: client_secret in the form body (client_secret_post);
 * - `managed-identity`: the user-assigned managed identity's token for
 *   `api://AzureADTokenExchange` (or the US Government or China variant) is the
 *   client_assertion. Entra trusts it through the app registration's federated identity
 *   credential (issuer, subject = the identity's principal id, audience). It is cached
 *   until five minutes before it expires;
 * - `certificate`: a JWT client_assertion (`alg` PS256, `x5t#S256` of the certificate)
 *   signed by Key Vault's keys API (`CryptographyClient.signData`): the private key never
 *   leaves the vault. Each assertion names one token endpoint (`aud`) and is cached per
 *   endpoint for most of its ten-minute life.
 *
 * No assertion, token or secret is ever logged or put in an error message; a failure to
 * get an assertion is a CredentialUnavailableError carrying a code and a reason only.
 */

export const JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const MI_REFRESH_MARGIN_MS = 5 * 60_000;
const CERT_ASSERTION_LIFETIME_S = 600;
const CERT_REUSE_MS = 5 * 60_000;

/** The assertion could not be obtained (managed identity endpoint, Key Vault): the app's own failure. */
export class CredentialUnavailableError extends Error {
  constructor(
    readonly code: string,
    readonly reason: string,
  ) {
    super(`The app's client credential is unavailable (${code}, ${reason})`);
    this.name = "CredentialUnavailableError";
  }
}

export interface ClientCredential {
  readonly kind: ClientCredentialKind;
  /** The hook oauth4webapi calls for every token request. */
  clientAuth(): oauth.ClientAuth;
  /** Drops cached assertions (after Entra rejected one). */
  forget(): void;
}

export interface ClientCredentialDeps {
  /** The app's own managed identity for Key Vault (certificate signing). */
  vaultCredential: TokenCredential;
  /** The identity whose token is the federated credential (managed-identity). */
  exchangeCredential?: TokenCredential;
  now: () => Date;
}

export function createClientCredential(config: { clientId: string; credential: ClientCredentialConfig }, deps: ClientCredentialDeps): ClientCredential {
  const c = config.credential;
  if (c.kind === "secret") return new SecretCredential(c.secret);
  if (c.kind === "managed-identity") {
    if (!deps.exchangeCredential) throw new Error("managed-identity needs a managed identity credential");
    return new ManagedIdentityAssertion(deps.exchangeCredential, c.audience, deps.now);
  }
  return new KeyVaultCertificateAssertion(config.clientId, c.keyId, c.thumbprint, deps.vaultCredential, deps.now);
}

class SecretCredential implements ClientCredential {
  readonly kind = "secret" as const;
  constructor(private readonly secret: string) {}
  clientAuth(): oauth.ClientAuth {
    return (_as, client, body) => {
      body.set("client_id", client.client_id);
      body.set("client_secret", this.secret);
    };
  }
  forget(): void {}
}

abstract class AssertionCredential implements ClientCredential {
  abstract readonly kind: ClientCredentialKind;
  abstract assertion(tokenEndpoint: string): Promise<string>;
  abstract forget(): void;
  clientAuth(): oauth.ClientAuth {
    return async (as, client, body) => {
      if (!as.token_endpoint) throw new CredentialUnavailableError("NoTokenEndpoint", "no-token-endpoint");
      body.set("client_id", client.client_id);
      body.set("client_assertion_type", JWT_BEARER);
      body.set("client_assertion", await this.assertion(as.token_endpoint));
    };
  }
}

/** The managed identity's exchange token as client_assertion (a federated identity credential). */
export class ManagedIdentityAssertion extends AssertionCredential {
  readonly kind = "managed-identity" as const;
  private cached: { token: string; refreshAt: number } | undefined;
  private inFlight: Promise<string> | undefined;

  constructor(
    private readonly credential: TokenCredential,
    readonly audience: string,
    private readonly now: () => Date,
  ) {
    super();
  }

  async assertion(): Promise<string> {
    if (this.cached && this.now().getTime() < this.cached.refreshAt) return this.cached.token;
    this.inFlight ??= this.fetch().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async fetch(): Promise<string> {
    let token: { token: string; expiresOnTimestamp: number } | null;
    try {
      token = await this.credential.getToken(`${this.audience}/.default`);
    } catch (err) {
      throw new CredentialUnavailableError(`ManagedIdentity:${errorName(err)}`, "managed-identity-unavailable");
    }
    if (!token) throw new CredentialUnavailableError("ManagedIdentity:NoToken", "managed-identity-unavailable");
    this.cached = { token: token.token, refreshAt: token.expiresOnTimestamp - MI_REFRESH_MARGIN_MS };
    return token.token;
  }

  forget(): void {
    this.cached = undefined;
  }
}

/** A client assertion signed with a certificate's key in Key Vault (PS256, x5t#S256). */
export class KeyVaultCertificateAssertion extends AssertionCredential {
  readonly kind = "certificate" as const;
  private readonly crypto: CryptographyClient;
  private readonly cache = new Map<string, { assertion: string; until: number }>();

  constructor(
    private readonly clientId: string,
    keyId: string,
    private readonly thumbprint: string,
    credential: TokenCredential,
    private readonly now: () => Date,
  ) {
    super();
    this.crypto = new CryptographyClient(keyId, credential);
  }

  async assertion(tokenEndpoint: string): Promise<string> {
    const nowMs = this.now().getTime();
    const cached = this.cache.get(tokenEndpoint);
    if (cached && cached.until > nowMs) return cached.assertion;
    const iat = Math.floor(nowMs / 1000);
    const header = { alg: "PS256", typ: "JWT", "x5t#S256": this.thumbprint };
    const payload = {
      aud: tokenEndpoint,
      iss: this.clientId,
      sub: this.clientId,
      jti: randomUUID(),
      iat,
      nbf: iat,
      exp: iat + CERT_ASSERTION_LIFETIME_S,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
    let signature: Uint8Array;
    try {
      signature = (await this.crypto.signData("PS256", Buffer.from(signingInput, "ascii"))).result;
    } catch (err) {
      const status = (err as { statusCode?: unknown }).statusCode;
      throw new CredentialUnavailableError(`KeyVaultSign:${typeof status === "number" ? status : errorName(err)}`, "key-vault-sign-failed");
    }
    const assertion = `${signingInput}.${Buffer.from(signature).toString("base64url")}`;
    this.cache.set(tokenEndpoint, { assertion, until: nowMs + CERT_REUSE_MS });
    return assertion;
  }

  forget(): void {
    this.cache.clear();
  }
}

function b64url(text: string): string {
  return Buffer.from(text, "utf8").toString("base64url");
}

/**
 * What an `invalid_client`-type AADSTS code says about the app's own credential, for the
 * `app.credential.failed ... reason=` log line and health. Unknown codes get `rejected`.
 */
const REASONS: Record<number, string> = {
  7000215: "secret-invalid",
  7000222: "secret-expired",
  7000218: "credential-missing",
  700027: "assertion-signature-invalid",
  700024: "assertion-expired",
  700211: "assertion-issuer-unknown",
  700212: "assertion-audience-wrong",
  700213: "assertion-subject-unknown",
  70021: "no-matching-federated-credential",
  7000226: "no-federated-credential-policy",
  700016: "app-not-found",
  7000229: "service-principal-missing",
};

export function credentialFailureReason(code: string): string {
  if (code.includes(":")) {
    if (code.startsWith("ManagedIdentity:")) return "managed-identity-unavailable";
    if (code.startsWith("KeyVaultSign:")) return "key-vault-sign-failed";
  }
  const n = /^AADSTS(\d+)$/.exec(code)?.[1];
  return (n && REASONS[Number(n)]) || "rejected";
}

/**
 * AADSTS70021 ("no matching federated identity record") for a credential that may have just
 * been created: Entra needs minutes to see a new federated credential. Until a token request
 * with this process's credential has succeeded once, it is retried for up to this long.
 */
export const NEW_CREDENTIAL_RETRY_MS = 3 * 60_000;
/** At most this many tries of one request, whatever the clock says. */
const NEW_CREDENTIAL_ATTEMPTS = 8;
let credentialConfirmed = false;

export function confirmCredential(): void {
  credentialConfirmed = true;
}

/**
 * Whether try number `attempt` of a request that began at `startedMs`, which failed with
 * `code`, is worth another try as a new federated credential. The caller waits
 * `newCredentialWaitMs(attempt)` first: 5, 10, 15 ... 30 s.
 */
export function retryAsNewCredential(kind: ClientCredentialKind, code: string, startedMs: number, nowMs: number, attempt: number): boolean {
  return (
    kind === "managed-identity" &&
    code === "AADSTS70021" &&
    !credentialConfirmed &&
    attempt < NEW_CREDENTIAL_ATTEMPTS &&
    nowMs - startedMs < NEW_CREDENTIAL_RETRY_MS
  );
}

export function newCredentialWaitMs(attempt: number): number {
  return Math.min(30_000, 5_000 * attempt);
}

/** Forgets that the credential worked (tests). */
export function resetCredentialConfirmation(): void {
  credentialConfirmed = false;
}
