import { DefaultAzureCredential, ManagedIdentityCredential, type TokenCredential } from "@azure/identity";
import { SecretClient } from "@azure/keyvault-secrets";
import { type ClientCredential, createClientCredential } from "./client-credential.js";
import { type AppConfig, loadConfig } from "./config.js";
import { TokenVault } from "./token-vault.js";
import { createStorage, type Storage } from "./storage.js";

/** Everything the shared modules need, passed in explicitly so tests can swap parts. */
export interface Services {
  config: AppConfig;
  storage: Storage;
  vault: TokenVault;
  /** The Key Vault client behind `vault` (the app's own secrets, e.g. the client secret's expiry). */
  secrets: SecretClient;
  /** The app's own Azure identity (managed identity in Azure): Key Vault, Logs Ingestion. */
  credential: TokenCredential;
  /** The app's own credential at customer tenants' token endpoints (MSSP_CLIENT_CREDENTIAL). */
  clientCredential: ClientCredential;
  now: () => Date;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
}

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export function createServices(config: AppConfig): Services {
  const credential = new DefaultAzureCredential(
    config.managedIdentityClientId ? { managedIdentityClientId: config.managedIdentityClientId } : {},
  );
  const secrets = new SecretClient(config.keyVaultUrl, credential);
  const c = config.credential;
  let exchangeCredential: ManagedIdentityCredential | undefined;
  if (c.kind === "managed-identity") {
    exchangeCredential = c.identityClientId ? new ManagedIdentityCredential({ clientId: c.identityClientId }) : new ManagedIdentityCredential();
  }
  // A function, so a test that swaps `now` on the services also moves the credential's clock.
  const svc: Services = {
    config,
    storage: createStorage(config.storage),
    vault: new TokenVault(secrets),
    secrets,
    credential,
    clientCredential: createClientCredential(config, {
      vaultCredential: credential,
      ...(exchangeCredential ? { exchangeCredential } : {}),
      now: () => svc.now(),
    }),
    now: () => new Date(),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    random: Math.random,
  };
  return svc;
}

let current: Services | undefined;

/**
 * The process-wide services, built on first use from the app settings. A bad setting
 * fails here, with every bad setting named, on the first invocation.
 */
export async function services(): Promise<Services> {
  const svc = unensuredServices();
  await svc.storage.ensure();
  return svc;
}

/** The same services before any storage call (health reports storage itself). */
export function unensuredServices(): Services {
  current ??= createServices(loadConfig(process.env));
  return current;
}

/** Drops the cached services (tests change app settings between suites). */
export function resetServices(): void {
  current = undefined;
}

let announced = false;

/**
 * `app.started node=<version>`, once per process (one Functions worker per instance): the
 * first invocation that gets a logger writes it, so the logs say which Node.js release
 * each instance runs (Flex Consumption pins only the major version).
 */
function announceStart(log: Logger): void {
  if (announced) return;
  announced = true;
  log.info(`app.started node=${process.version}`);
}

/** Lets the next logger announce the start again (tests). */
export function resetStartAnnouncement(): void {
  announced = false;
}

/** Adapts a Functions InvocationContext (or anything with log/warn/error) to a Logger. */
export function loggerFrom(context: {
  log(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}): Logger {
  const logger: Logger = {
    info: (message) => context.log(message),
    warn: (message) => context.warn(message),
    error: (message) => context.error(message),
  };
  announceStart(logger);
  return logger;
}
