import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { describe, it } from "node:test";
import * as oauth from "oauth4webapi";
import { encodeAlert, encodeKey, INLINE_PARTS, PART_BYTES, parseTime, toBatches } from "../shared/collection/alert-store.js";
import { CallBudget } from "../shared/collection/budget.js";
import { leaseTiming, parseTimeSpan } from "../shared/collection/lease-timing.js";
import { parseRetryAfter, STREAM_BATCH } from "../shared/collection/sources/odata-client.js";
import { DefenderSource } from "../shared/collection/sources/defender/client.js";
import type { RawAlert } from "../shared/collection/alert-store.js";
import { listenHttps, testCerts } from "../simulators/https.js";
import { classifyTokenError } from "../shared/platform/oauth.js";
import { ODataItemStream } from "../shared/collection/sources/odata-json.js";
import { compareTimes } from "../shared/collection/time.js";

/** A whole body through the stream at once: its items and envelope. */
function splitODataPage(text: string): { items: string[]; nextLink?: string; count?: number } {
  const stream = new ODataItemStream();
  const items = stream.feed(text);
  return { items, ...stream.end() };
}

describe("splitODataPage", () => {
  it("returns each item's exact source text, escapes and number formats included", () => {
    const text =
      '{"@odata.context":"x","value":[ {"id":"a","n":1.50,"s":"caf\\u00e9 \\"q\\" ]}"} ,\n{"id":"b","arr":[{"x":[1,2]}]} ],"@odata.nextLink":"https://n"}';
    const page = splitODataPage(text);
    assert.deepEqual(page.items, ['{"id":"a","n":1.50,"s":"caf\\u00e9 \\"q\\" ]}"}', '{"id":"b","arr":[{"x":[1,2]}]}']);
    assert.equal(page.nextLink, "https://n");
  });

  it("finds value even after other members that contain the word value", () => {
    const page = splitODataPage('{"note":"value","meta":{"value":[1]},"value":[{"id":"z"}]}');
    assert.deepEqual(page.items, ['{"id":"z"}']);
  });

  it("rejects scalar items and an unclosed array", () => {
    assert.throws(() => splitODataPage('{"value":[{"id":"a"},"b"]}'), SyntaxError);
    assert.throws(() => splitODataPage('{"value":[{"id":"a"},'), SyntaxError);
  });

  it("rejects a body without a value array", () => {
    assert.throws(() => splitODataPage('{"error":{}}'), SyntaxError);
  });
});

describe("ODataItemStream", () => {
  /** A deterministic generator, so a failure names a case that can be run again. */
  function random(seed: number): () => number {
    let state = seed;
    return () => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return state / 2147483648;
    };
  }

  it("cuts bodies fed at random byte boundaries into exactly the item texts JSON.parse sees (2,000 random bodies)", () => {
    const r = random(12345);
    const nasty = ['"}', "]", "[", ",", ":", "\\", '"', "é", "€", "😀", "\u2028", "value"];
    const scalar = (): unknown =>
      r() < 0.5 ? Math.floor(r() * 1e6) / 100 : `s${nasty[Math.floor(r() * nasty.length)]}${Math.floor(r() * 100)}`;
    const value = (depth: number): unknown => {
      const k = r();
      if (depth > 3 || k < 0.3) return scalar();
      if (k < 0.6) return Array.from({ length: Math.floor(r() * 4) }, () => value(depth + 1));
      const object: Record<string, unknown> = {};
      for (let i = 0; i < Math.floor(r() * 5); i++) object[`k${i}${r() < 0.2 ? '"}' : ""}`] = value(depth + 1);
      return object;
    };
    const encoder = new TextEncoder();
    for (let c = 0; c < 2000; c++) {
      const items = Array.from({ length: Math.floor(r() * 6) }, (_, i) => ({ id: `a${c}-${i}`, x: value(1) }));
      const texts = items.map((item) => JSON.stringify(item, null, r() < 0.3 ? 1 : undefined));
      const link = r() < 0.5 ? `,"@odata.nextLink":"https://n/${c}?a=\\"]"` : "";
      const early = r() < 0.5;
      const count = r() < 0.5 ? `,"@odata.count":${items.length}` : "";
      const body = `{"@odata.context":"x]\\"[value"${early ? link : ""},"value" : [ ${texts.join(" ,\n")} ]${early ? "" : link}${count}}`;
      const parsed = JSON.parse(body) as { value: unknown[]; "@odata.nextLink"?: string };
      const bytes = encoder.encode(body);
      const decoder = new TextDecoder("utf-8");
      const stream = new ODataItemStream();
      const got: string[] = [];
      for (let at = 0; at < bytes.length; ) {
        const size = 1 + Math.floor(r() * 20);
        got.push(...stream.feed(decoder.decode(bytes.subarray(at, at + size), { stream: true })));
        at += size;
      }
      got.push(...stream.feed(decoder.decode()));
      const envelope = stream.end();
      assert.deepEqual(got, texts, `case ${c}`);
      assert.deepEqual(
        got.map((t) => JSON.parse(t)),
        parsed.value,
        `case ${c}`,
      );
      assert.equal(envelope.nextLink, parsed["@odata.nextLink"], `case ${c}`);
    }
  });

  it("refuses a body that ends inside the value array", () => {
    const stream = new ODataItemStream();
    stream.feed('{"value":[{"id":"a"},{"id":');
    assert.throws(() => stream.end(), SyntaxError);
  });
});

describe("streamed pages", () => {
  it("hands items to the sink in batches while the rest of the answer is still downloading", async () => {
    const items = Array.from({ length: 1000 }, (_, i) =>
      JSON.stringify({ id: `da${i}`, lastUpdateTime: `2026-01-01T00:00:${String(i % 60).padStart(2, "0")}.1234567Z`, title: "x".repeat(200) }),
    );
    const body = `{"@odata.context":"c","value":[${items.join(",")}]}`;
    const half = body.indexOf(items[600]!);
    let firstBatch!: () => void;
    const firstBatchSeen = new Promise<void>((resolve) => {
      firstBatch = resolve;
    });
    let secondHalfSent = false;
    const server = await listenHttps(testCerts(), (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.write(body.slice(0, half));
      // The rest goes only once the sink saw items (or, if the client buffers the whole body, after a grace that fails the test).
      const fallback = setTimeout(firstBatch, 10_000);
      void firstBatchSeen.then(() => {
        clearTimeout(fallback);
        secondHalfSent = true;
        res.end(body.slice(half));
      });
    });
    try {
      const source = new DefenderSource({
        baseUrl: server.url,
        tenantId: "t",
        token: async () => "token",
        budget: new CallBudget({ perMinute: 100, perHour: 1000 }, 10, () => new Date()),
        sleep: async () => undefined,
        log: { info() {}, warn() {}, error() {} },
      });
      const batches: RawAlert[][] = [];
      let sentWhenFirstBatch: boolean | undefined;
      const answer = await source.readWindow(
        { from: 0, to: Date.parse("2027-01-01T00:00:00Z"), top: 10_000, full: true },
        { purpose: "incremental", beforeRequest: async () => undefined },
        async (batch) => {
          sentWhenFirstBatch ??= secondHalfSent;
          batches.push(batch);
          firstBatch();
        },
      );
      assert.equal(sentWhenFirstBatch, false, "the first batch reached the sink before the second half of the body was sent");
      assert.ok(batches.every((b) => b.length <= STREAM_BATCH));
      assert.deepEqual(
        batches.flat().map((a) => a.json),
        items,
      );
      assert.equal(answer.times.length, 1000);
      assert.equal(answer.full, false);
    } finally {
      await server.close();
    }
  });
});

describe("timestamps", () => {
  it("compares 1 to 7 fractional digits at full precision", () => {
    assert.equal(compareTimes("2024-01-01T00:00:00.1234567Z", "2024-01-01T00:00:00.1234566Z"), 1);
    assert.equal(compareTimes("2024-01-01T00:00:00.1Z", "2024-01-01T00:00:00.1000000Z"), 0);
    assert.equal(compareTimes("2024-01-01T00:00:00Z", "2024-01-01T00:00:00.0000001Z"), -1);
    assert.equal(compareTimes("2024-01-01T00:00:01.5Z", "2024-01-01T00:00:01.49Z"), 1);
  });

  it("parses to millisecond Dates for the Edm.DateTime columns", () => {
    assert.equal(parseTime("2024-01-01T00:00:00.1234567Z")?.toISOString(), "2024-01-01T00:00:00.123Z");
    assert.equal(parseTime("2024-01-01T00:00:00.5Z")?.toISOString(), "2024-01-01T00:00:00.500Z");
    assert.equal(parseTime(null), undefined);
  });
});

describe("CallBudget", () => {
  it("stops at the per-minute and hourly limits and carries the hour across runs", () => {
    let now = Date.parse("2026-01-01T00:00:00Z");
    const clock = () => new Date(now);
    const limits = { perMinute: 3, perHour: 5 };
    const budget = new CallBudget(limits, 10, clock);
    budget.take("incremental");
    budget.take("incremental");
    budget.take("incremental");
    assert.throws(() => budget.take("incremental"), /per-minute/);
    now += 60_000;
    const resumed = new CallBudget(limits, 10, clock, budget.serialize());
    resumed.take("incremental");
    resumed.take("incremental");
    assert.throws(() => resumed.take("incremental"), /hourly/);
    // The hour is the last 60 minutes: 60 minutes after the first calls, only the second
    // minute's two still count, so three more fit (then the per-minute limit stops it).
    now = Date.parse("2026-01-01T01:00:00Z");
    const hourLater = new CallBudget(limits, 10, clock, resumed.serialize());
    for (let i = 0; i < 3; i++) hourLater.take("incremental");
    assert.throws(() => hourLater.take("incremental"), /per-minute/);
    now += 60 * 60_000;
    new CallBudget(limits, 10, clock, resumed.serialize()).take("incremental");
  });

  it("keeps the sweep within its share of both limits, over the same minute and hour", () => {
    let now = Date.parse("2026-01-01T00:00:00Z");
    const clock = () => new Date(now);
    const budget = new CallBudget({ perMinute: 90, perHour: 1400 }, 10, clock);
    assert.deepEqual(budget.sweepLimits(), { perMinute: 9, perHour: 140 });
    for (let i = 0; i < 9; i++) budget.take("sweep");
    assert.throws(() => budget.take("sweep"), (err: Error & { shareOnly?: boolean }) => err.shareOnly === true);
    budget.take("incremental"); // the incremental pull still has its budget
    let perMinuteMax = 9;
    for (let minute = 1; minute < 60; minute++) {
      now += 60_000;
      let taken = 0;
      for (let i = 0; i < 20; i++) {
        try {
          budget.take("sweep");
          taken++;
        } catch {
          // the share ran out
        }
      }
      perMinuteMax = Math.max(perMinuteMax, taken);
    }
    assert.equal(perMinuteMax, 9);
    assert.equal(budget.used.sweep, 140, "at most 10 % of the hourly limit");
    assert.equal(budget.calls, 141, "the run's calls: the sweep's and the incremental one");
    budget.setSweepPercent(50);
    assert.deepEqual(budget.sweepLimits(), { perMinute: 45, perHour: 700 });
  });

  it("restores a budget saved before the sweep had a share (two-element buckets, as on old tenant rows)", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    const minute = now / 60_000;
    const clock = () => new Date(now);
    // The sweep may make 1 call a minute (10 %, at least one); the saved minute already used 2 of the 5.
    const budget = new CallBudget({ perMinute: 5, perHour: 100 }, 10, clock, JSON.stringify([[minute, 2]]));
    assert.deepEqual(budget.sweepLimits(), { perMinute: 1, perHour: 10 });
    budget.take("sweep");
    assert.throws(() => budget.take("sweep"), (err: Error & { shareOnly?: boolean }) => err.shareOnly === true, "the sweep's count starts at 0, not undefined");
    budget.take("incremental");
    budget.take("incremental");
    assert.throws(() => budget.take("incremental"), /per-minute/, "the two saved calls count");
  });

  it("ignores malformed entries of a saved budget, keeps the valid ones, and never lets bad state lift a limit", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    const minute = now / 60_000;
    const clock = () => new Date(now);
    const limits = { perMinute: 4, perHour: 2 };
    // A valid bucket of this minute, then malformed ones for the same minute that must not replace it.
    const saved = JSON.stringify([[minute, 1, 0], [minute], [minute, "9", 0], null, "x"]);
    const budget = new CallBudget(limits, 10, clock, saved);
    budget.take("incremental");
    assert.throws(() => budget.take("incremental"), /hourly/, "the valid bucket's call counts");
    for (const unreadable of ["not json", "{}", ""]) {
      const fresh = new CallBudget(limits, 10, clock, unreadable);
      fresh.take("incremental");
      fresh.take("incremental");
      assert.throws(() => fresh.take("incremental"), /hourly/, `starts empty from ${JSON.stringify(unreadable)}`);
    }
  });

  it("parses Retry-After seconds", () => {
    assert.equal(parseRetryAfter("7"), 7000);
    assert.equal(parseRetryAfter(" 7 "), 7000);
    assert.equal(parseRetryAfter(null), undefined);
  });

  it("parses a Retry-After HTTP date, and never to a negative or unreadable wait", () => {
    const wait = parseRetryAfter(new Date(Date.now() + 30_000).toUTCString());
    assert.ok(wait !== undefined && wait > 28_000 && wait <= 30_000, String(wait));
    assert.equal(parseRetryAfter("Fri, 31 Dec 1999 23:59:59 GMT"), 0, "a date in the past: no wait");
    assert.equal(parseRetryAfter("5s"), undefined);
    assert.ok((parseRetryAfter("-5") ?? 0) >= 0);
  });
});

describe("functionTimeout and the pull lease", () => {
  it("reads functionTimeout as the host reads a TimeSpan: days, seconds and fractions, nothing around it", () => {
    assert.equal(parseTimeSpan("00:10:00"), 10 * 60_000);
    assert.equal(parseTimeSpan("1.02:03:04.5"), (((24 + 2) * 60 + 3) * 60 + 4) * 1000 + 500);
    assert.equal(parseTimeSpan("12.00:00:00"), 12 * 24 * 3_600_000);
    assert.equal(parseTimeSpan("00:00:01.1234567"), 1123);
    for (const bad of ["x00:10:00", "00:10:00x", "00:10", "-1", "00:00:00", "00:00:00.0"]) assert.equal(parseTimeSpan(bad), undefined, bad);
  });

  it("takes the app setting over host.json only when it is set to something", () => {
    const hostJson = () => JSON.stringify({ functionTimeout: "00:10:00" });
    assert.equal(leaseTiming({ AzureFunctionsJobHost__functionTimeout: "  " }, hostJson).functionTimeoutMs, 10 * 60_000);
    assert.equal(leaseTiming({ AzureFunctionsJobHost__functionTimeout: " 00:20:00 " }, hostJson).functionTimeoutMs, 20 * 60_000);
  });
});

describe("classifyTokenError", () => {
  function entraError(status: number, error: string, code: number): oauth.ResponseBodyError {
    const body = { error, error_description: `AADSTS${code}: Something. Trace ID: abc Correlation ID: def`, error_codes: [code] };
    return new oauth.ResponseBodyError("server responded with an error", {
      cause: body,
      response: new Response(JSON.stringify(body), { status }),
    });
  }

  it("classifies by AADSTS code before the error field", () => {
    for (const code of [700082, 70008, 50173, 70043, 65001, 50076, 53003]) {
      assert.equal(classifyTokenError(entraError(400, "invalid_grant", code)).kind, "reconsent", String(code));
    }
    assert.equal(classifyTokenError(entraError(400, "invalid_resource", 500011)).kind, "tenant");
    assert.equal(classifyTokenError(entraError(401, "invalid_client", 7000222)).kind, "client");
    assert.equal(classifyTokenError(entraError(401, "invalid_client", 7000215)).kind, "client");
    assert.equal(classifyTokenError(entraError(400, "invalid_grant", 7000222)).kind, "client");
    assert.equal(classifyTokenError(entraError(503, "temporarily_unavailable", 0)).kind, "transient");
    const detail = classifyTokenError(entraError(400, "invalid_grant", 70008));
    assert.equal(detail.code, "AADSTS70008");
    assert.doesNotMatch(detail.message, /Trace ID/);
  });

  it("treats network failures as transient", () => {
    assert.equal(classifyTokenError(new TypeError("fetch failed")).kind, "transient");
  });
});

describe("alert encoding", () => {
  it("percent-encodes characters Table Storage forbids in keys", () => {
    assert.equal(encodeKey("da637308392288907382_-880718168"), "da637308392288907382_-880718168");
    assert.equal(encodeKey("a/b\\c#d?e%f|g"), "a%2fb%5cc%23d%3fe%25f%7cg");
  });

  it("keeps the body in 64 KiB parts and overflows past the inline limit", () => {
    const noise = Array.from({ length: 400_000 }, (_, i) => ((i * 2654435761) >>> 0).toString(36)).join("");
    const json = JSON.stringify({ id: "big", lastUpdateTime: "2024-01-01T00:00:00Z", noise });
    const encoded = encodeAlert("t", { id: "big", json, lastUpdateTime: "2024-01-01T00:00:00Z", fields: JSON.parse(json) });
    const inline = Object.keys(encoded.row).filter((k) => /^body\d+$/.test(k));
    assert.equal(inline.length, INLINE_PARTS);
    assert.ok(encoded.overflow.length >= 1);
    const parts = [
      ...inline.map((k) => encoded.row[k] as Uint8Array),
      ...encoded.overflow.flatMap((r) => Object.keys(r).filter((k) => /^body\d+$/.test(k)).map((k) => r[k] as Uint8Array)),
    ];
    assert.ok(parts.every((p) => p.length <= PART_BYTES));
    assert.equal(gunzipSync(Buffer.concat(parts)).toString("utf8"), json);
  });

  it("batches at most 100 entities and stays under the payload cap", () => {
    const items = Array.from({ length: 250 }, () => ({ bytes: 10_000 }));
    assert.deepEqual(toBatches(items).map((b) => b.length), [100, 100, 50]);
    const heavy = Array.from({ length: 5 }, () => ({ bytes: 1_500_000 }));
    assert.deepEqual(toBatches(heavy).map((b) => b.length), [2, 2, 1]);
  });
});
