import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { Agent, request } from "undici";
import { formatTimestamp, parseTimestamp } from "../../simulators/alerts.js";
import { FakeGraph, GRAPH_ALERTS_PATH, type GraphPrincipal } from "../../simulators/graph.js";
import {
  GRAPH_ALERT_KEYS,
  GRAPH_EVIDENCE_BASE_KEYS,
  GRAPH_EVIDENCE_TYPES,
  GRAPH_SERVICE_SOURCES,
  type GraphAlert,
  hideUnknownEnumMembers,
  makeGraphAlert,
  makeGraphAlerts,
  makeLargeGraphAlert,
} from "../../simulators/graph-alerts.js";
import { repoRoot } from "../../simulators/https.js";
import { ensureCerts } from "../../simulators/tls.js";

const certs = ensureCerts(join(repoRoot(), ".cache", "tls"));

const TENANT = "33333333-3333-4333-8333-333333333333";
const OTHER = "44444444-4444-4444-8444-444444444444";
const tokenFor = (tenantId: string) => `token-for:${tenantId}`;
/** `token-for:<tenant>` or `scoped:<tenant>:<perm>,<perm>` (a token that carries its permissions). */
const authenticate = async (bearer: string): Promise<GraphPrincipal | null> => {
  if (bearer.startsWith("token-for:")) return { tenantId: bearer.slice("token-for:".length) };
  const scoped = /^scoped:([^:]+):(.*)$/.exec(bearer);
  if (scoped) return { tenantId: scoped[1]!, permissions: scoped[2]!.split(",").filter(Boolean) };
  return null;
};

interface GraphErrorBody {
  code: string;
  message: string;
  innerError: { date: string; "request-id": string; "client-request-id": string };
}
interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: {
    "@odata.context"?: string;
    "@odata.nextLink"?: string;
    "@odata.count"?: number;
    value: GraphAlert[];
    error?: GraphErrorBody;
  };
}

const JAN = { from: new Date("2024-01-01Z"), to: new Date("2024-01-02Z") };

describe("Graph alert generator", () => {
  const many = makeGraphAlerts({ count: 600, from: new Date("2024-01-01Z"), to: new Date("2024-02-01Z"), seed: 7 });

  it("writes every documented top-level property with its type, in a fixed order", () => {
    for (const alert of many) {
      assert.deepEqual(Object.keys(alert), [...GRAPH_ALERT_KEYS]);
      assert.equal(alert["@odata.type"], "#microsoft.graph.security.alert");
      for (const key of ["id", "providerAlertId", "status", "severity", "serviceSource", "detectionSource", "tenantId", "title", "description", "category", "alertWebUrl", "createdDateTime", "lastUpdateDateTime"] as const) {
        assert.equal(typeof alert[key], "string", key);
      }
      assert.ok(alert.incidentId === null || /^\d+$/.test(alert.incidentId));
      for (const key of ["mitreTechniques", "comments", "evidence", "systemTags"] as const) assert.ok(Array.isArray(alert[key]), key);
      assert.equal(typeof alert.additionalData, "object");
      assert.ok(alert.additionalData !== null && !Array.isArray(alert.additionalData));
      for (const c of alert.comments) assert.deepEqual(Object.keys(c), ["comment", "createdByDisplayName", "createdDateTime"]);
      for (const key of ["createdDateTime", "lastUpdateDateTime", "resolvedDateTime", "firstActivityDateTime", "lastActivityDateTime"] as const) {
        const value = alert[key];
        assert.ok(value === null || parseTimestamp(value) !== null, `${key}=${value}`);
      }
      assert.ok(parseTimestamp(alert.createdDateTime)! <= parseTimestamp(alert.lastUpdateDateTime)!);
      assert.equal(alert.status === "resolved", alert.resolvedDateTime !== null);
      assert.equal(alert.alertWebUrl, `https://security.microsoft.com/alerts/${encodeURIComponent(alert.id)}?tid=${alert.tenantId}`);
    }
  });

  it("makes typed evidence of many kinds, each starting with the alertEvidence properties", () => {
    const types = new Set<string>();
    for (const alert of many) {
      for (const ev of alert.evidence) {
        types.add(ev["@odata.type"]);
        assert.deepEqual(Object.keys(ev).slice(0, GRAPH_EVIDENCE_BASE_KEYS.length), [...GRAPH_EVIDENCE_BASE_KEYS]);
        assert.notEqual(parseTimestamp(ev.createdDateTime), null);
        switch (ev["@odata.type"]) {
          case "#microsoft.graph.security.deviceEvidence":
            assert.ok(ev.mdeDeviceId === null || /^[0-9a-f]{40}$/.test(ev.mdeDeviceId));
            assert.equal(typeof ev.deviceDnsName, "string");
            assert.ok(ev.osBuild === null || Number.isInteger(ev.osBuild));
            break;
          case "#microsoft.graph.security.processEvidence":
            assert.ok(Number.isInteger(ev.processId));
            assert.ok(ev.imageFile === null || "sha256" in ev.imageFile);
            break;
          case "#microsoft.graph.security.fileEvidence":
            assert.ok(typeof ev.fileDetails.fileName === "string");
            break;
          case "#microsoft.graph.security.cloudApplicationEvidence":
            assert.ok(Number.isInteger(ev.appId) && Number.isInteger(ev.instanceId) && Number.isInteger(ev.saasAppId));
            break;
          case "#microsoft.graph.security.userEvidence":
            assert.ok("userPrincipalName" in ev.userAccount);
            break;
        }
      }
    }
    assert.ok(types.size >= 12, [...types].join());
    for (const t of types) assert.ok(Object.values(GRAPH_EVIDENCE_TYPES).includes(t), t);
  });

  it("is deterministic per seed and varies sources, id shapes, digits, nulls and unicode", () => {
    const a = makeGraphAlert({ lastUpdateDateTime: new Date("2024-03-01T12:00:00Z"), seed: "x" });
    assert.deepEqual(a, makeGraphAlert({ lastUpdateDateTime: new Date("2024-03-01T12:00:00Z"), seed: "x" }));
    assert.equal(new Set(many.map((x) => x.id)).size, many.length);
    const sources = new Set(many.map((x) => x.serviceSource));
    assert.ok(sources.size >= 10, [...sources].join());
    for (const s of sources) assert.ok((GRAPH_SERVICE_SOURCES as readonly string[]).includes(s), s);
    for (const alert of many) {
      if (alert.serviceSource === "microsoftDefenderForEndpoint") {
        assert.match(alert.id, /^(da|ed)\d{18}_-?\d+$/);
        assert.equal(alert.providerAlertId, alert.id);
      } else {
        assert.match(alert.id, /^[a-z]{2}.+/);
        assert.equal(alert.id, alert.id.slice(0, 2) + alert.providerAlertId);
      }
    }
    const prefixes = new Set(many.map((x) => x.id.slice(0, 2)));
    for (const p of ["da", "ed", "fa", "aa", "ar"]) assert.ok(prefixes.has(p), `prefix ${p} in ${[...prefixes].join()}`);
    const digits = new Set(many.map((x) => /\.(\d+)Z$/.exec(x.lastUpdateDateTime)![1]!.length));
    assert.deepEqual([...digits].sort(), [1, 2, 3, 4, 5, 6, 7]);
    assert.ok(many.some((x) => x.assignedTo === null && x.actorDisplayName === null && x.threatFamilyName === null));
    assert.ok(many.some((x) => x.classification === null));
    assert.ok(many.some((x) => /[^\x20-\x7e]/.test(x.title)));
    assert.ok(many.some((x) => x.systemTags.length > 0));
    assert.ok(many.some((x) => Object.keys(x.additionalData).length > 0));
  });

  it("follows overrides: serviceSource steers the profile, an id serves as providerAlertId and in the URL", () => {
    const office = makeGraphAlert({ lastUpdateDateTime: "2024-05-01T10:00:00.1234567Z", seed: 1, serviceSource: "microsoftDefenderForOffice365" });
    assert.match(office.id, /^fa[0-9a-f-]{36}$/);
    assert.equal(office.detectionSource, "microsoftDefenderForOffice365");
    assert.equal(office.lastUpdateDateTime, "2024-05-01T10:00:00.1234567Z");
    const custom = makeGraphAlert({ lastUpdateDateTime: new Date("2024-05-01Z"), seed: 2, id: "da1_2", tenantId: TENANT, incidentId: "77" });
    assert.equal(custom.providerAlertId, "da1_2");
    assert.equal(custom.alertWebUrl, `https://security.microsoft.com/alerts/da1_2?tid=${TENANT}`);
    assert.equal(custom.incidentWebUrl, `https://security.microsoft.com/incidents/77?tid=${TENANT}`);
    assert.equal(makeGraphAlert({ lastUpdateDateTime: new Date("2024-01-01T00:00:00.987Z"), fractionDigits: 2 }).lastUpdateDateTime, "2024-01-01T00:00:00.98Z");
  });

  it("hides enum members newer than unknownFutureValue", () => {
    const sentinel = makeGraphAlert({ lastUpdateDateTime: new Date("2024-05-01Z"), seed: 3, serviceSource: "microsoftSentinel" });
    const hidden = hideUnknownEnumMembers(sentinel);
    assert.equal(hidden.serviceSource, "unknownFutureValue");
    assert.equal(hidden.detectionSource, "unknownFutureValue");
    assert.equal(sentinel.serviceSource, "microsoftSentinel");
    const endpoint = makeGraphAlert({ lastUpdateDateTime: new Date("2024-05-01Z"), seed: 3, serviceSource: "microsoftDefenderForEndpoint" });
    assert.equal(hideUnknownEnumMembers(endpoint), endpoint);
  });

  it("makes multi-MiB alerts that do not compress trivially", () => {
    const alert = makeLargeGraphAlert(4 * 1024 * 1024, { seed: 3 });
    const json = Buffer.from(JSON.stringify(alert));
    assert.ok(json.length >= 4 * 1024 * 1024 && json.length < 4.1 * 1024 * 1024, `size ${json.length}`);
    assert.ok(alert.evidence.length > 1000);
    const ratio = gzipSync(json).length / json.length;
    assert.ok(ratio > 0.2, `gzip ratio ${ratio}`);
  });
});

describe("FakeGraph", () => {
  let clock = 1_700_000_000_000;
  const fake = new FakeGraph({ certs, authenticate, now: () => clock });
  const small = new FakeGraph({ certs, authenticate, now: () => clock, defaultPageSize: 4, maxTop: 6 });
  const agent = new Agent({ connect: { ca: certs.caPem } });

  async function get(
    path: string,
    opts: { token?: string | null; server?: FakeGraph; headers?: Record<string, string> } = {},
  ): Promise<Reply> {
    const server = opts.server ?? fake;
    const token = opts.token === undefined ? tokenFor(TENANT) : opts.token;
    const url = path.startsWith("https://") ? path : `${server.url}${path}`;
    const res = await request(url, {
      dispatcher: agent,
      headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...opts.headers },
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, body: JSON.parse(text) };
  }
  const list = (query: string, opts: Parameters<typeof get>[1] = {}) => get(`${GRAPH_ALERTS_PATH}${query}`, opts);
  const ids = (reply: Reply) => reply.body.value.map((a) => a.id);
  const sorted = (reply: Reply) => ids(reply).sort();
  const filter = (f: string) => `?$filter=${encodeURIComponent(f)}`;
  /** Follows nextLinks from `first` to the end; returns every page. */
  async function pages(first: string, opts: Parameters<typeof get>[1] = {}): Promise<Reply[]> {
    const out = [await list(first, opts)];
    for (let next = out[0]!.body["@odata.nextLink"]; next; next = out[out.length - 1]!.body["@odata.nextLink"]) {
      out.push(await get(next, opts));
      assert.ok(out.length < 1000, "runaway paging");
    }
    return out;
  }
  function assertGraphError(reply: Reply, status: number, code: string): void {
    assert.equal(reply.status, status, JSON.stringify(reply.body));
    assert.equal(reply.headers["content-type"], "application/json");
    assert.deepEqual(Object.keys(reply.body), ["error"]);
    const error = reply.body.error!;
    assert.equal(error.code, code);
    assert.equal(typeof error.message, "string");
    assert.deepEqual(Object.keys(error.innerError), ["date", "request-id", "client-request-id"]);
    assert.match(error.innerError["request-id"], /^[0-9a-f-]{36}$/);
    assert.match(error.innerError.date, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$/);
  }

  const at = (lastUpdateDateTime: string, id: string) =>
    makeGraphAlert({ id, lastUpdateDateTime, seed: id, evidenceCount: 3, tenantId: TENANT, serviceSource: "microsoftDefenderForEndpoint" });
  const boundary = [
    at("2024-05-01T10:00:00.1234567Z", "da638501112001234567_1"),
    at("2024-05-01T10:00:00.1234568Z", "da638501112001234568_-2"),
    at("2024-05-01T10:00:00.123Z", "da638501112001230000_3"),
    at("2024-05-01T10:00:00.1234Z", "da638501112001234000_-4"),
    at("2024-05-01T10:00:01.9Z", "da638501112019000000_5"),
  ];

  before(async () => {
    await fake.start();
    await small.start();
  });
  after(async () => {
    await fake.stop();
    await small.stop();
    await agent.close();
  });

  it("filters lastUpdateDateTime at 100-ns precision with ge/gt/lt/le and and", async () => {
    fake.setAlerts(TENANT, boundary);
    const t = "2024-05-01T10:00:00.1234567Z";
    assert.deepEqual(sorted(await list(filter(`lastUpdateDateTime ge ${t}`))), [
      "da638501112001234567_1",
      "da638501112001234568_-2",
      "da638501112019000000_5",
    ]);
    assert.deepEqual(sorted(await list(filter(`lastUpdateDateTime gt ${t}`))), ["da638501112001234568_-2", "da638501112019000000_5"]);
    assert.deepEqual(sorted(await list(filter(`lastUpdateDateTime lt ${t}`))), ["da638501112001230000_3", "da638501112001234000_-4"]);
    assert.deepEqual(sorted(await list(filter(`lastUpdateDateTime le ${t}`))), [
      "da638501112001230000_3",
      "da638501112001234000_-4",
      "da638501112001234567_1",
    ]);
    assert.deepEqual(
      sorted(await list(filter("lastUpdateDateTime ge 2024-05-01T10:00:00.1234Z and lastUpdateDateTime lt 2024-05-01T10:00:00.1234568Z"))),
      ["da638501112001234000_-4", "da638501112001234567_1"],
    );
    assert.deepEqual(sorted(await list(filter("lastUpdateDateTime ge 2024-05-01T12:00:01+02:00"))), ["da638501112019000000_5"]);
    const created = boundary[0]!.createdDateTime;
    assert.ok(ids(await list(filter(`createdDateTime ge ${created} and createdDateTime le ${created}`))).includes(boundary[0]!.id));
    const severity = boundary[2]!.severity;
    assert.deepEqual(
      sorted(await list(filter(`severity eq '${severity}'`))),
      boundary.filter((a) => a.severity === severity).map((a) => a.id).sort(),
    );
    assert.deepEqual(
      sorted(await list(filter(`(lastUpdateDateTime lt ${t} or lastUpdateDateTime gt 2024-05-01T10:00:01Z) and not (status eq 'no such')`))),
      ["da638501112001230000_3", "da638501112001234000_-4", "da638501112019000000_5"],
    );
    const log = fake.requests(TENANT);
    assert.deepEqual(log[4]!.comparisons, [
      { property: "lastUpdateDateTime", op: "ge", value: "2024-05-01T10:00:00.1234Z" },
      { property: "lastUpdateDateTime", op: "lt", value: "2024-05-01T10:00:00.1234568Z" },
    ]);
  });

  it("rejects invalid filters and options with 400 in Graph's error shape", async () => {
    fake.setAlerts(TENANT, boundary);
    for (const bad of [
      "lastUpdateDateTime ge '2024-05-01T10:00:00Z'",
      "lastUpdateDateTime ge 2024-05-01T10:00:00.12345678Z",
      "lastUpdateDateTime ge 2024-05-01T10:00:00",
      "lastUpdateDateTime ge 2024-05-01",
      "lastUpdateDateTime >= 2024-05-01T10:00:00Z",
      "lastUpdateDateTime ge 2024-13-01T10:00:00Z",
      "lastUpdateTime ge 2024-05-01T10:00:00Z",
      "resolvedDateTime ge 2024-05-01T10:00:00Z",
      "severity gt 'low'",
      "lastUpdateDateTime ge 2024-05-01T10:00:00Z and",
      "(lastUpdateDateTime ge 2024-05-01T10:00:00Z",
    ]) {
      assertGraphError(await list(filter(bad)), 400, "BadRequest");
    }
    assertGraphError(await list("?$orderby=lastUpdateDateTime"), 400, "BadRequest");
    assertGraphError(await list("?$expand=evidence"), 400, "BadRequest");
    assertGraphError(await list("?$top=-1"), 400, "BadRequest");
    assertGraphError(await list("?$skiptoken=garbage"), 400, "BadRequest");
    assertGraphError(await list("?$select=title,noSuchProperty"), 400, "BadRequest");
    assertGraphError(await get("/v1.0/security/alerts"), 400, "BadRequest");
  });

  it("answers lt with 400 under rejectLt, so a client falls back to le on the bound minus 100 ns", async () => {
    fake.setAlerts(TENANT, boundary);
    const upper = "2024-05-01T10:00:00.1234568Z";
    const withLt = sorted(await list(filter(`lastUpdateDateTime ge 2024-05-01T10:00:00Z and lastUpdateDateTime lt ${upper}`)));
    fake.rejectLt = true;
    try {
      const rejected = await list(filter(`lastUpdateDateTime ge 2024-05-01T10:00:00Z and lastUpdateDateTime lt ${upper}`));
      assertGraphError(rejected, 400, "BadRequest");
      assert.match(rejected.body.error!.message, /'lt' is not supported/);
      const minus100ns = formatTimestamp(parseTimestamp(upper)! - 1n, 7);
      assert.equal(minus100ns, "2024-05-01T10:00:00.1234567Z");
      const withLe = await list(filter(`lastUpdateDateTime ge 2024-05-01T10:00:00Z and lastUpdateDateTime le ${minus100ns}`));
      assert.equal(withLe.status, 200);
      assert.deepEqual(sorted(withLe), withLt);
      assert.deepEqual(withLt, ["da638501112001230000_3", "da638501112001234000_-4", "da638501112001234567_1"]);
    } finally {
      fake.rejectLt = false;
    }
  });

  it("pages through absolute nextLinks with an opaque $skiptoken, every item once when nothing changes", async () => {
    const alerts = makeGraphAlerts({ count: 250, ...JAN, seed: 3, tenantId: TENANT });
    fake.setAlerts(TENANT, alerts);
    fake.clearRequests();
    const all = await pages(filter("lastUpdateDateTime ge 2024-01-01T00:00:00Z") + "&$count=true");
    assert.deepEqual(
      all.map((p) => p.body.value.length),
      [100, 100, 50],
    );
    const first = all[0]!;
    assert.equal(first.headers["content-type"], "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8");
    assert.equal(first.body["@odata.context"], `${fake.url}/v1.0/$metadata#security/alerts_v2`);
    assert.equal(first.body["@odata.count"], 250);
    const link = new URL(first.body["@odata.nextLink"]!);
    assert.equal(link.origin, fake.url);
    assert.equal(link.pathname, GRAPH_ALERTS_PATH);
    assert.equal(link.searchParams.get("$filter"), "lastUpdateDateTime ge 2024-01-01T00:00:00Z");
    assert.equal(link.searchParams.get("$count"), "true");
    assert.match(link.searchParams.get("$skiptoken")!, /^[A-Za-z0-9_-]{16,}$/);
    const seen = all.flatMap(ids);
    assert.equal(seen.length, 250);
    assert.deepEqual([...seen].sort(), alerts.map((a) => a.id).sort());
    assert.equal(all[2]!.body["@odata.nextLink"], undefined);
    assert.deepEqual(
      fake.requests(TENANT).map((e) => [e.pageSize, e.offset, e.itemCount, e.nextLink !== null]),
      [
        [100, 0, 100, true],
        [100, 100, 100, true],
        [100, 200, 50, false],
      ],
    );
    // $top sets the page size and keeps paging; $select and $filter ride along in the link.
    const topped = await pages(`?$top=40&$select=lastUpdateDateTime&${filter("lastUpdateDateTime ge 2024-01-01T00:00:00Z").slice(1)}`);
    assert.equal(topped.length, 7);
    assert.deepEqual(topped.flatMap(ids).sort(), alerts.map((a) => a.id).sort());
    assert.ok(topped.every((p) => p.body.value.every((a) => Object.keys(a).join() === "@odata.type,id,lastUpdateDateTime")));
  });

  it("shifts items between pages when data changes mid-scan (offset tokens), so a client must re-read by time", async () => {
    const alerts = makeGraphAlerts({ count: 12, ...JAN, seed: 5, tenantId: TENANT });
    small.setAlerts(TENANT, alerts);
    small.clearRequests();
    small.beforeResponse = ({ requestNumber, tenantId, fake: f }) => {
      if (requestNumber === 2) f.removeAlert(tenantId, alerts[0]!.id);
    };
    try {
      const seen = (await pages("", { server: small })).flatMap(ids);
      const remaining = alerts.slice(1).map((a) => a.id);
      const missed = remaining.filter((id) => !seen.includes(id));
      const duplicated = seen.length - new Set(seen).size;
      assert.ok(missed.length > 0 || duplicated > 0, "a reshuffle between pages must be visible");
    } finally {
      small.beforeResponse = undefined;
    }
  });

  it("clamps $top to maxTop (1,000) silently, and can withhold the nextLink of a clamped page", async () => {
    const alerts = makeGraphAlerts({ count: 1_100, ...JAN, seed: 8, tenantId: TENANT, evidenceCount: 0 });
    fake.setAlerts(TENANT, alerts);
    fake.clearRequests();
    const big = await list("?$top=5000");
    assert.equal(big.status, 200);
    assert.equal(big.body.value.length, 1000);
    const rest = await get(big.body["@odata.nextLink"]!);
    assert.equal(rest.body.value.length, 100);
    assert.equal(new Set([...ids(big), ...ids(rest)]).size, 1_100);
    const log = fake.requests(TENANT);
    assert.deepEqual([log[0]!.clamped, log[0]!.pageSize, log[1]!.clamped], [true, 1000, true]);

    fake.nextLinks = "unlessClamped";
    try {
      const silent = await list("?$top=5000");
      assert.equal(silent.body.value.length, 1000);
      assert.equal(silent.body["@odata.nextLink"], undefined);
      const unclamped = await list("?$top=1000");
      assert.ok(unclamped.body["@odata.nextLink"]);
    } finally {
      fake.nextLinks = "always";
    }
    fake.clampTop = 300;
    try {
      assert.equal((await list("?$top=5000")).body.value.length, 300);
    } finally {
      fake.clampTop = undefined;
    }
    assert.equal(fake.maxTop, 1000);
    const tiny = makeGraphAlerts({ count: 10, ...JAN, seed: 9, tenantId: TENANT });
    small.setAlerts(TENANT, tiny);
    small.nextLinks = "never";
    try {
      const capped = await list("?$top=50", { server: small });
      assert.deepEqual([capped.body.value.length, capped.body["@odata.nextLink"]], [6, undefined]);
    } finally {
      small.nextLinks = "always";
    }
  });

  it("places nextLink before value by default or after it, as $skiptoken or $skip, on nextLinkOrigin when set", async () => {
    const alerts = makeGraphAlerts({ count: 10, ...JAN, seed: 10, tenantId: TENANT });
    small.setAlerts(TENANT, alerts);
    const raw = async (query: string) => {
      const res = await request(`${small.url}${GRAPH_ALERTS_PATH}${query}`, { dispatcher: agent, headers: { authorization: `Bearer ${tokenFor(TENANT)}` } });
      return res.body.text();
    };
    assert.deepEqual(Object.keys(JSON.parse(await raw("?$count=true"))), ["@odata.context", "@odata.count", "@odata.nextLink", "value"]);
    small.nextLinkPlacement = "afterValue";
    small.nextLinkStyle = "skip";
    small.nextLinkOrigin = "https://evil.example";
    try {
      const body = JSON.parse(await raw("?$top=3"));
      assert.deepEqual(Object.keys(body), ["@odata.context", "value", "@odata.nextLink"]);
      assert.equal(body["@odata.nextLink"], "https://evil.example/v1.0/security/alerts_v2?$top=3&$skip=3");
      small.nextLinkOrigin = undefined;
      assert.deepEqual((await pages("?$top=3", { server: small })).flatMap(ids).sort(), alerts.map((a) => a.id).sort());
    } finally {
      small.nextLinkPlacement = "beforeValue";
      small.nextLinkStyle = "skiptoken";
      small.nextLinkOrigin = undefined;
    }
  });

  it("supports $select (plus id) and $skip", async () => {
    fake.setAlerts(TENANT, boundary);
    const selected = await list("?$select=lastUpdateDateTime,serviceSource,evidence");
    assert.equal(selected.body["@odata.context"], `${fake.url}/v1.0/$metadata#security/alerts_v2(lastUpdateDateTime,serviceSource,evidence)`);
    for (const a of selected.body.value) {
      assert.deepEqual(Object.keys(a), ["@odata.type", "id", "serviceSource", "lastUpdateDateTime", "evidence"]);
      assert.equal(a.evidence.length, 3);
    }
    const all = ids(await list(""));
    assert.deepEqual(ids(await list("?$skip=2")), all.slice(2));
    assert.deepEqual(ids(await list("?$skip=1&$top=2")), all.slice(1, 3));
  });

  it("returns items unsorted, in an order that changes when any alert changes", async () => {
    const alerts = makeGraphAlerts({ count: 40, ...JAN, seed: 4, tenantId: TENANT });
    fake.setAlerts(TENANT, alerts);
    const one = ids(await list(""));
    assert.deepEqual(ids(await list("")), one);
    const byTime = [...alerts].sort((a, b) => Number(parseTimestamp(a.lastUpdateDateTime)! - parseTimestamp(b.lastUpdateDateTime)!));
    assert.notDeepEqual(one, byTime.map((a) => a.id));
    assert.notDeepEqual(one, alerts.map((a) => a.id));

    const [touched] = fake.touch(TENANT, [alerts[5]!.id], new Date("2024-01-03T00:00:00Z"), { status: "resolved" });
    assert.match(touched!.lastUpdateDateTime, /^2024-01-03T00:00:00\.000\d{4}Z$/);
    assert.notEqual(alerts[5]!.lastUpdateDateTime, touched!.lastUpdateDateTime, "the stored object is replaced, not mutated");
    const three = ids(await list(""));
    assert.notDeepEqual(three, one);
    assert.deepEqual([...three].sort(), [...one].sort());
    const reply = await list(filter("lastUpdateDateTime ge 2024-01-03T00:00:00Z"));
    assert.deepEqual(ids(reply), [alerts[5]!.id]);
    assert.equal(reply.body.value[0]!.status, "resolved");
    assert.equal(fake.getAlert(TENANT, alerts[5]!.id)!.status, "resolved");
  });

  it("sends enum members newer than unknownFutureValue only with Prefer: include-unknown-enum-members", async () => {
    const sentinel = makeGraphAlert({ lastUpdateDateTime: new Date("2024-05-02Z"), seed: 11, serviceSource: "microsoftSentinel", tenantId: TENANT });
    const cloud = makeGraphAlert({ lastUpdateDateTime: new Date("2024-05-02Z"), seed: 12, serviceSource: "microsoftDefenderForCloud", tenantId: TENANT });
    const endpoint = boundary[0]!;
    fake.setAlerts(TENANT, [sentinel, cloud, endpoint]);
    fake.clearRequests();
    const byId = (r: Reply) => new Map(r.body.value.map((a) => [a.id, a]));

    const plain = byId(await list(""));
    assert.equal(plain.get(sentinel.id)!.serviceSource, "unknownFutureValue");
    assert.equal(plain.get(sentinel.id)!.detectionSource, "unknownFutureValue");
    assert.equal(plain.get(cloud.id)!.serviceSource, "unknownFutureValue");
    assert.equal(plain.get(endpoint.id)!.serviceSource, "microsoftDefenderForEndpoint");

    const opted = await list("", { headers: { prefer: "odata.maxpagesize=10, include-unknown-enum-members" } });
    assert.equal(opted.headers["preference-applied"], "include-unknown-enum-members");
    assert.equal(byId(opted).get(sentinel.id)!.serviceSource, "microsoftSentinel");
    assert.equal(byId(opted).get(cloud.id)!.serviceSource, "microsoftDefenderForCloud");
    assert.deepEqual(byId(opted).get(sentinel.id), sentinel);

    const single = await get(`${GRAPH_ALERTS_PATH}/${sentinel.id}`);
    assert.equal((single.body as unknown as GraphAlert).serviceSource, "unknownFutureValue");
    const singleOpted = await get(`${GRAPH_ALERTS_PATH}/${sentinel.id}`, { headers: { prefer: "include-unknown-enum-members" } });
    assert.equal((singleOpted.body as unknown as GraphAlert).serviceSource, "microsoftSentinel");

    assert.deepEqual(
      fake.requests(TENANT).map((e) => e.includeUnknownEnumMembers),
      [false, true, false, true],
    );
    assert.equal(fake.requests(TENANT)[1]!.prefer, "odata.maxpagesize=10, include-unknown-enum-members");
    assert.equal(fake.requests(TENANT)[0]!.prefer, null);
  });

  it("gets one alert by id, and answers 404 in Graph's shape for an unknown one", async () => {
    fake.setAlerts(TENANT, boundary);
    const single = await get(`${GRAPH_ALERTS_PATH}/${encodeURIComponent(boundary[1]!.id)}`, { headers: { "client-request-id": "abc-123" } });
    assert.equal(single.status, 200);
    assert.equal(single.headers["client-request-id"], "abc-123");
    assert.match(String(single.headers["request-id"]), /^[0-9a-f-]{36}$/);
    const { "@odata.context": context, ...rest } = single.body as unknown as Record<string, unknown>;
    assert.equal(context, `${fake.url}/v1.0/$metadata#security/alerts_v2/$entity`);
    assert.deepEqual(rest, boundary[1]);
    const missing = await get(`${GRAPH_ALERTS_PATH}/da000_1`, { headers: { "client-request-id": "abc-124" } });
    assertGraphError(missing, 404, "NotFound");
    assert.equal(missing.body.error!.innerError["client-request-id"], "abc-124");
  });

  it("answers 401 without a valid token and 403 for a forbidden tenant or missing permission", async () => {
    const missing = await list("", { token: null });
    assertGraphError(missing, 401, "InvalidAuthenticationToken");
    assert.match(String(missing.headers["www-authenticate"]), /^Bearer /);
    assertGraphError(await list("", { token: "garbage" }), 401, "InvalidAuthenticationToken");

    fake.forbid(OTHER);
    assertGraphError(await list("", { token: tokenFor(OTHER) }), 403, "Forbidden");
    fake.allow(OTHER);
    const ok = await list("", { token: tokenFor(OTHER) });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body.value, []);

    const lacking = await list("", { token: `scoped:${OTHER}:User.Read` });
    assertGraphError(lacking, 403, "Forbidden");
    assert.match(lacking.body.error!.message, /SecurityAlert\.Read\.All/);
    assert.equal((await list("", { token: `scoped:${OTHER}:User.Read,SecurityAlert.Read.All` })).status, 200);
    assert.equal(fake.requests(null).length >= 2, true);
  });

  it("injects 429 with Retry-After, 5xx and delays", async () => {
    fake.setAlerts(TENANT, boundary);
    fake.inject(TENANT, { status: 429, retryAfterSeconds: 17 });
    fake.inject(TENANT, { status: 503, retryAfterSeconds: 2 });
    fake.inject("*", { status: 500 });
    const throttled = await list("");
    assertGraphError(throttled, 429, "TooManyRequests");
    assert.equal(throttled.headers["retry-after"], "17");
    const unavailable = await list("");
    assertGraphError(unavailable, 503, "ServiceUnavailable");
    assert.equal(unavailable.headers["retry-after"], "2");
    assertGraphError(await list("", { token: tokenFor(OTHER) }), 500, "InternalServerError");
    assert.equal((await list("")).status, 200);

    fake.inject(TENANT, { delayMs: 150 });
    const started = performance.now();
    assert.equal((await list("")).status, 200);
    assert.ok(performance.now() - started >= 140);
    fake.inject(TENANT, { status: 502 }, 2);
    fake.clearFaults();
    assert.equal((await list("")).status, 200);
  });

  it("injects connection resets and truncated bodies that make undici throw", async () => {
    fake.setAlerts(TENANT, boundary);
    fake.inject(TENANT, { reset: true });
    await assert.rejects(list(""), (err: Error & { code?: string }) => {
      assert.match(String(err.code ?? err.name), /UND_ERR_SOCKET|ECONNRESET|SocketError/);
      return true;
    });
    fake.inject(TENANT, { truncateAfterBytes: 500 });
    await assert.rejects(list(""));
    assert.equal((await list("")).status, 200);
    const log = fake.requests(TENANT).slice(-3);
    assert.deepEqual(
      log.map((e) => e.status),
      [0, 0, 200],
    );
    assert.equal(log[1]!.bytes, 500);
    assert.ok(log[2]!.bytes > 500 && log[2]!.elapsedMs > 0);
  });

  it("enforces Graph's 150 requests a minute per tenant by the injected clock, with Retry-After", async () => {
    let now = 0;
    const limited = new FakeGraph({ certs, authenticate, now: () => now, rateLimit: { perMinute: 150 } });
    await limited.start();
    try {
      for (let i = 0; i < 150; i++) {
        now = i * 200;
        assert.equal((await list("", { server: limited })).status, 200);
      }
      now = 30_000;
      const over = await list("", { server: limited });
      assertGraphError(over, 429, "TooManyRequests");
      assert.equal(over.headers["retry-after"], "30");
      assert.equal((await list("", { server: limited, token: tokenFor(OTHER) })).status, 200);
      now = 60_001;
      assert.equal((await list("", { server: limited })).status, 200);
      assert.equal(limited.maxRequestsInWindow(TENANT, 60_000), 151);
    } finally {
      await limited.stop();
    }
  });

  it("logs requests per tenant with clock times, queries and statuses", async () => {
    fake.clearRequests();
    fake.setAlerts(TENANT, boundary);
    clock = 1_700_000_000_000;
    await list(filter("lastUpdateDateTime ge 2024-05-01T10:00:00Z and lastUpdateDateTime lt 2024-05-01T11:00:00.5Z") + "&$top=100");
    clock += 30_000;
    await list("?$top=x");
    clock += 45_000;
    await list("");
    await list("", { token: "nope" });
    const log = fake.requests(TENANT);
    assert.deepEqual(
      log.map((e) => [e.requestNumber, e.time, e.status, e.errorCode]),
      [
        [1, 1_700_000_000_000, 200, null],
        [2, 1_700_000_030_000, 400, "BadRequest"],
        [3, 1_700_000_075_000, 200, null],
      ],
    );
    assert.equal(log[0]!.query.$top, "100");
    assert.equal(log[0]!.itemCount, 5);
    assert.equal(log[0]!.path, GRAPH_ALERTS_PATH);
    assert.equal(fake.requests(null).length, 1);
    assert.equal(fake.requests().length, 4);
    assert.equal(fake.maxRequestsInWindow(TENANT, 60_000), 2);
    assert.equal(fake.maxRequestsInWindow(TENANT, 30_000), 1);
  });
});
