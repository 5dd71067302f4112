/** Times and figures in words an operator reads at a glance. */

export function ago(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "never";
  const ms = now - Date.parse(iso);
  if (Number.isNaN(ms)) return "unknown";
  if (ms < 0) return "just now";
  const s = Math.round(ms / 1000);
  if (s < 90) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.round(h / 24)} days ago`;
}

export function duration(seconds: number | undefined): string {
  if (seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** How far the newest stored alert is behind now. */
export function lag(watermark: string | undefined, now = Date.now()): string {
  if (!watermark) return "–";
  const t = Date.parse(watermark);
  return Number.isNaN(t) ? "–" : duration(Math.max(0, (now - t) / 1000));
}

export function when(iso: string | undefined): string {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export const STATUS_WORDS: Record<string, string> = {
  pending: "waiting for consent",
  active: "collecting",
  "reconsent-required": "needs consent again",
  offboarded: "offboarded",
};
