import { z } from "zod";

/**
 * App settings, validated once with a schema. Every problem is reported in a single
 * ConfigError that names the offending settings and never echoes a secret value.
 */

export const CLOUDS = ["commercial", "gcc", "gcc-high", "dod"] as const;
export type Cloud = (typeof CLOUDS)[number];

export interface CloudEndpoints {
  /** Entra ID authority host, e.g. https://login.microsoftonline.com */
  authorityHost: string;
  /** Defender for Endpoint API base URL */
  apiBaseUrl: string;
  /** OAuth scope of the Defender API (legacy WindowsDefenderATP audience) */
  apiScope: string;
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
    documentedScope: true,
  },
  gcc: {
    authorityHost: "https://login.microsoftonline.com",
    apiBaseUrl: "https://api-gcc.security.microsoft.us",
    apiScope: "https://api-gcc.securitycenter.microsoft.us/.default",
    documentedScope: false,
  },
  "gcc-high": {
    authorityHost: "https://login.microsoftonline.us",
    apiBaseUrl: "https://api-gov.security.microsoft.us",
    apiScope: "https://api-gov.securitycenter.microsoft.us/.default",
    documentedScope: false,
  },
  dod: {
    authorityHost: "https://login.microsoftonline.us",
    apiBaseUrl: "https://api-gov.security.microsoft.us",
    apiScope: "https://api-gov.securitycenter.microsoft.us/.default",
    documentedScope: false,
  },
};

const httpsUrl = z
  .string()
  .trim()
  .refine((v) => URL.canParse(v), "must be an absolute URL")
  .refine((v) => !URL.canParse(v) || new URL(v).protocol === "https:", "must use https:")
  .transform((v) => v.replace(/\/+$/, ""));

const absoluteUrl = z
  .string()
  .trim()
  .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), "must be an absolute http(s) URL")
  .transform((v) => v.replace(/\/+$/, ""));

const required = (schema: z.ZodType<string>) =>
  z.preprocess((v) => (typeof v === "string" && v.trim() === "" ? undefined : v), schema);

const optional = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => (typeof v === "string" && v.trim() === "" ? undefined : v), schema.optional());

const positiveInt = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const ncrontab = z
  .string()
  .trim()
  .refine((v) => v.split(/\s+/).length === 6, "must be a six-field NCRONTAB expression, e.g. 0 */5 * * * *");

const rawSchema = z.object({
  MSSP_CLIENT_ID: required(z.string().trim().pipe(z.guid("must be a GUID"))),
  MSSP_CLIENT_SECRET: required(z.string().min(1)),
  MSSP_CLIENT_SECRET_NAME: optional(
    z
      .string()
      .trim()
      .regex(/^[0-9A-Za-z-]{1,127}$/, "must be a Key Vault secret name (letters, digits and dashes)"),
  ),
  PUBLIC_BASE_URL: required(absoluteUrl),
  KEY_VAULT_URL: required(httpsUrl),
  ALERTS_STORAGE: optional(z.string().trim()),
  ALERTS_STORAGE__tableServiceUri: optional(httpsUrl),
  ALERTS_STORAGE__queueServiceUri: optional(httpsUrl),
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
  PULL_OVERLAP_MINUTES: optional(positiveInt(0, 24 * 60)),
  PULL_LAG_SECONDS: optional(positiveInt(0, 3600)),
  PULL_INITIAL_LOOKBACK_DAYS: optional(positiveInt(1, 180)),
  PULL_PAGE_SIZE: optional(positiveInt(1, 10_000)),
  PULL_MAX_CALLS_PER_MINUTE: optional(positiveInt(1, 100)),
  PULL_MAX_CALLS_PER_HOUR: optional(positiveInt(1, 1500)),
  REFRESH_TOKEN_WRITEBACK_HOURS: optional(positiveInt(1, 24 * 60)),
});

/** Names of every app setting the app reads. The infra drift test checks these. */
export const SETTING_NAMES = Object.keys(rawSchema.shape) as (keyof typeof rawSchema.shape)[];
/** Settings that every deployment must set (the rest are optional or have defaults). */
export const REQUIRED_SETTINGS = [
  "MSSP_CLIENT_ID",
  "MSSP_CLIENT_SECRET",
  "PUBLIC_BASE_URL",
  "KEY_VAULT_URL",
  "PULL_SCHEDULE",
] as const;

export type StorageConnection =
  | { kind: "connectionString"; connectionString: string }
  | { kind: "identity"; tableServiceUri: string; queueServiceUri: string; clientId?: string };

export interface AppConfig {
  clientId: string;
  clientSecret: string;
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
  pull: {
    overlapMs: number;
    lagMs: number;
    initialLookbackMs: number;
    pageSize: number;
    maxCallsPerMinute: number;
    maxCallsPerHour: number;
    writebackIntervalMs: number;
  };
}

export class ConfigError extends Error {
  constructor(public readonly problems: { setting: string; problem: string }[]) {
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
  const problems: { setting: string; problem: string }[] = [];
  for (const issue of parsed.error?.issues ?? []) {
    const setting = String(issue.path[0] ?? "?");
    const missing = issue.code === "invalid_type" && picked[setting] === undefined;
    problems.push({ setting, problem: missing ? "is required" : `is invalid: ${issue.message}` });
  }
  const identityNames = ["ALERTS_STORAGE__tableServiceUri", "ALERTS_STORAGE__queueServiceUri"] as const;
  const present = (name: string) => (picked[name] ?? "").trim() !== "";
  if (!present("ALERTS_STORAGE")) {
    if (identityNames.some(present)) {
      for (const name of identityNames) {
        if (!present(name)) problems.push({ setting: name, problem: "is required for the identity-based connection" });
      }
    } else {
      problems.push({
        setting: "ALERTS_STORAGE",
        problem:
          "is required: set a connection string, or ALERTS_STORAGE__tableServiceUri and ALERTS_STORAGE__queueServiceUri",
      });
    }
  }
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
  return {
    clientId: s.MSSP_CLIENT_ID.toLowerCase(),
    clientSecret: s.MSSP_CLIENT_SECRET,
    clientSecretName: s.MSSP_CLIENT_SECRET_NAME ?? "mssp-client-secret",
    publicBaseUrl: s.PUBLIC_BASE_URL,
    redirectUri: `${s.PUBLIC_BASE_URL}/api/consent/callback`,
    keyVaultUrl: s.KEY_VAULT_URL,
    storage,
    managedIdentityClientId: s.AZURE_CLIENT_ID,
    pullSchedule: s.PULL_SCHEDULE,
    defaultCloud,
    endpoints: {
      authorityHost: s.ENTRA_AUTHORITY_HOST ?? preset.authorityHost,
      apiBaseUrl: s.DEFENDER_API_BASE_URL ?? preset.apiBaseUrl,
      apiScope: s.DEFENDER_API_SCOPE ?? preset.apiScope,
    },
    consentLinkTtlMs: (s.CONSENT_LINK_TTL_HOURS ?? 24 * 7) * HOUR,
    consentStateTtlMs: (s.CONSENT_STATE_TTL_MINUTES ?? 15) * MINUTE,
    pull: {
      overlapMs: (s.PULL_OVERLAP_MINUTES ?? 10) * MINUTE,
      lagMs: (s.PULL_LAG_SECONDS ?? 60) * 1000,
      initialLookbackMs: (s.PULL_INITIAL_LOOKBACK_DAYS ?? 7) * 24 * HOUR,
      pageSize: s.PULL_PAGE_SIZE ?? 10_000,
      maxCallsPerMinute: s.PULL_MAX_CALLS_PER_MINUTE ?? 90,
      maxCallsPerHour: s.PULL_MAX_CALLS_PER_HOUR ?? 1400,
      writebackIntervalMs: (s.REFRESH_TOKEN_WRITEBACK_HOURS ?? 24) * HOUR,
    },
  };
}

/** Endpoints for a tenant: its own cloud's preset, or the default cloud (with overrides). */
export function endpointsFor(config: AppConfig, cloud: Cloud | undefined): CloudEndpoints {
  if (!cloud || cloud === config.defaultCloud) return config.endpoints;
  const { documentedScope: _ignored, ...endpoints } = CLOUD_PRESETS[cloud];
  return endpoints;
}
