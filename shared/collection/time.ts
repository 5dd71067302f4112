/**
 * Alert times at full precision. Defender and Graph send ISO 8601 times with 0 to 7
 * fractional digits (100 ns ticks); JavaScript Dates hold milliseconds. Comparisons that
 * decide which version of an alert wins use ticks since the Unix epoch as a bigint.
 */

const TICKS_PER_MS = 10_000n;

/** Ticks (100 ns) since the Unix epoch, or undefined for a value that is not an ISO time. */
export function toTicks(value: string): bigint | undefined {
  const match = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,7})\d*)?(Z|[+-]\d{2}:?\d{2})?$/i.exec(value.trim());
  if (!match) return undefined;
  const zone = (match[3] ?? "Z").replace(/^([+-]\d{2})(\d{2})$/, "$1:$2");
  const whole = Date.parse(`${match[1]}${zone}`);
  if (Number.isNaN(whole)) return undefined;
  return BigInt(whole) * TICKS_PER_MS + BigInt((match[2] ?? "").padEnd(7, "0"));
}

/** Compares two alert times at full precision; unparseable values sort first. */
export function compareTimes(a: string, b: string): number {
  const ta = toTicks(a) ?? -1n;
  const tb = toTicks(b) ?? -1n;
  return ta < tb ? -1 : ta > tb ? 1 : 0;
}

/** The fixed-width UTC form `2026-01-31T12:00:00.1234567Z`, which sorts as text like the time. */
export function formatTicks(ticks: bigint): string {
  const ms = ticks / TICKS_PER_MS;
  const fraction = (ticks % TICKS_PER_MS).toString().padStart(4, "0");
  return `${new Date(Number(ms)).toISOString().slice(0, 23)}${fraction}Z`;
}

/** The canonical fixed-width form of an alert time, or undefined if it does not parse. */
export function canonicalTime(value: string): string | undefined {
  const ticks = toTicks(value);
  return ticks === undefined ? undefined : formatTicks(ticks);
}

/** Milliseconds since the epoch (truncated), for window arithmetic. */
export function timeMs(value: string): number | undefined {
  const ticks = toTicks(value);
  return ticks === undefined ? undefined : Number(ticks / TICKS_PER_MS);
}

/** Parses an alert time to a Date (millisecond precision), for the Edm.DateTime columns. */
export function parseTime(value: unknown): Date | undefined {
  if (typeof value !== "string") return undefined;
  const ms = timeMs(value);
  return ms === undefined ? undefined : new Date(ms);
}
