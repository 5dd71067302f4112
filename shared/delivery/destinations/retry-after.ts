/**
 * `Retry-After` as milliseconds: delta seconds (`120`) or an HTTP date, measured against
 * `now` (the destination's clock, so a virtual clock in tests works). Undefined when the
 * header is absent or unreadable; never negative.
 */
export function retryAfterMs(value: string | null | undefined, now: Date): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.ceil(Number(text) * 1000);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now.getTime());
}
