/**
 * What the dev host reads from host.json, with the Functions host's defaults, and the app
 * settings that override host.json (`AzureFunctionsJobHost__extensions__queues__batchSize`
 * and the like, as on Azure and under Core Tools).
 */
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { HostError } from "./core-module.js";
import type { RpcLogLevel } from "./rpc.js";

export type Settings = Record<string, string | undefined>;

export interface QueueOptions {
  batchSize: number;
  newBatchThreshold: number;
  maxDequeueCount: number;
  /** How long a failed message stays invisible before it is retried (host.json visibilityTimeout). */
  visibilityTimeoutMs: number;
  maxPollingIntervalMs: number;
  messageEncoding: "base64" | "none";
}

export interface HostConfig {
  routePrefix: string;
  queues: QueueOptions;
  /** host.json functionTimeout; undefined = none. */
  functionTimeoutMs?: number;
  /** Lowest level printed for function (user) logs and for everything else. */
  logLevel: { function: RpcLogLevel; default: RpcLogLevel };
}

const OVERRIDE_PREFIX = "azurefunctionsjobhost__";
/** The queue listener's bounds (QueuePollingIntervals.Minimum and QueuesOptions.MaxBatchSize). */
export const MIN_POLLING_INTERVAL_MS = 100;
const MAX_BATCH_SIZE = 32;

/** Reads `<root>/host.json` and applies the `AzureFunctionsJobHost__*` settings. */
export function readHostConfig(root: string, settings: Settings): HostConfig {
  const path = join(root, "host.json");
  let json: Record<string, unknown> = {};
  if (existsSync(path)) {
    try {
      json = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    } catch (err) {
      throw new HostError(`host.json is not valid JSON: ${(err as Error).message}`);
    }
  }
  for (const [name, value] of Object.entries(settings)) {
    if (value === undefined || !name.toLowerCase().startsWith(OVERRIDE_PREFIX)) continue;
    setPath(json, name.slice(OVERRIDE_PREFIX.length).split("__"), value);
  }
  const extensions = object(get(json, "extensions"));
  const http = object(get(extensions, "http"));
  const queues = object(get(extensions, "queues"));
  const logLevels = object(get(object(get(json, "logging")), "logLevel"));

  const batchSize = integer(get(queues, "batchSize"), "extensions.queues.batchSize", 16, 1, MAX_BATCH_SIZE);
  const threshold = integer(get(queues, "newBatchThreshold"), "extensions.queues.newBatchThreshold", -1, -1, 10_000);
  const encoding = String(get(queues, "messageEncoding") ?? "base64").toLowerCase();
  if (encoding !== "base64" && encoding !== "none") {
    throw new HostError(`host.json extensions.queues.messageEncoding must be "base64" or "none"`);
  }
  const prefix = get(http, "routePrefix");
  const timeout = get(json, "functionTimeout");
  return {
    routePrefix: typeof prefix === "string" ? prefix.replace(/^\/+|\/+$/g, "") : "api",
    queues: {
      batchSize,
      // -1 (the default) means half the batch size per processor, as the queue extension computes it.
      newBatchThreshold: threshold === -1 ? Math.floor(batchSize / 2) * availableParallelism() : threshold,
      maxDequeueCount: integer(get(queues, "maxDequeueCount"), "extensions.queues.maxDequeueCount", 5, 1, 1_000_000),
      visibilityTimeoutMs: timeSpan(get(queues, "visibilityTimeout"), "extensions.queues.visibilityTimeout", 0),
      maxPollingIntervalMs: Math.max(
        MIN_POLLING_INTERVAL_MS,
        timeSpan(get(queues, "maxPollingInterval"), "extensions.queues.maxPollingInterval", 60_000),
      ),
      messageEncoding: encoding,
    },
    ...(timeout === undefined || timeout === null || timeout === "-1"
      ? {}
      : { functionTimeoutMs: timeSpan(timeout, "functionTimeout", 0) }),
    logLevel: {
      function: logLevel(get(logLevels, "Function") ?? get(logLevels, "default")),
      default: logLevel(get(logLevels, "default")),
    },
  };
}

/** Parses a .NET TimeSpan as host.json writes it: `[d.]hh:mm[:ss[.fffffff]]`. */
export function parseTimeSpan(text: string): number | undefined {
  const m = /^(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$/.exec(text.trim());
  if (!m) return undefined;
  const [, days, hours, minutes, seconds, fraction] = m;
  if (Number(hours) > 23 || Number(minutes) > 59 || Number(seconds ?? 0) > 59) return undefined;
  return (
    (((Number(days ?? 0) * 24 + Number(hours)) * 60 + Number(minutes)) * 60 + Number(seconds ?? 0)) * 1000 +
    Math.round(Number(`0.${fraction ?? 0}`) * 1000)
  );
}

/**
 * Resolves `%NAME%` references in a binding property from the app settings, as the host
 * does for `schedule`, `queueName` and the like. Throws naming the missing setting.
 */
export function resolveSettingRefs(value: string, settings: Settings, what: string): string {
  return value.replace(/%([^%]+)%/g, (_all, name: string) => {
    const resolved = lookup(settings, name);
    if (resolved === undefined) throw new HostError(`${what} refers to app setting %${name}%, which is not set.`);
    return resolved;
  });
}

/** A setting by name; names are case-insensitive, as app settings are on Azure. */
export function lookup(settings: Settings, name: string): string | undefined {
  if (settings[name] !== undefined) return settings[name];
  const lower = name.toLowerCase();
  for (const [key, value] of Object.entries(settings)) if (key.toLowerCase() === lower && value !== undefined) return value;
  return undefined;
}

const LEVELS: RpcLogLevel[] = ["trace", "debug", "information", "warning", "error", "critical", "none"];

/** True when `level` is at least `minimum`. */
export function levelAtLeast(level: RpcLogLevel, minimum: RpcLogLevel): boolean {
  return LEVELS.indexOf(level) >= LEVELS.indexOf(minimum);
}

function logLevel(value: unknown): RpcLogLevel {
  const text = typeof value === "string" ? value.toLowerCase() : "information";
  if (text === "info") return "information";
  return (LEVELS as string[]).includes(text) ? (text as RpcLogLevel) : "information";
}

function get(target: Record<string, unknown>, key: string): unknown {
  if (key in target) return target[key];
  const lower = key.toLowerCase();
  for (const [k, v] of Object.entries(target)) if (k.toLowerCase() === lower) return v;
  return undefined;
}

function object(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function setPath(target: Record<string, unknown>, path: string[], value: string): void {
  let node = target;
  for (const [i, part] of path.entries()) {
    const existing = Object.keys(node).find((k) => k.toLowerCase() === part.toLowerCase()) ?? part;
    if (i === path.length - 1) {
      node[existing] = value;
      return;
    }
    if (typeof node[existing] !== "object" || node[existing] === null) node[existing] = {};
    node = node[existing] as Record<string, unknown>;
  }
}

function integer(value: unknown, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined || value === null || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new HostError(`host.json ${name} must be an integer from ${min} to ${max}`);
  return n;
}

function timeSpan(value: unknown, name: string, fallback: number): number {
  if (value === undefined || value === null || value === "") return fallback;
  const ms = parseTimeSpan(String(value));
  if (ms === undefined) throw new HostError(`host.json ${name} must be a time span like "00:00:30"`);
  return ms;
}
