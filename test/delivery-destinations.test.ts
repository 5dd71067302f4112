/**
 * The Sentinel (Logs Ingestion) and Splunk HEC destination modules, each driven directly
 * against its HTTPS protocol fake: the real `@azure/monitor-ingestion` client with a
 * managed-identity token the fake checks for its audience, and undici against the fake HEC.
 * What is asserted is what the fakes received. Waits (ack polling) run on a virtual clock.
 * The outbox-level guarantees (ordering, crashes, replay) are tested with the outbox.
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { ManagedIdentityCredential } from "@azure/identity";
import type { SentinelConfig, SplunkConfig } from "../shared/delivery/config.js";
import { type DeliveryItem, type DestinationDeps, DestinationError, type SendReport } from "../shared/delivery/destination.js";
import { retryAfterMs } from "../shared/delivery/destinations/retry-after.js";
import {
  createSentinelDestination,
  RAW_ALERT_MAX_BYTES,
  RECORD_MAX_BYTES,
  SENTINEL_COLUMNS,
  SENTINEL_STREAM,
  toSentinelRecord,
} from "../shared/delivery/destinations/sentinel.js";
import { createSplunkDestination, DEFAULT_SOURCETYPE, MAX_REQUEST_BYTES } from "../shared/delivery/destinations/splunk.js";
import { type DefenderAlert, makeAlert, makeLargeAlert } from "../simulators/alerts.js";
import { testCerts } from "../simulators/https.js";
import { FakeLogsIngestion } from "../simulators/logs-ingestion.js";
import { FakeManagedIdentity, INTERFERING_ENV } from "../simulators/managed-identity.js";
import { FakeSplunkHec, splitObjects } from "../simulators/splunk-hec.js";
import { knownSecrets, recordSeen, watchParts } from "./support/leaks.js";

const TENANT = "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0";
const RULE_ID = "dcr-0123456789abcdef0123456789abcdef";
const HEC_TOKEN = "5f3a7c1e-9b2d-4e6f-8a1c-hec-token-plain";
const ACK_TOKEN = "0c4b9d2e-7a1f-4c3e-9d8b-hec-token-acked";
const START = Date.parse("2026-03-01T10:00:00Z");

const certs = testCerts();
const identity = new FakeManagedIdentity();
const ingestion = new FakeLogsIngestion({ certs, verifyToken: (token, audience) => identity.isValid(token, audience) });
const hec = new FakeSplunkHec({ certs });
const logs: string[] = [];
let credential: ManagedIdentityCredential;
let restoreEnv: () => void;

watchParts({ sources: [identity, ingestion, hec], logs: [logs] });

before(async () => {
  for (const name of INTERFERING_ENV) delete process.env[name];
  await Promise.all([identity.start(), ingestion.start(), hec.start()]);
  restoreEnv = identity.applyEnv();
  credential = new ManagedIdentityCredential();
  ingestion.addRule(RULE_ID, { [SENTINEL_STREAM]: SENTINEL_COLUMNS });
  hec.addToken(HEC_TOKEN, { name: "plain", indexes: ["soc", "main"] });
  hec.addToken(ACK_TOKEN, { name: "acked", ack: true });
});

after(async () => {
  restoreEnv();
  await Promise.all([identity.stop(), ingestion.stop(), hec.stop()]);
});

beforeEach(() => {
  ingestion.reset();
  ingestion.maxBodyBytes = 1024 * 1024;
  hec.reset();
  hec.ackAfterPolls = 1;
  hec.maxContentLength = 1_000_000;
});

/** Deps on a virtual clock: sleep advances it and is recorded. */
function makeDeps(secrets: Record<string, string> = {}): { deps: DestinationDeps; sleeps: number[] } {
  let clock = START;
  const sleeps: number[] = [];
  const deps: DestinationDeps = {
    credential,
    secret: async (name) => secrets[name],
    now: () => new Date(clock),
    sleep: async (ms) => {
      sleeps.push(ms);
      clock += ms;
    },
    log: { info: (m) => logs.push(m), warn: (m) => logs.push(m), error: (m) => logs.push(m) },
  };
  return { deps, sleeps };
}

/** The outbox's view of an alert row. */
function itemOf(alert: DefenderAlert, tenantId = TENANT): DeliveryItem {
  const s = (v: string | number | null | undefined) => (v === null || v === undefined ? undefined : String(v));
  return {
    deliveryKey: `${tenantId}:defender:${alert.id}:${alert.lastUpdateTime}`,
    tenantId,
    customerName: "Contoso Ltd",
    source: "defender",
    alertId: alert.id,
    providerAlertId: alert.id,
    lastUpdateTimeExact: alert.lastUpdateTime,
    json: JSON.stringify(alert),
    columns: {
      title: alert.title,
      severity: alert.severity,
      status: alert.status,
      category: alert.category,
      classification: s(alert.classification),
      determination: s(alert.determination),
      firstEventTime: s(alert.firstEventTime),
      lastEventTime: s(alert.lastEventTime),
      incidentId: s(alert.incidentId),
      computerDnsName: s(alert.computerDnsName),
    },
    collectorUrl: `https://collector.localhost/api/tenants/${tenantId}/alerts/${encodeURIComponent(alert.id)}`,
  };
}

let serial = 0;
function alerts(n: number, extra: Partial<Parameters<typeof makeAlert>[0]> = {}): DefenderAlert[] {
  return Array.from({ length: n }, () =>
    makeAlert({ seed: `a${++serial}`, lastUpdateTime: new Date(START - 60_000), incidentId: 4242, classification: "TruePositive", determination: "Malware", ...extra }),
  );
}

/** An alert whose JSON is about `bytes` long. */
function sized(bytes: number): DefenderAlert {
  return makeLargeAlert(bytes, { seed: `big${++serial}` });
}

/** Sends, and hands what the app produced (report or error) to the leak check. */
async function send(destination: { send(items: DeliveryItem[]): Promise<SendReport> }, items: DeliveryItem[]): Promise<SendReport> {
  try {
    const report = await destination.send(items);
    recordSeen("send report", JSON.stringify(report));
    return report;
  } catch (err) {
    recordSeen("send error", `${(err as Error).message}\n${(err as Error).stack}\n${JSON.stringify(err)}`);
    throw err;
  }
}

async function rejects(promise: Promise<unknown>): Promise<DestinationError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof DestinationError, `a DestinationError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected a DestinationError");
}

const keys = (items: DeliveryItem[]) => items.map((i) => i.deliveryKey).sort();

// ---------------------------------------------------------------------------------------
// Microsoft Sentinel / Logs Ingestion
// ---------------------------------------------------------------------------------------

describe("Sentinel destination (Logs Ingestion API)", () => {
  const config: SentinelConfig = { name: "sentinel", type: "sentinel", enabled: true, dcrEndpoint: "", dcrImmutableId: RULE_ID, stream: SENTINEL_STREAM };
  const sentinel = (deps: DestinationDeps, over: Partial<SentinelConfig> = {}) =>
    createSentinelDestination({ ...config, dcrEndpoint: ingestion.url, ...over }, deps);

  it("maps each alert to exactly the MsspDefenderAlerts_CL columns, with TimeGenerated the send time", async () => {
    const { deps } = makeDeps();
    const list = alerts(3);
    const items = list.map((a) => itemOf(a));
    const report = await send(sentinel(deps), items);
    assert.deepEqual(report.failed, []);
    assert.deepEqual([...report.delivered].sort(), keys(items));

    const stored = ingestion.records(SENTINEL_STREAM);
    assert.equal(stored.length, 3);
    assert.equal(ingestion.receivedCount, 3);
    const names = SENTINEL_COLUMNS.map((c) => c.name);
    for (const reserved of ["TenantId", "Type", "Title", "id"]) assert.ok(!names.includes(reserved), `${reserved} is reserved`);
    for (const r of stored) {
      assert.deepEqual(r.unknownColumns, [], "no column the stream does not declare");
      assert.deepEqual(r.typeProblems, [], "every value fits its declared type");
      assert.deepEqual(r.truncatedFields, []);
    }
    const alert = list[0] as DefenderAlert;
    const item = items[0] as DeliveryItem;
    const row = stored.find((r) => r.record.AlertId === alert.id)?.record;
    assert.ok(row);
    assert.deepEqual(Object.keys(row).sort(), [...names].sort(), "a full alert fills every column");
    assert.equal(row.TimeGenerated, new Date(START).toISOString(), "when the collector sent it");
    assert.equal(row.LastUpdateTimeExact, alert.lastUpdateTime);
    assert.equal(Date.parse(String(row.LastUpdateTime)), Date.parse(alert.lastUpdateTime.replace(/(\.\d{3})\d+/, "$1")));
    assert.match(String(row.LastUpdateTime), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$/, "100 ns precision kept");
    assert.equal(row.CustomerTenantId, TENANT);
    assert.equal(row.CustomerName, "Contoso Ltd");
    assert.equal(row.Source, "defender");
    assert.equal(row.ProviderAlertId, alert.id);
    assert.equal(row.IncidentId, "4242");
    assert.equal(row.AlertName, alert.title);
    assert.equal(row.AlertSeverity, alert.severity);
    assert.equal(row.Status, alert.status);
    assert.equal(row.Category, alert.category);
    assert.equal(row.Classification, "TruePositive");
    assert.equal(row.Determination, "Malware");
    assert.equal(Date.parse(String(row.StartTime)), Date.parse(String(alert.firstEventTime).replace(/(\.\d{3})\d+/, "$1")));
    assert.equal(Date.parse(String(row.EndTime)), Date.parse(String(alert.lastEventTime).replace(/(\.\d{3})\d+/, "$1")));
    assert.equal(row.CompromisedEntity, alert.computerDnsName);
    assert.equal(row.DeliveryKey, item.deliveryKey);
    assert.deepEqual(row.RawAlert, alert, "the parsed alert JSON");
    assert.equal(row.RawTruncated, false);
    assert.equal(row.EvidenceCount, alert.evidence.length);
    assert.equal(row.CollectorUrl, item.collectorUrl);

    const call = ingestion.requestLog.at(-1);
    assert.equal(call?.status, 204);
    assert.equal(call?.gzip, true, "the SDK gzips");
    assert.ok(identity.tokensIssued >= 1, "the token came from the managed identity, for https://monitor.azure.com");
  });

  it("leaves out what the alert does not have (no incident, no device)", async () => {
    const { deps } = makeDeps();
    const alert = alerts(1, { incidentId: null, computerDnsName: null, classification: null, determination: null })[0] as DefenderAlert;
    await send(sentinel(deps), [itemOf(alert)]);
    const row = ingestion.records()[0]?.record ?? {};
    for (const absent of ["IncidentId", "CompromisedEntity", "Classification", "Determination"]) assert.ok(!(absent in row), `${absent} is left out`);
    assert.equal(ingestion.records()[0]?.typeProblems.length, 0);
  });

  it("keeps RawAlert up to 60 KB of JSON and omits it above, with RawTruncated, EvidenceCount and CollectorUrl", async () => {
    const { deps } = makeDeps();
    const small = sized(RAW_ALERT_MAX_BYTES - 4000);
    const large = sized(RAW_ALERT_MAX_BYTES + 1);
    assert.ok(JSON.stringify(small).length <= RAW_ALERT_MAX_BYTES, "precondition: at most 60 KB");
    assert.ok(JSON.stringify(large).length > RAW_ALERT_MAX_BYTES, "precondition: above 60 KB");
    const report = await send(sentinel(deps), [itemOf(small), itemOf(large)]);
    assert.equal(report.delivered.length, 2);
    const byId = new Map(ingestion.records().map((r) => [r.record.AlertId, r]));
    const kept = byId.get(small.id);
    assert.deepEqual(kept?.record.RawAlert, small);
    assert.equal(kept?.record.RawTruncated, false);
    const cut = byId.get(large.id);
    assert.ok(cut && !("RawAlert" in cut.record), "RawAlert omitted");
    assert.equal(cut.record.RawTruncated, true);
    assert.equal(cut.record.EvidenceCount, large.evidence.length);
    assert.equal(cut.record.CollectorUrl, `https://collector.localhost/api/tenants/${TENANT}/alerts/${encodeURIComponent(large.id)}`);
    for (const r of ingestion.records()) assert.deepEqual(r.truncatedFields, [], "no field over 64 KB");
  });

  it("delivers a 2 MB alert as a truncated record under 900 KB, with every call at most 1 MB", async () => {
    const { deps } = makeDeps();
    const huge = sized(2 * 1024 * 1024);
    const rest = Array.from({ length: 40 }, () => sized(50_000));
    const items = [itemOf(huge), ...rest.map((a) => itemOf(a))];
    const report = await send(sentinel(deps), items);
    assert.deepEqual(report.failed, []);
    assert.equal(report.delivered.length, 41);

    const calls = ingestion.requestLog;
    assert.ok(calls.length >= 3, `the ~4 MB of rows took ${calls.length} calls`);
    for (const c of calls) {
      assert.equal(c.status, 204);
      assert.ok(c.bytes <= 1024 * 1024 && c.wireBytes <= 1024 * 1024, `call ${c.seq}: ${c.bytes} bytes, ${c.wireBytes} on the wire`);
    }
    const row = ingestion.records().find((r) => r.record.AlertId === huge.id);
    assert.ok(row);
    assert.ok(row.bytes <= RECORD_MAX_BYTES, `${row.bytes} bytes`);
    assert.equal(row.record.RawTruncated, true);
    assert.equal(row.record.EvidenceCount, huge.evidence.length);
    assert.ok(huge.evidence.length > 100);
    assert.match(String(row.record.CollectorUrl), /\/api\/tenants\/[^/]+\/alerts\//);
    for (const r of ingestion.records()) assert.deepEqual(r.truncatedFields, []);
  });

  it("keeps every field below 64 KB and the row below 900 KB even for absurd column values", () => {
    const alert = sized(3 * 1024 * 1024);
    const item = itemOf(alert);
    const quotes = '"'.repeat(200_000); // 400 KB of JSON each once escaped
    for (const k of ["title", "severity", "status", "category", "classification", "determination", "incidentId", "computerDnsName"]) item.columns[k] = quotes;
    item.customerName = "é".repeat(100_000);
    const record = toSentinelRecord(item, new Date(START));
    assert.ok(Buffer.byteLength(JSON.stringify(record)) <= RECORD_MAX_BYTES);
    for (const [k, v] of Object.entries(record)) assert.ok(Buffer.byteLength(JSON.stringify(v)) <= 64 * 1024, `${k} fits 64 KB`);
    assert.equal(record.DeliveryKey, item.deliveryKey, "the key is never cut");
  });

  it("partial failure: only the rows of the failed call are failed, and they go on a second send", async () => {
    const { deps } = makeDeps();
    const items = Array.from({ length: 40 }, () => itemOf(sized(50_000)));
    const culprit = items[35] as DeliveryItem;
    ingestion.rejectRecords((r) => r.DeliveryKey === culprit.deliveryKey, 500);
    const destination = sentinel(deps);
    const report = await send(destination, items);

    const stored = new Set(ingestion.records().map((r) => String(r.record.DeliveryKey)));
    assert.ok(stored.size > 0 && stored.size < 40, `some calls went through (${stored.size} rows)`);
    assert.deepEqual([...report.delivered].sort(), [...stored].sort(), "delivered = exactly what the endpoint stored");
    const failedKeys = report.failed.map((f) => f.deliveryKey);
    assert.ok(failedKeys.includes(culprit.deliveryKey));
    assert.deepEqual([...failedKeys, ...report.delivered].sort(), keys(items), "every item is accounted for once");
    for (const f of report.failed) {
      assert.equal(f.permanent, false);
      assert.equal(f.code, "500 InjectedFailure");
    }

    ingestion.clearRejects();
    const retry = items.filter((i) => failedKeys.includes(i.deliveryKey));
    const second = await send(destination, retry);
    assert.deepEqual([...second.delivered].sort(), keys(retry));
    assert.equal(new Set(ingestion.records().map((r) => r.record.DeliveryKey)).size, 40);
  });

  it("a call refused as too large (413) is re-sent one row per call, and only the row that is too large alone is refused", async () => {
    const { deps } = makeDeps();
    ingestion.maxBodyBytes = 200_000;
    const normal = Array.from({ length: 10 }, () => itemOf(sized(30_000)));
    const wide = itemOf(alerts(1)[0] as DefenderAlert);
    for (const k of ["title", "category", "classification", "determination", "computerDnsName", "severity", "status"]) wide.columns[k] = "x".repeat(30_000);
    const report = await send(sentinel(deps), [...normal, wide]);
    assert.deepEqual([...report.delivered].sort(), keys(normal));
    assert.deepEqual(report.failed, [{ deliveryKey: wide.deliveryKey, permanent: true, code: "413 ContentLengthLimitExceeded" }]);
    assert.equal(ingestion.requestLog.filter((c) => c.status === 413).length, 2, "the batch's call, then the wide row alone");
    assert.ok(logs.some((l) => l.startsWith("delivery.sentinel.isolate destination=sentinel")));
  });

  it("a call refused for a bad row (400) is re-sent row by row: only that row is parked, the rest delivered", async () => {
    const { deps } = makeDeps();
    const items = alerts(6).map((a) => itemOf(a));
    const bad = items[3] as DeliveryItem;
    ingestion.rejectRecords((r) => r.DeliveryKey === bad.deliveryKey, 400, { code: "InvalidPayload" });
    const report = await send(sentinel(deps), items);
    assert.deepEqual([...report.delivered].sort(), keys(items.filter((i) => i !== bad)));
    assert.deepEqual(report.failed, [{ deliveryKey: bad.deliveryKey, permanent: true, code: "400 InvalidPayload" }]);
    assert.equal(ingestion.requestLog.length, 1 + items.length, "the batch's call, then one call per row");
  });

  it("429 with Retry-After: the rows fail for a retry with retryAfterMs, and nothing is slept or retried inside the send", async () => {
    const { deps, sleeps } = makeDeps();
    ingestion.failNext(1, 429, { retryAfterSec: 30 });
    const items = alerts(5).map((a) => itemOf(a));
    const report = await send(sentinel(deps), items);
    assert.deepEqual(report.delivered, []);
    assert.equal(report.retryAfterMs, 30_000);
    assert.deepEqual(
      report.failed.map((f) => [f.permanent, f.code]),
      items.map(() => [false, "429 TooManyRequests"]),
    );
    assert.equal(ingestion.requestLog.length, 1, "the SDK's own retries are off");
    assert.deepEqual(sleeps, []);
  });

  it("the rule's request limit answers 429 with Retry-After", async () => {
    const { deps } = makeDeps();
    ingestion.requestsPerMinute = 1;
    try {
      const destination = sentinel(deps);
      assert.equal((await send(destination, [itemOf(alerts(1)[0] as DefenderAlert)])).delivered.length, 1);
      const second = await send(destination, [itemOf(alerts(1)[0] as DefenderAlert)]);
      assert.equal(second.delivered.length, 0);
      assert.ok((second.retryAfterMs ?? 0) > 0 && (second.retryAfterMs ?? 0) <= 60_000);
    } finally {
      ingestion.requestsPerMinute = 12_000;
    }
  });

  it("whole-call failures throw a DestinationError naming the status: unknown rule or stream, wrong audience, 503, unreachable", async () => {
    const { deps } = makeDeps();
    const item = [itemOf(alerts(1)[0] as DefenderAlert)];
    const unknownRule = await rejects(send(sentinel(deps, { dcrImmutableId: "dcr-unknown" }), item));
    assert.equal(unknownRule.code, "404 DataCollectionRuleNotFound");
    assert.match(unknownRule.message, /DCR_IMMUTABLE_ID/);

    const unknownStream = await rejects(send(sentinel(deps, { stream: "Custom-Other_CL" }), item));
    assert.equal(unknownStream.code, "400 InvalidStream", "a setup error, not a reason to park the rows");
    assert.match(unknownStream.message, /STREAM/);

    const otherAudience = new FakeLogsIngestion({ certs, audience: "https://monitor.azure.us", verifyToken: (t, a) => identity.isValid(t, a) });
    await otherAudience.start();
    try {
      otherAudience.addRule(RULE_ID, { [SENTINEL_STREAM]: SENTINEL_COLUMNS });
      const wrongAudience = await rejects(send(sentinel(deps, { dcrEndpoint: otherAudience.url }), item));
      assert.equal(wrongAudience.code, "401 InvalidToken", "the token is for https://monitor.azure.com only");
      assert.match(wrongAudience.message, /Monitoring Metrics Publisher/);
    } finally {
      await otherAudience.stop();
    }

    ingestion.failNext(1, 503);
    assert.equal((await rejects(send(sentinel(deps), item))).code, "503 InjectedFailure");

    const closed = new FakeLogsIngestion({ certs });
    await closed.start();
    const url = closed.url;
    await closed.stop();
    const unreachable = await rejects(send(sentinel(deps, { dcrEndpoint: url }), item));
    assert.doesNotMatch(unreachable.code, /^\d/, `a network code, got ${unreachable.code}`);
  });

  it("an empty batch sends nothing", async () => {
    const { deps } = makeDeps();
    assert.deepEqual(await send(sentinel(deps), []), { delivered: [], failed: [] });
    assert.equal(ingestion.requestLog.length, 0);
  });
});

// ---------------------------------------------------------------------------------------
// Splunk HEC
// ---------------------------------------------------------------------------------------

describe("Splunk HEC destination", () => {
  const base: SplunkConfig = { name: "splunk", type: "splunk", enabled: true, url: "", useAck: false, tokenSecretName: "hec-token" };
  const secrets = { "hec-token": HEC_TOKEN, "hec-ack-token": ACK_TOKEN, "hec-wrong": "0000-not-a-known-token-0000" };
  const splunk = (deps: DestinationDeps, over: Partial<SplunkConfig> = {}, options: Parameters<typeof createSplunkDestination>[2] = {}) =>
    createSplunkDestination({ ...base, url: `${hec.url}/`, ...over }, deps, options);
  const eventRequests = () => hec.requestLog.filter((r) => r.path === "/services/collector/event");
  const ackPolls = () => hec.requestLog.filter((r) => r.path === "/services/collector/ack");

  it("posts several events per request with sourcetype, index, the alert's time and fields.deliveryKey", async () => {
    const { deps } = makeDeps(secrets);
    const list = alerts(5);
    const items = list.map((a) => itemOf(a));
    const report = await send(splunk(deps, { index: "soc", sourcetype: "mssp:test" }), items);
    assert.deepEqual([...report.delivered].sort(), keys(items));
    assert.deepEqual(report.failed, []);
    assert.equal(eventRequests().length, 1, "one request");
    assert.equal(eventRequests()[0]?.events, 5);

    const events = hec.events();
    assert.equal(events.length, 5);
    assert.equal(hec.receivedCount, 5);
    const first = events.find((e) => (e.event as DefenderAlert).id === list[0]?.id);
    const alert = list[0] as DefenderAlert;
    assert.ok(first);
    assert.deepEqual(first.event, alert, "the alert JSON as the source sent it");
    assert.equal(first.index, "soc");
    assert.equal(first.sourcetype, "mssp:test");
    assert.equal(first.source, "mssp-defender-collector:defender");
    assert.equal(first.time, Math.floor(Date.parse(alert.lastUpdateTime)) / 1000, "the alert version's time, seconds with milliseconds");
    assert.deepEqual(first.fields, { deliveryKey: items[0]?.deliveryKey, customerTenantId: TENANT, customerName: "Contoso Ltd" });
    assert.equal(first.indexed, true);
    assert.equal(first.channel, undefined, "no channel without USE_ACK");
  });

  it("defaults: sourcetype mssp:defender:alert, the token's index", async () => {
    const { deps } = makeDeps(secrets);
    await send(splunk(deps), alerts(1).map((a) => itemOf(a)));
    assert.equal(hec.events()[0]?.sourcetype, DEFAULT_SOURCETYPE);
    assert.equal(hec.events()[0]?.index, "main");
  });

  it("keeps requests under 1 MB, and sends a 2 MB alert without its evidence, with rawTruncated, evidenceCount and collectorUrl", async () => {
    const { deps } = makeDeps(secrets);
    const huge = sized(2 * 1024 * 1024);
    const items = [itemOf(huge), ...Array.from({ length: 30 }, () => itemOf(sized(50_000)))];
    const report = await send(splunk(deps), items);
    assert.equal(report.delivered.length, 31);
    assert.ok(eventRequests().length >= 2);
    for (const r of eventRequests()) assert.ok(r.bytes <= MAX_REQUEST_BYTES, `${r.bytes} bytes`);
    const big = hec.events().find((e) => (e.event as { id?: string }).id === huge.id);
    assert.ok(big);
    assert.equal((big.event as Record<string, unknown>).evidence, undefined);
    assert.equal((big.event as DefenderAlert).title, huge.title);
    assert.deepEqual(big.fields, {
      deliveryKey: items[0]?.deliveryKey,
      customerTenantId: TENANT,
      customerName: "Contoso Ltd",
      rawTruncated: "true",
      evidenceCount: String(huge.evidence.length),
      collectorUrl: items[0]?.collectorUrl,
    });
  });

  it("with USE_ACK: one channel per destination, delivered only once acked, polled with backoff on the destination's clock", async () => {
    const { deps, sleeps } = makeDeps(secrets);
    hec.ackAfterPolls = 3;
    const destination = splunk(deps, { useAck: true, tokenSecretName: "hec-ack-token" });
    const items = alerts(4).map((a) => itemOf(a));
    const report = await send(destination, items);
    assert.deepEqual([...report.delivered].sort(), keys(items));
    assert.deepEqual(sleeps, [1000, 2000, 4000], "acks came true on the third poll");
    assert.equal(ackPolls().length, 3);
    assert.ok(hec.events().every((e) => e.indexed && e.ackId === 0));

    await send(destination, alerts(2).map((a) => itemOf(a)));
    const channels = new Set(hec.requestLog.map((r) => r.channel));
    assert.equal(channels.size, 1, "the same channel for every request of this destination");
    assert.match([...channels][0] ?? "", /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(hec.events().slice(4).every((e) => e.ackId === 1), "ackIds count up per channel");
    const other = splunk(makeDeps(secrets).deps, { useAck: true, tokenSecretName: "hec-ack-token" });
    await send(other, alerts(1).map((a) => itemOf(a)));
    assert.equal(new Set(hec.requestLog.map((r) => r.channel)).size, 2, "another destination instance, another channel");
  });

  it("ack timeout: events received but never acknowledged fail for a retry; the acknowledged request still counts", async () => {
    const { deps, sleeps } = makeDeps(secrets);
    const destination = splunk(deps, { useAck: true, tokenSecretName: "hec-ack-token" }, { maxRequestBytes: 60_000, ackTimeoutMs: 30_000 });
    const items = Array.from({ length: 2 }, () => itemOf(sized(40_000)));
    hec.loseAcks(1);
    const report = await send(destination, items);
    assert.equal(eventRequests().length, 2, "one event per request");
    assert.deepEqual(report.delivered, [items[1]?.deliveryKey]);
    assert.deepEqual(report.failed, [{ deliveryKey: items[0]?.deliveryKey, permanent: false, code: "hec-ack-timeout" }]);
    assert.equal(
      sleeps.reduce((a, b) => a + b, 0),
      30_000,
      "waited exactly the ack timeout",
    );
    assert.equal(hec.events().length, 2, "HEC had received both (received is not indexed)");
    assert.ok(logs.some((l) => l.startsWith("delivery.splunk.unacknowledged destination=splunk requests=1")));
  });

  it("USE_ACK against a token without ack is a configuration error", async () => {
    const { deps } = makeDeps(secrets);
    const err = await rejects(send(splunk(deps, { useAck: true }), alerts(1).map((a) => itemOf(a))));
    assert.equal(err.code, "hec-ack-disabled");
  });

  it("503 (server busy) with Retry-After: the batch fails for a retry with retryAfterMs; nothing more is sent", async () => {
    const { deps } = makeDeps(secrets);
    hec.failNext(1, { status: 503, code: 9, retryAfterSec: 15 });
    const items = alerts(3).map((a) => itemOf(a));
    const report = await send(splunk(deps), items);
    assert.deepEqual(report.delivered, []);
    assert.equal(report.retryAfterMs, 15_000);
    assert.deepEqual(
      report.failed.map((f) => [f.permanent, f.code]),
      items.map(() => [false, "hec-503-9"]),
    );
    assert.equal(eventRequests().length, 1);
  });

  it("503 in the middle of a batch: earlier requests count, the rest fail for a retry; 429 alike", async () => {
    const { deps } = makeDeps(secrets);
    const items = Array.from({ length: 3 }, () => itemOf(sized(40_000)));
    hec.failNext(1, { status: 503, code: 9 }, 1);
    const report = await send(splunk(deps, {}, { maxRequestBytes: 60_000 }), items);
    assert.deepEqual(report.delivered, [items[0]?.deliveryKey]);
    assert.deepEqual(
      report.failed.map((f) => [f.deliveryKey, f.code]),
      [
        [items[1]?.deliveryKey, "hec-503-9"],
        [items[2]?.deliveryKey, "hec-503-9"],
      ],
    );
    assert.equal(report.retryAfterMs, undefined, "no Retry-After, no wait asked: the outbox backs off");
    assert.equal(eventRequests().length, 2, "nothing sent after the 503");

    hec.reset();
    hec.failNext(1, { status: 429, retryAfterSec: 7 });
    const throttled = await send(splunk(deps), alerts(2).map((a) => itemOf(a)));
    assert.equal(throttled.retryAfterMs, 7000);
    assert.ok(throttled.failed.every((f) => !f.permanent && f.code === "hec-429"));
  });

  it("400 code 6 with invalid-event-number: that event is refused for good, the request's others are retried", async () => {
    const { deps } = makeDeps(secrets);
    const items = alerts(3).map((a) => itemOf(a));
    hec.failNext(1, { status: 400, code: 6, text: "Invalid data format", invalidEventNumber: 1 });
    const report = await send(splunk(deps), items);
    assert.deepEqual(report.delivered, []);
    assert.deepEqual(
      report.failed.map((f) => [f.deliveryKey, f.permanent, f.code]).sort(),
      [
        [items[0]?.deliveryKey, false, "hec-400-6-batch"],
        [items[1]?.deliveryKey, true, "hec-400-6"],
        [items[2]?.deliveryKey, false, "hec-400-6-batch"],
      ].sort(),
    );
  });

  it("a really blank event is refused by HEC (code 13) and parked; the events before it are retried", async () => {
    const { deps } = makeDeps(secrets);
    const items = alerts(3).map((a) => itemOf(a));
    (items[2] as DeliveryItem).json = "";
    const report = await send(splunk(deps), items);
    assert.deepEqual(
      report.failed.find((f) => f.deliveryKey === items[2]?.deliveryKey),
      { deliveryKey: items[2]?.deliveryKey, permanent: true, code: "hec-400-13" },
    );
    assert.equal(report.failed.filter((f) => !f.permanent).length, 2);
    assert.equal(hec.events().length, 2, "HEC kept the two before it: a retry duplicates them, fields.deliveryKey tells");
  });

  it("400 code 6 without an event number: the request is re-sent one event per request", async () => {
    const { deps } = makeDeps(secrets);
    const items = alerts(3).map((a) => itemOf(a));
    hec.failNext(1, { status: 400, code: 6 });
    const report = await send(splunk(deps), items);
    assert.deepEqual([...report.delivered].sort(), keys(items));
    assert.deepEqual(
      eventRequests().map((r) => r.events),
      [0, 1, 1, 1],
    );
  });

  it("413: the request is split in halves; a single event too large alone is refused", async () => {
    const { deps } = makeDeps(secrets);
    hec.maxContentLength = 100_000;
    const fitting = Array.from({ length: 6 }, () => itemOf(sized(30_000)));
    const tooBig = itemOf(sized(150_000));
    const report = await send(splunk(deps), [...fitting, tooBig]);
    assert.deepEqual([...report.delivered].sort(), keys(fitting));
    assert.deepEqual(report.failed, [{ deliveryKey: tooBig.deliveryKey, permanent: true, code: "hec-413" }]);
    assert.ok(eventRequests().filter((r) => r.status === 413).length >= 2);
  });

  it("401/403 and a refused index fail the whole call, naming status and code but never the token", async () => {
    const { deps } = makeDeps(secrets);
    const items = alerts(1).map((a) => itemOf(a));
    const forbidden = await rejects(send(splunk(deps, { tokenSecretName: "hec-wrong" }), items));
    assert.equal(forbidden.code, "hec-403-4");
    assert.match(forbidden.message, /403, code 4 Invalid token/);
    assert.match(forbidden.message, /TOKEN_SECRET_NAME/);
    assert.doesNotMatch(forbidden.message, /not-a-known-token/);

    const index = await rejects(send(splunk(deps, { index: "forbidden" }), items));
    assert.equal(index.code, "hec-400-7");
    assert.match(index.message, /INDEX/);

    const missing = await rejects(send(splunk(deps, { tokenSecretName: "no-such-secret" }), items));
    assert.equal(missing.code, "hec-token-missing");
  });

  it("a 5xx or an unreachable HEC before anything got through fails the whole call", async () => {
    const { deps } = makeDeps(secrets);
    const items = alerts(2).map((a) => itemOf(a));
    hec.failNext(1, { status: 500, code: 8 });
    assert.equal((await rejects(send(splunk(deps), items))).code, "hec-500-8");
    const closed = new FakeSplunkHec({ certs });
    await closed.start();
    const url = closed.url;
    await closed.stop();
    assert.equal((await rejects(send(splunk(deps, { url }), items))).code, "network");
  });

  it("the fake HEC splits concatenated objects as Splunk does, and the leak check knows the HEC tokens", () => {
    assert.deepEqual(splitObjects('{"a":"}{"}\n {"b":[1,{"c":2}]}'), [{ a: "}{" }, { b: [1, { c: 2 }] }]);
    assert.deepEqual(splitObjects('{"a":1}[1]'), [{ a: 1 }, undefined]);
    const secretsKnown = knownSecrets();
    assert.ok(secretsKnown.has(HEC_TOKEN) && secretsKnown.has(ACK_TOKEN));
  });
});

describe("Retry-After", () => {
  it("reads seconds and HTTP dates against the destination's clock", () => {
    const now = new Date(START);
    assert.equal(retryAfterMs("30", now), 30_000);
    assert.equal(retryAfterMs(new Date(START + 90_000).toUTCString(), now), 90_000);
    assert.equal(retryAfterMs(new Date(START - 5_000).toUTCString(), now), 0);
    assert.equal(retryAfterMs("soon", now), undefined);
    assert.equal(retryAfterMs(undefined, now), undefined);
  });
});
