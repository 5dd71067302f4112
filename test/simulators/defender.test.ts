import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { Agent, request } from "undici";
import { ensureCerts } from "../../simulators/tls.js";
import {
  ALERT_KEYS,
  type DefenderAlert,
  EVIDENCE_KEYS,
  formatTimestamp,
  makeAlert,
  makeAlerts,
  makeLargeAlert,
  parseTimestamp,
} from "../../simulators/alerts.js";
import { FakeDefender } from "../../simulators/defender.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const certs = ensureCerts(join(root, ".cache", "tls"));
// The reference alert lives outside the repo in this workspace; CI checks the key list alone.
const referencePath = join(root, "..", "shared", "reference", "defender-alert.example.json");
const reference = existsSync(referencePath)
  ? (JSON.parse(readFileSync(referencePath, "utf8")) as Record<string, unknown>)
  : null;

const TENANT = "11111111-1111-4111-8111-111111111111";
const OTHER = "22222222-2222-4222-8222-222222222222";
const tokenFor = (tenantId: string) => `token-for:${tenantId}`;
const authenticate = async (bearer: string) =>
  bearer.startsWith("token-for:") ? { tenantId: bearer.slice("token-for:".length) } : null;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: {
    "@odata.context"?: string;
    "@odata.nextLink"?: string;
    value: DefenderAlert[];
    error?: { code: string; message: string; target: string };
  };
}

describe("alert generator", () => {
  it("copies the real alert's key set and order, for alerts and evidence", () => {
    const alert = makeAlert({ lastUpdateTime: new Date("2024-03-01T12:00:00Z"), seed: 1, evidenceCount: 5 });
    if (reference) {
      assert.deepEqual([...ALERT_KEYS], Object.keys(reference));
      const refEvidence = (reference.evidence as Record<string, unknown>[])[0] as Record<string, unknown>;
      assert.deepEqual([...EVIDENCE_KEYS], Object.keys(refEvidence));
    }
    assert.equal(ALERT_KEYS.length, 29);
    assert.equal(EVIDENCE_KEYS.length, 25);
    assert.deepEqual(Object.keys(alert), [...ALERT_KEYS]);
    for (const ev of alert.evidence) assert.deepEqual(Object.keys(ev), [...EVIDENCE_KEYS]);
  });

  it("is deterministic per seed and varies ids, digits, nulls and unicode", () => {
    const a = makeAlert({ lastUpdateTime: new Date("2024-03-01T12:00:00Z"), seed: "x" });
    const b = makeAlert({ lastUpdateTime: new Date("2024-03-01T12:00:00Z"), seed: "x" });
    assert.deepEqual(a, b);
    const many = makeAlerts({ count: 400, from: new Date("2024-01-01Z"), to: new Date("2024-02-01Z"), seed: 7 });
    assert.equal(new Set(many.map((x) => x.id)).size, 400);
    for (const alert of many) {
      assert.match(alert.id, /^da\d{18}_-?\d+$/);
      assert.notEqual(parseTimestamp(alert.lastUpdateTime), null);
      assert.ok(parseTimestamp(alert.alertCreationTime)! <= parseTimestamp(alert.lastUpdateTime)!);
    }
    assert.ok(many.some((x) => x.id.includes("_-")));
    const digits = new Set(many.map((x) => /\.(\d+)Z$/.exec(x.lastUpdateTime)![1]!.length));
    assert.deepEqual([...digits].sort(), [1, 2, 3, 4, 5, 6, 7]);
    assert.ok(many.some((x) => x.investigationId === null && x.relatedUser === null));
    assert.ok(many.some((x) => /[^\x20-\x7e]/.test(x.title)));
    assert.ok(many.some((x) => x.status === "Resolved" && x.resolvedTime !== null));
  });

  it("formats and parses 7-digit timestamps exactly", () => {
    const ticks = parseTimestamp("2020-07-21T10:15:26.1234567Z")!;
    assert.equal(formatTimestamp(ticks, 7), "2020-07-21T10:15:26.1234567Z");
    assert.equal(formatTimestamp(ticks, 2), "2020-07-21T10:15:26.12Z");
    assert.equal(parseTimestamp("2020-07-21T10:15:26.1Z")! - parseTimestamp("2020-07-21T10:15:26Z")!, 1_000_000n);
    assert.equal(parseTimestamp("2020-07-21T12:15:26+02:00"), parseTimestamp("2020-07-21T10:15:26Z"));
    assert.equal(parseTimestamp("2020-07-21T10:15:26.12345678Z"), null);
    assert.equal(makeAlert({ lastUpdateTime: new Date("2024-01-01T00:00:00.987Z"), fractionDigits: 2 }).lastUpdateTime, "2024-01-01T00:00:00.98Z");
  });

  it("makes multi-MiB alerts that do not compress trivially", () => {
    const alert = makeLargeAlert(4 * 1024 * 1024, { seed: 3 });
    const json = Buffer.from(JSON.stringify(alert));
    assert.ok(json.length >= 4 * 1024 * 1024 && json.length < 4.1 * 1024 * 1024, `size ${json.length}`);
    assert.ok(new Set(alert.evidence.map((e) => e.sha256)).size > 1000);
    const ratio = gzipSync(json).length / json.length;
    assert.ok(ratio > 0.2, `gzip ratio ${ratio}`);
  });
});

describe("FakeDefender", () => {
  let clock = 1_700_000_000_000;
  const fake = new FakeDefender({ certs, authenticate, now: () => clock });
  const paged = new FakeDefender({ certs, authenticate, now: () => clock, defaultPageSize: 4 });
  const agent = new Agent({ connect: { ca: certs.caPem } });

  async function get(path: string, token: string | null = tokenFor(TENANT), server = fake): Promise<Reply> {
    const url = path.startsWith("https://") ? path : `${server.url}${path}`;
    const res = await request(url, {
      dispatcher: agent,
      headers: token === null ? {} : { authorization: `Bearer ${token}` },
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, body: JSON.parse(text) };
  }
  const list = (query: string, server = fake, token: string | null = tokenFor(TENANT)) => get(`/api/alerts${query}`, token, server);
  const ids = (reply: Reply) => reply.body.value.map((a) => a.id);
  const filter = (f: string) => `?$filter=${encodeURIComponent(f)}`;

  const at = (lastUpdateTime: string, id: string) =>
    makeAlert({ id, lastUpdateTime, seed: id, evidenceCount: 3, aadTenantId: TENANT });
  const boundary = [
    at("2024-05-01T10:00:00.1234567Z", "da638501112001234567_1"),
    at("2024-05-01T10:00:00.1234568Z", "da638501112001234568_-2"),
    at("2024-05-01T10:00:00.123Z", "da638501112001230000_3"),
    at("2024-05-01T10:00:00.1234Z", "da638501112001234000_-4"),
    at("2024-05-01T10:00:01.9Z", "da638501112019000000_5"),
  ];

  before(async () => {
    await fake.start();
    await paged.start();
  });
  after(async () => {
    await fake.stop();
    await paged.stop();
    await agent.close();
  });

  it("filters lastUpdateTime at 100-ns precision with ge/gt/lt/le and and", async () => {
    fake.setAlerts(TENANT, boundary);
    const t = "2024-05-01T10:00:00.1234567Z";
    const sorted = (r: Reply) => ids(r).sort();
    assert.deepEqual(sorted(await list(filter(`lastUpdateTime ge ${t}`))), [
      "da638501112001234567_1",
      "da638501112001234568_-2",
      "da638501112019000000_5",
    ]);
    assert.deepEqual(sorted(await list(filter(`lastUpdateTime gt ${t}`))), [
      "da638501112001234568_-2",
      "da638501112019000000_5",
    ]);
    assert.deepEqual(sorted(await list(filter(`lastUpdateTime lt ${t}`))), [
      "da638501112001230000_3",
      "da638501112001234000_-4",
    ]);
    assert.deepEqual(sorted(await list(filter(`lastUpdateTime le ${t}`))), [
      "da638501112001230000_3",
      "da638501112001234000_-4",
      "da638501112001234567_1",
    ]);
    assert.deepEqual(
      sorted(await list(filter(`lastUpdateTime gt 2024-05-01T10:00:00.123Z and lastUpdateTime le 2024-05-01T10:00:00.1234567Z`))),
      ["da638501112001234000_-4", "da638501112001234567_1"],
    );
    assert.deepEqual(sorted(await list(filter("lastUpdateTime ge 2024-05-01T10:00:01Z"))), ["da638501112019000000_5"]);
    assert.equal((await list(filter("lastUpdateTime ge 2024-05-02"))).body.value.length, 0);
    const created = boundary[0]!.alertCreationTime;
    assert.ok(ids(await list(filter(`alertCreationTime ge ${created} and alertCreationTime le ${created}`))).includes(boundary[0]!.id));
  });

  it("rejects invalid filters with 400", async () => {
    fake.setAlerts(TENANT, boundary);
    for (const bad of [
      "lastUpdateTime ge '2024-05-01T10:00:00Z'",
      "lastUpdateTime ge 2024-05-01T10:00:00.12345678Z",
      "lastUpdateTime ge 2024-05-01T10:00:00",
      "lastUpdateTime >= 2024-05-01T10:00:00Z",
      "lastUpdateTime ge 2024-13-01T10:00:00Z",
      "noSuchProperty ge 2024-05-01T10:00:00Z",
      "lastUpdateTime ge 2024-05-01T10:00:00Z and",
      "(lastUpdateTime ge 2024-05-01T10:00:00Z",
    ]) {
      const reply = await list(filter(bad));
      assert.equal(reply.status, 400, bad);
      assert.equal(reply.body.error?.code, "ODataError", bad);
    }
    assert.equal((await list("?$orderby=lastUpdateTime")).status, 400);
    assert.equal((await list("?$expand=machine")).status, 400);
    assert.equal((await list("?$top=-1")).status, 400);
  });

  it("caps $top at 10,000 and never sends nextLink with $top", async () => {
    const tooMany = await list("?$top=10001");
    assert.equal(tooMany.status, 400);
    assert.match(tooMany.body.error!.message, /limit of '10000' for Top query/);

    const alerts = makeAlerts({ count: 10, from: new Date("2024-01-01Z"), to: new Date("2024-01-02Z"), seed: 2 });
    paged.setAlerts(TENANT, alerts);
    const top = await list("?$top=3", paged);
    assert.equal(top.status, 200);
    assert.equal(top.body.value.length, 3);
    assert.equal(top.body["@odata.nextLink"], undefined);
    const topSkip = await list("?$top=3&$skip=9", paged);
    assert.equal(topSkip.body.value.length, 1);
    assert.equal(topSkip.body["@odata.nextLink"], undefined);
  });

  it("pages with @odata.nextLink and $skip when $top is absent", async () => {
    const alerts = makeAlerts({ count: 10, from: new Date("2024-01-01Z"), to: new Date("2024-01-02Z"), seed: 3 });
    paged.setAlerts(TENANT, alerts);
    const first = await list(filter("lastUpdateTime ge 2024-01-01T00:00:00Z") + "&$expand=evidence", paged);
    assert.equal(first.headers["content-type"], "application/json; odata.metadata=minimal");
    assert.equal(first.body["@odata.context"], `${paged.url}/api/$metadata#Alerts`);
    const seen = ids(first);
    assert.equal(seen.length, 4);
    let next = first.body["@odata.nextLink"];
    assert.match(next!, /\$skip=4$/);
    assert.match(next!, /\$filter=lastUpdateTime%20ge%202024-01-01T00%3A00%3A00Z/);
    let pages = 1;
    while (next) {
      const page = await get(next, tokenFor(TENANT), paged);
      assert.ok(page.body.value.every((a) => a.evidence.length === alerts.find((x) => x.id === a.id)!.evidence.length));
      seen.push(...ids(page));
      next = page.body["@odata.nextLink"];
      pages++;
    }
    assert.equal(pages, 3);
    assert.deepEqual([...seen].sort(), alerts.map((a) => a.id).sort());
  });

  it("returns items unsorted, in an order that changes when any alert changes", async () => {
    const alerts = makeAlerts({ count: 40, from: new Date("2024-01-01Z"), to: new Date("2024-01-02Z"), seed: 4 });
    fake.setAlerts(TENANT, alerts);
    const one = ids(await list(""));
    const two = ids(await list(""));
    assert.deepEqual(one, two);
    const byTime = [...alerts].sort((a, b) => Number(parseTimestamp(a.lastUpdateTime)! - parseTimestamp(b.lastUpdateTime)!));
    assert.notDeepEqual(one, byTime.map((a) => a.id));
    assert.notDeepEqual(one, alerts.map((a) => a.id));

    const [touched] = fake.touch(TENANT, [alerts[5]!.id], new Date("2024-01-03T00:00:00Z"), { status: "Resolved" });
    assert.match(touched!.lastUpdateTime, /^2024-01-03T00:00:00\.000\d{4}Z$/);
    const three = ids(await list(""));
    assert.notDeepEqual(three, one);
    assert.deepEqual([...three].sort(), [...one].sort());
    const reply = await list(filter("lastUpdateTime ge 2024-01-03T00:00:00Z"));
    assert.deepEqual(ids(reply), [alerts[5]!.id]);
    assert.equal(reply.body.value[0]!.status, "Resolved");
  });

  it("sends evidence only with $expand=evidence, and always for a single alert", async () => {
    fake.setAlerts(TENANT, boundary);
    const plain = await list("");
    assert.ok(plain.body.value.every((a) => Array.isArray(a.evidence) && a.evidence.length === 0));
    assert.ok(plain.body.value.every((a) => Object.keys(a).join() === ALERT_KEYS.join()));
    const expanded = await list("?$expand=evidence");
    for (const a of expanded.body.value) assert.deepEqual(a, boundary.find((b) => b.id === a.id));
    assert.equal(fake.getAlerts(TENANT)[0]!.evidence.length, 3);

    const single = await get(`/api/alerts/${encodeURIComponent(boundary[1]!.id)}`);
    assert.equal(single.status, 200);
    const { "@odata.context": context, ...rest } = single.body as unknown as Record<string, unknown>;
    assert.equal(context, `${fake.url}/api/$metadata#Alerts/$entity`);
    assert.deepEqual(rest, boundary[1]);
    assert.equal((await get("/api/alerts/da000_1")).status, 404);
  });

  it("answers 401 without a valid token and 403 for a forbidden tenant", async () => {
    const missing = await list("", fake, null);
    assert.equal(missing.status, 401);
    assert.equal(missing.body.error?.code, "Unauthorized");
    assert.match(missing.body.error!.target, /^[0-9a-f-]{36}$/);
    assert.equal((await list("", fake, "garbage")).status, 401);

    fake.forbid(OTHER);
    const forbidden = await list("", fake, tokenFor(OTHER));
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.body.error?.code, "Forbidden");
    fake.allow(OTHER);
    const ok = await list("", fake, tokenFor(OTHER));
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body.value, []);
  });

  it("injects 429 with Retry-After, 500, 503 and delays", async () => {
    fake.setAlerts(TENANT, boundary);
    fake.inject(TENANT, { status: 429, retryAfterSeconds: 17 });
    fake.inject(TENANT, { status: 503 });
    fake.inject("*", { status: 500 });
    const throttled = await list("");
    assert.equal(throttled.status, 429);
    assert.equal(throttled.headers["retry-after"], "17");
    assert.equal(throttled.body.error?.code, "TooManyRequests");
    assert.equal((await list("")).status, 503);
    assert.equal((await list("", fake, tokenFor(OTHER))).status, 500);
    assert.equal((await list("")).status, 200);

    fake.inject(TENANT, { delayMs: 150 });
    const started = performance.now();
    const delayed = await list("");
    assert.equal(delayed.status, 200);
    assert.ok(performance.now() - started >= 140);
  });

  it("injects connection resets and truncated bodies that make undici throw", async () => {
    fake.setAlerts(TENANT, boundary);
    fake.inject(TENANT, { reset: true });
    await assert.rejects(list(""), (err: Error & { code?: string }) => {
      assert.match(String(err.code ?? err.name), /UND_ERR_SOCKET|ECONNRESET|SocketError/);
      return true;
    });
    fake.inject(TENANT, { truncateAfterBytes: 500 });
    await assert.rejects(list("?$expand=evidence"));
    assert.equal((await list("")).status, 200);
    const log = fake.requests(TENANT).slice(-3);
    assert.deepEqual(
      log.map((e) => e.status),
      [0, 0, 200],
    );
    assert.equal(log[1]!.bytes, 500);
  });

  it("logs requests per tenant with clock times, queries, windows and statuses", async () => {
    fake.clearRequests();
    fake.setAlerts(TENANT, boundary);
    clock = 1_700_000_000_000;
    await list(filter("lastUpdateTime ge 2024-05-01T10:00:00Z and lastUpdateTime lt 2024-05-01T11:00:00.5Z") + "&$top=100");
    clock += 30_000;
    await list("?$top=10001");
    clock += 45_000;
    await list("");
    await list("", fake, "nope");

    const log = fake.requests(TENANT);
    assert.deepEqual(
      log.map((e) => [e.requestNumber, e.time, e.status]),
      [
        [1, 1_700_000_000_000, 200],
        [2, 1_700_000_030_000, 400],
        [3, 1_700_000_075_000, 200],
      ],
    );
    assert.equal(log[0]!.query.$top, "100");
    assert.deepEqual(log[0]!.comparisons, [
      { property: "lastUpdateTime", op: "ge", value: "2024-05-01T10:00:00Z" },
      { property: "lastUpdateTime", op: "lt", value: "2024-05-01T11:00:00.5Z" },
    ]);
    assert.equal(log[0]!.itemCount, 5);
    assert.equal(log[0]!.path, "/api/alerts");
    assert.ok(log[0]!.bytes > 0 && log[0]!.elapsedMs > 0);
    assert.equal(fake.requests(null).length, 1);
    assert.equal(fake.requests().length, 4);
    assert.equal(fake.maxRequestsInWindow(TENANT, 60_000), 2);
    assert.equal(fake.maxRequestsInWindow(TENANT, 30_000), 1);
  });

  it("runs beforeResponse between pages so tests can change data mid-scan", async () => {
    const alerts = makeAlerts({ count: 10, from: new Date("2024-01-01Z"), to: new Date("2024-01-02Z"), seed: 5 });
    paged.setAlerts(TENANT, alerts);
    paged.clearRequests();
    const calls: number[] = [];
    paged.beforeResponse = ({ tenantId, requestNumber, fake: f }) => {
      calls.push(requestNumber);
      if (requestNumber === 2) f.touch(tenantId, [alerts[0]!.id], "2024-01-05T00:00:00.0000001Z");
    };
    try {
      const first = await list("", paged);
      const second = await get(first.body["@odata.nextLink"]!, tokenFor(TENANT), paged);
      assert.deepEqual(calls, [1, 2]);
      assert.equal(second.body.value.length, 4);
      assert.equal(paged.getAlert(TENANT, alerts[0]!.id)!.lastUpdateTime, "2024-01-05T00:00:00.0000001Z");
    } finally {
      paged.beforeResponse = undefined;
    }
  });

  it("enforces an optional per-minute rate limit by the injected clock", async () => {
    let now = 0;
    const limited = new FakeDefender({ certs, authenticate, now: () => now, rateLimit: { perMinute: 2 } });
    await limited.start();
    try {
      assert.equal((await list("", limited)).status, 200);
      now = 10_000;
      assert.equal((await list("", limited)).status, 200);
      now = 20_000;
      const third = await list("", limited);
      assert.equal(third.status, 429);
      assert.equal(third.headers["retry-after"], "40");
      now = 60_001;
      assert.equal((await list("", limited)).status, 200);
    } finally {
      await limited.stop();
    }
  });

  it("serves 10,000 items per page and links to the rest", async () => {
    const alerts = makeAlerts({
      count: 12_000,
      from: new Date("2024-01-01Z"),
      to: new Date("2024-02-01Z"),
      seed: 6,
      aadTenantId: TENANT,
    });
    fake.setAlerts(TENANT, alerts);
    const first = await list("?$expand=evidence");
    assert.equal(first.body.value.length, 10_000);
    const second = await get(first.body["@odata.nextLink"]!);
    assert.equal(second.body.value.length, 2_000);
    assert.equal(second.body["@odata.nextLink"], undefined);
    assert.equal(new Set([...ids(first), ...ids(second)]).size, 12_000);
  });
});
