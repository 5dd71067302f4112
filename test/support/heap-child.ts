/**
 * Child of test/pull-heap.test.ts, run with `--expose-gc`: reads one window of a tenant from
 * the Defender fake through the pull's own read path (WindowReader, DefenderSource, the
 * streaming OData client) into a sink that only counts, forcing a GC and sampling the live
 * heap at every batch the sink receives. Prints one JSON line:
 * `{ items, calls, bytes, peakGrowth }` (bytes: the answer's size; peakGrowth: the highest
 * live heap after GC while the answer streamed, minus the live heap before the pull).
 *
 * argv: <fake base URL> <bearer> <from ms> <to ms> <page size>
 */
import v8 from "node:v8";
import { CallBudget } from "../../shared/collection/budget.js";
import { DefenderSource } from "../../shared/collection/sources/defender/client.js";
import { WindowReader } from "../../shared/collection/windows.js";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("heap-child needs --expose-gc");
const [baseUrl, bearer, fromText, toText, pageText] = process.argv.slice(2);
if (!baseUrl || !bearer || !fromText || !toText || !pageText) throw new Error("usage: heap-child <url> <bearer> <from> <to> <page>");

const live = () => {
  gc();
  return v8.getHeapStatistics().used_heap_size;
};

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
const budget = new CallBudget({ perMinute: 1_000, perHour: 10_000 }, 10, () => new Date());
const source = new DefenderSource({
  tenantId: "heap",
  baseUrl,
  budget,
  token: async () => bearer,
  sleep: async () => undefined,
  log: quiet,
});
let items = 0;
let peak = 0;
const baseline = live();
const reader = new WindowReader({
  source,
  pageSize: Number(pageText),
  purpose: "incremental",
  full: true,
  openLeaf: async () => ({
    write: async (alerts) => {
      items += alerts.length;
      peak = Math.max(peak, live() - baseline);
    },
    end: async () => undefined,
  }),
  onSkip: async (slice) => {
    throw new Error(`slice skipped: ${slice.code}`);
  },
  beforeRequest: async () => undefined,
});
await reader.read(Number(fromText), Number(toText));
process.stdout.write(`${JSON.stringify({ items, calls: budget.calls, bytes: source.bytes.incremental, peakGrowth: peak })}\n`);
