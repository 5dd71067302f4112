import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * How the pull lease relates to the Functions host's own limits (see docs/collection.md):
 * - the host kills an invocation after `functionTimeout` (host.json, or the app setting
 *   `AzureFunctionsJobHost__functionTimeout`, which overrides it);
 * - the lease must outlive that, so that a holder that is killed mid-run never overlaps a
 *   successor: the successor can only take the lease after the killed run is gone;
 * - a holder checks locally, before every write batch, that `now + LEASE_SAFETY_MS` is
 *   still before the lease's end, and renews it when less than half remains.
 */
export const LEASE_SAFETY_MS = 30_000;
/** How much longer than the function timeout a lease lasts. */
export const LEASE_MARGIN_MS = 2 * 60_000;

export interface LeaseTiming {
  functionTimeoutMs: number;
  leaseTtlMs: number;
  safetyMs: number;
}

/** Parses a .NET TimeSpan as host.json writes it: `hh:mm:ss`, `d.hh:mm:ss`, with optional fractions. */
export function parseTimeSpan(value: string): number | undefined {
  const match = /^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$/.exec(value.trim());
  if (!match) return undefined;
  const [, days, hours, minutes, seconds, fraction] = match;
  const ms =
    ((Number(days ?? 0) * 24 + Number(hours)) * 60 + Number(minutes)) * 60_000 +
    Number(seconds) * 1000 +
    Math.round(Number(`0.${fraction ?? "0"}`) * 1000);
  return ms > 0 ? ms : undefined;
}

export class LeaseTimingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** The host.json next to the compiled app (the package root), read once. */
export function hostJsonPath(): string {
  // dist/shared/collection/lease-timing.js -> the package root holds host.json and dist/.
  return join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "host.json");
}

/**
 * The effective function timeout and the lease derived from it. An unbounded or unreadable
 * timeout is a configuration error: a lease cannot be sized against it.
 */
export function leaseTiming(
  env: Record<string, string | undefined> = process.env,
  readHostJson: () => string = () => readFileSync(hostJsonPath(), "utf8"),
): LeaseTiming {
  const override = env.AzureFunctionsJobHost__functionTimeout?.trim();
  let raw = override;
  let source = "AzureFunctionsJobHost__functionTimeout";
  if (!raw) {
    source = "host.json functionTimeout";
    try {
      raw = (JSON.parse(readHostJson()) as { functionTimeout?: unknown }).functionTimeout as string | undefined;
    } catch {
      raw = undefined;
    }
  }
  const functionTimeoutMs = typeof raw === "string" ? parseTimeSpan(raw) : undefined;
  if (functionTimeoutMs === undefined) {
    throw new LeaseTimingError(`${source} must be a bounded time span such as 00:10:00`);
  }
  return { functionTimeoutMs, leaseTtlMs: functionTimeoutMs + LEASE_MARGIN_MS, safetyMs: LEASE_SAFETY_MS };
}
