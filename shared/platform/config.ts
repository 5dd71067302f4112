import { TableServiceClient } from "@azure/data-tables";
import { QueueServiceClient } from "@azure/storage-queue";
import { z } from "zod";
import type { DestinationConfig } from "../delivery/config.js";
import { DESTINATION_TYPES, type DestinationType } from "../delivery/destination.js";

/**
 * App settings, validated once with a schema. Every problem is reported in a single
 * ConfigError that names the offending settings and never echoes a secret value.
 */

export const CLOUDS = ["commercial", "gcc", "gcc-high", "dod"] as const;
export type Cloud = (typeof CLOUDS)[number];

/** How a customer tenant is onboarded and pulled: a user's delegated grant, or the app's own permission. */
export const TENANT_MODES = ["delegated", "application"] as const;
export type TenantMode = (typeof TENANT_MODES)[number];

/** How the app authenticates itself at customer tenants' token endpoints. */
export const CLIENT_CREDENTIALS = ["secret", "managed-identity", "certificate"] as const;
export type ClientCredentialKind = (typeof CLIENT_CREDENTIALS)[number];

/**
 * Audience of the managed identity's token that serves as the federated credential, per
 * cloud of the app registration (by its authority host). Entra documents these three.
 */
export const EXCHANGE_AUDIENCES: Record<string, string> = {
  "login.microsoftonline.com": "api://AzureADTokenExchange",
  "login.microsoftonline.us": "api://AzureADTokenExchangeUSGov",
  "login.chinacloudapi.cn": "api://AzureADTokenExchangeChina",
};

export interface CloudEndpoints {
  /** Entra ID authority host, e.g. https://login.microsoftonline.com */
  authorityHost: string;
  /** Defender for Endpoint API base URL */
  apiBaseUrl: string;
  /** OAuth scope of the Defender API (legacy WindowsDefenderATP audience) */
  apiScope: string;
  /** Microsoft Graph base URL (the `graph` source), e.g. https://graph.microsoft.com */
  graphBaseUrl: string;
  /** OAuth scope of Microsoft Graph in that cloud */
  graphScope: string;
}

/**
 * Presets from Microsoft's "Microsoft Defender for Endpoint for US Government customers"
 * page (API endpoints) and the national-cloud authentication endpoints.
 * `documentedScope: false` marks a token scope Microsoft does not spell out: we derive it
 * from the documented legacy API host of that cloud.
 */
export const CLOUD_PRESETS: Record<Cloud, CloudEndpoints & { documentedScope: boolean }> = {
  commercial: {
    authorityHost: "https://login.microsoftonline.com",
    apiBaseUrl: "https://api.security.microsoft.com",
    apiScope: "https://api.securitycenter.microsoft.com/.default",
    graphBaseUrl: "https://graph.microsoft.com",
    graphScope: "https://graph.microsoft.com/.default",
    documentedScope: true,
  },
  gcc: {
    authorityHost: "https://login.microsoftonline.com",
    apiBaseUrl: "https://api-gcc.security.microsoft.us",
    apiScope: "https://api-gcc.securitycenter.microsoft.us/.default",
    graphBaseUrl: "https://graph.microsoft.com",
    graphScope: "https://graph.microsoft.com/.default",
    documentedScope: false,
  },
  "gcc-high": {
    authorityHost: "https://login.microsoftonline.us",
    apiBaseUrl: "https://api-gov.security.microsoft.us",
    apiScope: "https://api-gov.securitycenter.microsoft.us/.default",
    graphBaseUrl: "https://graph.microsoft.us",
    graphScope: "https://graph.microsoft.us/.default",
    documentedScope: false,
  },
  dod: {
    authorityHost: "https://login.microsoftonline.us",
    apiBaseUrl: "https://api-gov.security.microsoft.us",
    apiScope: "https://api-gov.securitycenter.microsoft.us/.default",
    graphBaseUrl: "https://dod-graph.microsoft.us",
    graphScope: "https://dod-graph.microsoft.us/.default",
    documentedScope: false,
  },
};

const httpsUrl = z
  .string()
  .trim()
  .refine((v) => URL.canParse(v), "must be an absolute URL")
  .refine((v) => !URL.canParse(v) || new URL(v).protocol === "https:", "must use https:")
  .transform((v) => v.replace(/\/+$/, ""));

/** localhost, *.localhost (RFC 6761), 127.0.0.0/8 and ::1: names that never leave the machine. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/^\[|\]$/g, "");
  return host === "localhost" || host.endsWith(".localhost") || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}

/** https:, or http: on a loopback host (the sandbox and Core Tools on a developer machine). */
const publicUrl = z
  .string()
  .trim()
  .refine((v) => URL.canParse(v), "must be an absolute URL")
  .refine((v) => {
    if (!URL.canParse(v)) return true;
    const url = new URL(v);
    return url.protocol === "https:" || (url.protocol === "http:" && isLoopbackHost(url.hostname));
  }, "must use https: (http: only for localhost)")
  .refine((v) => !URL.canParse(v) || (new URL(v).search === "" && new URL(v).hash === ""), "must not have a query or fragment")
  .transform((v) => v.replace(/\/+$/, ""));

/** A storage service URI of the identity-based connection: https, no SAS or other query. */
const serviceUri = httpsUrl.refine((v) => !URL.canParse(v) || new URL(v).search === "", "must not have a query string (no SAS)");

/**
 * A storage connection string the Azure SDKs can parse (Azurite's shortcut included). The
 * SDKs' own parsers decide, without any request; their messages are not passed on.
 */
const connectionString = z
  .string()
  .trim()
  .refine((v) => {
    try {
      TableServiceClient.fromConnectionString(v, { allowInsecureConnection: true });
      QueueServiceClient.fromConnectionString(v);
      return true;
    } catch {
      return false;
    }
  }, "is not a valid storage connection string (AccountName and AccountKey, a SAS, or UseDevelopmentStorage=true)");

const required = (schema: z.ZodType<string>) =>
  z.preprocess((v) => (typeof v === "string" && v.trim() === "" ? undefined : v), schema);

const optional = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => (typeof v === "string" && v.trim() === "" ? undefined : v), schema.optional());

const positiveInt = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/** An optional integer whose default lives in the schema. */
const intWithDefault = (min: number, max: number, fallback: number) =>
  z.preprocess((v) => (typeof v === "string" && v.trim() === "" ? undefined : v), positiveInt(min, max).default(fallback));

const ncrontab = z
  .string()
  .trim()
  .refine((v) => v.split(/\s+/).length === 6, "must be a six-field NCRONTAB expression, e.g. 0 */5 * * * *");

/** A Key Vault key identifier with its version: https://<vault>/keys/<name>/<version>. */
const keyVaultKeyId = httpsUrl.refine(
  (v) => !URL.canParse(v) || /^\/keys\/[0-9A-Za-z-]{1,127}\/[0-9A-Za-z]{1,64}$/.test(new URL(v).pathname),
  "must be a Key Vault key identifier with its version (https://<vault>/keys/<name>/<version>)",
);

const rawSchema = z.object({
  MSSP_CLIENT_ID: required(z.string().trim().pipe(z.guid("must be a GUID"))),
  MSSP_CLIENT_CREDENTIAL: optional(z.enum(CLIENT_CREDENTIALS)),
  MSSP_CLIENT_SECRET: optional(z.string().min(1)),
  MSSP_FIC_CLIENT_ID: optional(z.string().trim().pipe(z.guid("must be a GUID"))),
  MSSP_FIC_AUDIENCE: optional(
    z
      .string()
      .trim()
      .regex(/^api:\/\/AzureADTokenExchange(USGov|China)?$/, "must be api://AzureADTokenExchange, ...USGov or ...China"),
  ),
  MSSP_CLIENT_CERTIFICATE_KEY_ID: optional(keyVaultKeyId),
  MSSP_CLIENT_CERTIFICATE_THUMBPRINT: optional(
    z
      .string()
      .trim()
      .regex(/^[A-Za-z0-9_-]{43}$/, "must be the certificate's SHA-256 thumbprint, base64url (43 characters)"),
  ),
  MSSP_CLIENT_SECRET_NAME: optional(
    z
      .string()
      .trim()
      .regex(/^[0-9A-Za-z-]{1,127}$/, "must be a Key Vault secret name (letters, digits and dashes)"),
  ),
  PUBLIC_BASE_URL: required(publicUrl),
  KEY_VAULT_URL: required(httpsUrl),
  ALERTS_STORAGE: optional(connectionString),
  ALERTS_STORAGE__tableServiceUri: optional(serviceUri),
  ALERTS_STORAGE__queueServiceUri: optional(serviceUri),
  ALERTS_STORAGE__credential: optional(z.literal("managedidentity")),
  ALERTS_STORAGE__clientId: optional(z.string().trim().pipe(z.guid("must be a GUID"))),
  AZURE_CLIENT_ID: optional(z.string().trim().pipe(z.guid("must be a GUID"))),
  PULL_SCHEDULE: required(ncrontab),
  DEFENDER_CLOUD: optional(z.enum(CLOUDS)),
  ENTRA_AUTHORITY_HOST: optional(httpsUrl),
  DEFENDER_API_BASE_URL: optional(httpsUrl),
  DEFENDER_API_SCOPE: optional(z.string().trim().min(1)),
  CONSENT_LINK_TTL_HOURS: optional(positiveInt(1, 24 * 90)),
  CONSENT_STATE_TTL_MINUTES: optional(positiveInt(1, 120)),
  CONSENT_STATES_PER_LINK: intWithDefault(1, 100, 5),
  PULL_OVERLAP_MINUTES: optional(positiveInt(0, 24 * 60)),
  PULL_LAG_SECONDS: optional(positiveInt(0, 3600)),
  PULL_INITIAL_LOOKBACK_DAYS: optional(positiveInt(1, 180)),
  PULL_PAGE_SIZE: optional(positiveInt(1, 10_000)),
  PULL_MAX_CALLS_PER_MINUTE: optional(positiveInt(1, 100)),
  PULL_MAX_CALLS_PER_HOUR: optional(positiveInt(1, 1500)),
  REFRESH_TOKEN_WRITEBACK_HOURS: optional(positiveInt(1, 24 * 60)),
  PULL_OVERLAP_AUTO_MAX_MINUTES: optional(positiveInt(0, 24 * 60)),
  SWEEP_HOURLY_LOOKBACK_HOURS: optional(positiveInt(0, 24 * 7)),
  SWEEP_DAILY_LOOKBACK_DAYS: optional(positiveInt(0, 180)),
  SWEEP_BUDGET_PERCENT: optional(positiveInt(1, 50)),
  OVERFLOW_GC_GRACE_MINUTES: optional(positiveInt(1, 24 * 60)),
  ALERTS_RESUME_MARGIN_SECONDS: optional(positiveInt(0, 24 * 3600)),
  OPERATOR_TENANT_ID: required(z.string().trim().pipe(z.guid("must be a GUID"))),
  OPERATOR_API_CLIENT_ID: required(z.string().trim().pipe(z.guid("must be a GUID"))),
  OPERATOR_CONSOLE_CLIENT_ID: optional(z.string().trim().pipe(z.guid("must be a GUID"))),
  AUDIT_RETENTION_DAYS: intWithDefault(1, 3650, 400),
  ALERT_RETENTION_DAYS: intWithDefault(1, 3650, 365),
  RETENTION_MAX_ALERTS_PER_RUN: intWithDefault(100, 1_000_000, 50_000),
  EXPORT_PAGE_ALERTS: intWithDefault(1, 1_000_000, 50_000),
  DEFAULT_ALERT_SOURCE: optional(z.enum(["defender", "graph"])),
  GRAPH_BASE_URL: optional(httpsUrl),
  GRAPH_API_SCOPE: optional(z.string().trim().min(1)),
  GRAPH_PAGE_SIZE: optional(positiveInt(1, 1000)),
  GRAPH_MAX_PAGES_PER_WINDOW: optional(positiveInt(1, 50)),
  GRAPH_MAX_CALLS_PER_MINUTE: optional(positiveInt(1, 150)),
  ONBOARDING_DEFAULT_MODE: optional(z.enum(TENANT_MODES)),
  APP_CONSENT_VERIFY_HOURS: optional(positiveInt(0, 24 * 7)),
  APP_CONSENT_RETRY_SECONDS: optional(positiveInt(0, 180)),
});

/**
 * Delivery destinations: `DESTINATIONS__<name>__<FIELD>` (see shared/delivery/config.ts).
 * Field names are upper case; unknown fields and bad values are named like any setting.
 */
const booleanSetting = z.enum(["true", "false", "TRUE", "FALSE", "True", "False"]).transform((v) => v.toLowerCase() === "true");
const destinationBase = { TYPE: z.enum(DESTINATION_TYPES), ENABLED: optional(booleanSetting) };
const secretName = z
  .string()
  .trim()
  .regex(/^[0-9A-Za-z-]{1,127}$/, "must be a Key Vault secret name (letters, digits and dashes), never a secret");
const destinationSchemas = {
  sentinel: z.strictObject({
    ...destinationBase,
    DCR_ENDPOINT: required(httpsUrl),
    DCR_IMMUTABLE_ID: required(z.string().trim().min(1)),
    STREAM: required(z.string().trim().regex(/^Custom-[A-Za-z0-9_]+$/, "must be Custom-<name>")),
  }),
  splunk: z.strictObject({
    ...destinationBase,
    URL: required(httpsUrl),
    INDEX: optional(z.string().trim().min(1)),
    SOURCETYPE: optional(z.string().trim().min(1)),
    USE_ACK: optional(booleanSetting),
    TOKEN_SECRET_NAME: required(secretName),
  }),
  webhook: z.strictObject({ ...destinationBase, URL: required(httpsUrl), SECRET_NAME: required(secretName) }),
} as const;
const DESTINATION_PREFIX = "DESTINATIONS__";

function parseDestinations(env: Record<string, string | undefined>): {
  destinations: DestinationConfig[];
  problems: { setting: string; problem: string; kind: "missing" | "invalid" }[];
} {
  const byName = new Map<string, Record<string, string>>();
  const problems: { setting: string; problem: string; kind: "missing" | "invalid" }[] = [];
  for (const [key, value] of Object.entries(env)) {
    if (!key.startsWith(DESTINATION_PREFIX) || value === undefined) continue;
    const rest = key.slice(DESTINATION_PREFIX.length);
    const split = rest.lastIndexOf("__");
    const name = split > 0 ? rest.slice(0, split) : "";
    if (!/^[a-z0-9-]{1,32}$/.test(name)) {
      problems.push({ setting: key, problem: "must be DESTINATIONS__<name>__<FIELD> with a name of [a-z0-9-]{1,32}", kind: "invalid" });
      continue;
    }
    byName.set(name, { ...byName.get(name), [rest.slice(split + 2).toUpperCase()]: value });
  }
  const destinations: DestinationConfig[] = [];
  for (const [name, fields] of [...byName.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
    const setting = (field: PropertyKey | undefined) => `${DESTINATION_PREFIX}${name}__${String(field ?? "TYPE")}`;
    const type = fields.TYPE?.trim() as DestinationType;
    if (!(DESTINATION_TYPES as readonly string[]).includes(type)) {
      problems.push({ setting: setting("TYPE"), problem: `is required, one of ${DESTINATION_TYPES.join(", ")}`, kind: "invalid" });
      continue;
    }
    const parsed = destinationSchemas[type].safeParse({ ...fields, TYPE: type });
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        if (issue.code === "unrecognized_keys") {
          for (const key of issue.keys) problems.push({ setting: setting(key), problem: `is not a field of a ${type} destination`, kind: "invalid" });
          continue;
        }
        const field = issue.path[0];
        const missing = issue.code === "invalid_type" && fields[String(field)] === undefined;
        problems.push({ setting: setting(field), problem: missing ? "is required" : `is invalid: ${issue.message}`, kind: missing ? "missing" : "invalid" });
      }
      continue;
    }
    const d = parsed.data as Record<string, unknown>;
    const enabled = (d.ENABLED as boolean | undefined) ?? true;
    if (type === "sentinel") {
      destinations.push({ name, type, enabled, dcrEndpoint: String(d.DCR_ENDPOINT), dcrImmutableId: String(d.DCR_IMMUTABLE_ID), stream: String(d.STREAM) });
    } else if (type === "splunk") {
      destinations.push({
        name,
        type,
        enabled,
        url: String(d.URL),
        useAck: (d.USE_ACK as boolean | undefined) ?? false,
        tokenSecretName: String(d.TOKEN_SECRET_NAME),
        ...(d.INDEX ? { index: String(d.INDEX) } : {}),
        ...(d.SOURCETYPE ? { sourcetype: String(d.SOURCETYPE) } : {}),
      });
    } else {
      destinations.push({ name, type, enabled, url: String(d.URL), secretName: String(d.SECRET_NAME) });
    }
  }
  return { destinations, problems };
}

/** Names of every app setting the app reads. The infra drift test checks these. */
export const SETTING_NAMES = Object.keys(rawSchema.shape) as (keyof typeof rawSchema.shape)[];
/** Settings that every deployment must set (the rest are optional or have defaults). */
export const REQUIRED_SETTINGS = [
  "MSSP_CLIENT_ID",
  "PUBLIC_BASE_URL",
  "KEY_VAULT_URL",
  "PULL_SCHEDULE",
  "OPERATOR_TENANT_ID",
  "OPERATOR_API_CLIENT_ID",
] as const;

export type StorageConnection =
  | { kind: "connectionString"; connectionString: string }
  | { kind: "identity"; tableServiceUri: string; queueServiceUri: string; clientId?: string };

/** The app's own credential at customer tenants' token endpoints (MSSP_CLIENT_CREDENTIAL). */
export type ClientCredentialConfig =
  | { kind: "secret"; secret: string }
  /** A user-assigned managed identity's token as client_assertion (federated identity credential). */
  | { kind: "managed-identity"; identityClientId?: string; audience: string }
  /** A certificate whose key never leaves Key Vault: client_assertion signed there (PS256, x5t#S256). */
  | { kind: "certificate"; keyId: string; thumbprint: string };

export interface AppConfig {
  clientId: string;
  credential: ClientCredentialConfig;
  /** Key Vault secret that holds the client secret (its `expires` is watched); it may not exist. */
  clientSecretName: string;
  publicBaseUrl: string;
  redirectUri: string;
  keyVaultUrl: string;
  storage: StorageConnection;
  managedIdentityClientId?: string;
  pullSchedule: string;
  defaultCloud: Cloud;
  /** Endpoints of the default cloud, with the overrides applied. */
  endpoints: CloudEndpoints;
  consentLinkTtlMs: number;
  consentStateTtlMs: number;
  /** Live sign-in states one consent link may have; a new one beyond that replaces the oldest. */
  consentStatesPerLink: number;
  pull: {
    overlapMs: number;
    lagMs: number;
    initialLookbackMs: number;
    pageSize: number;
    maxCallsPerMinute: number;
    maxCallsPerHour: number;
    writebackIntervalMs: number;
    /** 0: the overlap never widens by itself. */
    overlapAutoMaxMs: number;
    overflowGcGraceMs: number;
  };
  sweep: {
    /** 0: no hourly pass. */
    hourlyLookbackMs: number;
    /** 0: no daily pass. */
    dailyLookbackMs: number;
    budgetPercent: number;
  };
  /** Subtracted from a list scan's start time to give readers a safe `nextSince`. */
  alertsResumeMarginMs: number;
  /** Operator sign-in: the MSSP's own tenant and its two single-tenant app registrations. */
  operator: OperatorConfig;
  /** Customer data lifecycle: retention, export page size, and the audit trail's retention. */
  lifecycle: {
    alertRetentionMs: number;
    retentionMaxAlertsPerRun: number;
    exportPageAlerts: number;
    auditRetentionMs: number;
  };
  /** Delivery destinations (`DESTINATIONS__<name>__*`), enabled or not. */
  destinations: DestinationConfig[];
  /** The source of tenants that name none. */
  defaultSource: "defender" | "graph";
  graph: { pageSize: number; maxPagesPerWindow: number; maxCallsPerMinute: number };
  onboarding: {
    /** The mode of POST /api/tenants without `mode`. */
    defaultMode: TenantMode;
    /** How long the callback retries an application-mode verification while consent propagates. */
    consentRetryMs: number;
    /** How long the timer keeps probing a consent that did not verify in the callback (0: not at all). */
    consentVerifyMs: number;
  };
}

export interface OperatorConfig {
  tenantId: string;
  /** The operator API registration: the `aud` of every operator token (access tokens v2). */
  apiClientId: string;
  /** The console's SPA registration (unset: the console says sign-in is not configured). */
  consoleClientId?: string;
  /** `{authority host}/{tenant}`: MSAL's authority. */
  authority: string;
  /** `{authority host}/{tenant}/v2.0`: the only accepted `iss`. */
  issuer: string;
  jwksUri: string;
  /** The delegated scope the console asks for. */
  scope: string;
}

/** The scope users' tokens carry; service principals carry roles and no scope. */
export const OPERATOR_SCOPE = "Operator.Access";

export interface ConfigProblem {
  setting: string;
  /** "is required" or "is invalid: <what a valid value looks like>"; never the value. */
  problem: string;
  kind: "missing" | "invalid";
}

export class ConfigError extends Error {
  constructor(public readonly problems: ConfigProblem[]) {
    super(
      `Invalid app settings: ${problems.map((p) => `${p.setting} ${p.problem}`).join("; ")}. ` +
        "See README.md, section App settings.",
    );
    this.name = "ConfigError";
  }
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

export function loadConfig(env: Record<string, string | undefined> = process.env): AppConfig {
  const picked: Record<string, string | undefined> = {};
  for (const name of SETTING_NAMES) picked[name] = env[name];
  const parsed = rawSchema.safeParse(picked);
  const problems: ConfigProblem[] = [];
  for (const issue of parsed.error?.issues ?? []) {
    const setting = String(issue.path[0] ?? "?");
    const missing = issue.code === "invalid_type" && picked[setting] === undefined;
    problems.push(
      missing ? { setting, problem: "is required", kind: "missing" } : { setting, problem: `is invalid: ${issue.message}`, kind: "invalid" },
    );
  }
  const identityNames = ["ALERTS_STORAGE__tableServiceUri", "ALERTS_STORAGE__queueServiceUri"] as const;
  const present = (name: string) => (picked[name] ?? "").trim() !== "";
  if (!present("ALERTS_STORAGE")) {
    if (identityNames.some(present)) {
      for (const name of identityNames) {
        if (!present(name)) {
          problems.push({ setting: name, problem: "is required for the identity-based connection", kind: "missing" });
        }
      }
    } else {
      problems.push({
        setting: "ALERTS_STORAGE",
        problem:
          "is required: set a connection string, or ALERTS_STORAGE__tableServiceUri and ALERTS_STORAGE__queueServiceUri",
        kind: "missing",
      });
    }
  }
  problems.push(...retentionProblems(picked));
  const kind = parsed.success ? (parsed.data.MSSP_CLIENT_CREDENTIAL ?? "secret") : picked.MSSP_CLIENT_CREDENTIAL?.trim() || "secret";
  const needs: Record<string, string[]> = {
    secret: ["MSSP_CLIENT_SECRET"],
    certificate: ["MSSP_CLIENT_CERTIFICATE_KEY_ID", "MSSP_CLIENT_CERTIFICATE_THUMBPRINT"],
  };
  for (const name of needs[kind] ?? []) {
    if (!present(name) && !problems.some((p) => p.setting === name)) {
      problems.push({ setting: name, problem: `is required when MSSP_CLIENT_CREDENTIAL is ${kind}`, kind: "missing" });
    }
  }
  const delivery = parseDestinations(env);
  problems.push(...delivery.problems);
  if (!parsed.success || problems.length > 0) throw new ConfigError(problems);
  const s = parsed.data;
  const storage: StorageConnection = s.ALERTS_STORAGE
    ? { kind: "connectionString", connectionString: s.ALERTS_STORAGE }
    : {
        kind: "identity",
        tableServiceUri: s.ALERTS_STORAGE__tableServiceUri!,
        queueServiceUri: s.ALERTS_STORAGE__queueServiceUri!,
        clientId: s.ALERTS_STORAGE__clientId ?? s.AZURE_CLIENT_ID,
      };

  const defaultCloud = s.DEFENDER_CLOUD ?? "commercial";
  const preset = CLOUD_PRESETS[defaultCloud];
  const authorityHost = s.ENTRA_AUTHORITY_HOST ?? preset.authorityHost;
  let credential: ClientCredentialConfig;
  if (kind === "managed-identity") {
    const identityClientId = s.MSSP_FIC_CLIENT_ID ?? s.AZURE_CLIENT_ID;
    credential = {
      kind,
      audience: s.MSSP_FIC_AUDIENCE ?? exchangeAudience(authorityHost),
      ...(identityClientId ? { identityClientId: identityClientId.toLowerCase() } : {}),
    };
  } else if (kind === "certificate") {
    credential = { kind, keyId: s.MSSP_CLIENT_CERTIFICATE_KEY_ID!, thumbprint: s.MSSP_CLIENT_CERTIFICATE_THUMBPRINT! };
  } else {
    credential = { kind: "secret", secret: s.MSSP_CLIENT_SECRET! };
  }
  return {
    clientId: s.MSSP_CLIENT_ID.toLowerCase(),
    credential,
    clientSecretName: s.MSSP_CLIENT_SECRET_NAME ?? "mssp-client-secret",
    publicBaseUrl: s.PUBLIC_BASE_URL,
    redirectUri: `${s.PUBLIC_BASE_URL}/api/consent/callback`,
    keyVaultUrl: s.KEY_VAULT_URL,
    storage,
    managedIdentityClientId: s.AZURE_CLIENT_ID,
    pullSchedule: s.PULL_SCHEDULE,
    defaultCloud,
    endpoints: {
      authorityHost,
      apiBaseUrl: s.DEFENDER_API_BASE_URL ?? preset.apiBaseUrl,
      apiScope: s.DEFENDER_API_SCOPE ?? preset.apiScope,
      graphBaseUrl: s.GRAPH_BASE_URL ?? preset.graphBaseUrl,
      graphScope: s.GRAPH_API_SCOPE ?? preset.graphScope,
    },
    consentLinkTtlMs: (s.CONSENT_LINK_TTL_HOURS ?? 24 * 7) * HOUR,
    consentStateTtlMs: (s.CONSENT_STATE_TTL_MINUTES ?? 15) * MINUTE,
    consentStatesPerLink: s.CONSENT_STATES_PER_LINK,
    pull: {
      overlapMs: (s.PULL_OVERLAP_MINUTES ?? 10) * MINUTE,
      lagMs: (s.PULL_LAG_SECONDS ?? 60) * 1000,
      initialLookbackMs: (s.PULL_INITIAL_LOOKBACK_DAYS ?? 7) * 24 * HOUR,
      pageSize: s.PULL_PAGE_SIZE ?? 10_000,
      maxCallsPerMinute: s.PULL_MAX_CALLS_PER_MINUTE ?? 90,
      maxCallsPerHour: s.PULL_MAX_CALLS_PER_HOUR ?? 1400,
      writebackIntervalMs: (s.REFRESH_TOKEN_WRITEBACK_HOURS ?? 24) * HOUR,
      overlapAutoMaxMs: (s.PULL_OVERLAP_AUTO_MAX_MINUTES ?? 0) * MINUTE,
      overflowGcGraceMs: (s.OVERFLOW_GC_GRACE_MINUTES ?? 10) * MINUTE,
    },
    sweep: {
      hourlyLookbackMs: (s.SWEEP_HOURLY_LOOKBACK_HOURS ?? 24) * HOUR,
      dailyLookbackMs: (s.SWEEP_DAILY_LOOKBACK_DAYS ?? 7) * 24 * HOUR,
      budgetPercent: s.SWEEP_BUDGET_PERCENT ?? 10,
    },
    alertsResumeMarginMs: (s.ALERTS_RESUME_MARGIN_SECONDS ?? 300) * 1000,
    operator: operatorConfig(
      s.ENTRA_AUTHORITY_HOST ?? preset.authorityHost,
      s.OPERATOR_TENANT_ID.toLowerCase(),
      s.OPERATOR_API_CLIENT_ID.toLowerCase(),
      s.OPERATOR_CONSOLE_CLIENT_ID?.toLowerCase(),
    ),
    lifecycle: {
      alertRetentionMs: s.ALERT_RETENTION_DAYS * 24 * HOUR,
      retentionMaxAlertsPerRun: s.RETENTION_MAX_ALERTS_PER_RUN,
      exportPageAlerts: s.EXPORT_PAGE_ALERTS,
      auditRetentionMs: s.AUDIT_RETENTION_DAYS * 24 * HOUR,
    },
    destinations: delivery.destinations,
    defaultSource: s.DEFAULT_ALERT_SOURCE ?? "defender",
    graph: {
      pageSize: s.GRAPH_PAGE_SIZE ?? 1000,
      maxPagesPerWindow: s.GRAPH_MAX_PAGES_PER_WINDOW ?? 3,
      maxCallsPerMinute: s.GRAPH_MAX_CALLS_PER_MINUTE ?? 135,
    },
    onboarding: {
      defaultMode: s.ONBOARDING_DEFAULT_MODE ?? "delegated",
      consentRetryMs: (s.APP_CONSENT_RETRY_SECONDS ?? 60) * 1000,
      consentVerifyMs: (s.APP_CONSENT_VERIFY_HOURS ?? 24) * HOUR,
    },
  };
}

/**
 * The operator sign-in settings alone, for checking operator tokens while other settings
 * are broken (so `GET /api/health/details` still names them). Throws ConfigError naming
 * the bad operator settings.
 */
export function loadOperatorConfig(env: Record<string, string | undefined> = process.env): OperatorConfig {
  const names = ["OPERATOR_TENANT_ID", "OPERATOR_API_CLIENT_ID", "OPERATOR_CONSOLE_CLIENT_ID", "DEFENDER_CLOUD", "ENTRA_AUTHORITY_HOST"] as const;
  const schema = rawSchema.pick({
    OPERATOR_TENANT_ID: true,
    OPERATOR_API_CLIENT_ID: true,
    OPERATOR_CONSOLE_CLIENT_ID: true,
    DEFENDER_CLOUD: true,
    ENTRA_AUTHORITY_HOST: true,
  });
  const picked: Record<string, string | undefined> = {};
  for (const name of names) picked[name] = env[name];
  const parsed = schema.safeParse(picked);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const setting = String(issue.path[0] ?? "?");
        return picked[setting] === undefined
          ? { setting, problem: "is required", kind: "missing" as const }
          : { setting, problem: `is invalid: ${issue.message}`, kind: "invalid" as const };
      }),
    );
  }
  const s = parsed.data;
  return operatorConfig(
    s.ENTRA_AUTHORITY_HOST ?? CLOUD_PRESETS[s.DEFENDER_CLOUD ?? "commercial"].authorityHost,
    s.OPERATOR_TENANT_ID.toLowerCase(),
    s.OPERATOR_API_CLIENT_ID.toLowerCase(),
    s.OPERATOR_CONSOLE_CLIENT_ID?.toLowerCase(),
  );
}

function operatorConfig(authorityHost: string, tenantId: string, apiClientId: string, consoleClientId: string | undefined): OperatorConfig {
  const authority = `${authorityHost}/${tenantId}`;
  return {
    tenantId,
    apiClientId,
    ...(consoleClientId ? { consoleClientId } : {}),
    authority,
    issuer: `${authority}/v2.0`,
    jwksUri: `${authority}/discovery/v2.0/keys`,
    scope: `api://${apiClientId}/${OPERATOR_SCOPE}`,
  };
}

/**
 * ALERT_RETENTION_DAYS must exceed the longest time the collector reads back on its own
 * (the daily sweep's lookback and the first pull's lookback): retention would otherwise
 * delete alerts that the next sweep stores again. Checked on the values that parse, so a
 * problem elsewhere does not hide this one.
 */
function retentionProblems(picked: Record<string, string | undefined>): ConfigProblem[] {
  const shape = rawSchema.shape;
  const retention = shape.ALERT_RETENTION_DAYS.safeParse(picked.ALERT_RETENTION_DAYS);
  if (!retention.success) return [];
  const sweep = shape.SWEEP_DAILY_LOOKBACK_DAYS.safeParse(picked.SWEEP_DAILY_LOOKBACK_DAYS);
  const initial = shape.PULL_INITIAL_LOOKBACK_DAYS.safeParse(picked.PULL_INITIAL_LOOKBACK_DAYS);
  const sweepDays = sweep.success ? (sweep.data ?? 7) : 0;
  const initialDays = initial.success ? (initial.data ?? 7) : 0;
  const floor = Math.max(sweepDays, initialDays);
  if (retention.data > floor) return [];
  return [
    {
      setting: "ALERT_RETENTION_DAYS",
      problem: "is invalid: must be more than SWEEP_DAILY_LOOKBACK_DAYS and PULL_INITIAL_LOOKBACK_DAYS, or sweeps would store deleted alerts again",
      kind: "invalid",
    },
  ];
}

/**
 * The token-exchange audience for an app registration whose cloud has this authority host:
 * `api://AzureADTokenExchange`, or the US Government or China variant. Any other host (a
 * simulator, a proxy) is treated as the commercial cloud; MSSP_FIC_AUDIENCE overrides.
 */
export function exchangeAudience(authorityHost: string): string {
  const host = URL.canParse(authorityHost) ? new URL(authorityHost).hostname.toLowerCase() : "";
  return EXCHANGE_AUDIENCES[host] ?? "api://AzureADTokenExchange";
}

/** Endpoints for a tenant: its own cloud's preset, or the default cloud (with overrides). */
export function endpointsFor(config: AppConfig, cloud: Cloud | undefined): CloudEndpoints {
  if (!cloud || cloud === config.defaultCloud) return config.endpoints;
  const { documentedScope: _ignored, ...endpoints } = CLOUD_PRESETS[cloud];
  return endpoints;
}
