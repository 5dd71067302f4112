import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, beforeEach, describe, it } from "node:test";
import { odata } from "@azure/data-tables";
import { type Services, services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { type DefenderAlert, makeAlert, makeLargeAlert } from "../simulators/alerts.js";
import { testCerts } from "../simulators/https.js";
import { WebhookReceiver } from "../simulators/webhook-receiver.js";
import { type Harness, startHarness } from "./support/harness.js";

/**
 * The delivery outbox (issue "Deliver alerts where the SOC works"): at-least-once, in order
 * per alert, one destination's outage never holding up another or a pull. Two webhook
 * destinations whose receivers verify every signature with the official standardwebhooks
 * package. Time is virtual for the app (backoff, markers, leases).
 */

const MINUTE = 60_000;
let h: Harness;
let svc: Services;
let clock = Date.now();
const secret = (): string => `whsec_${randomBytes(24).toString("base64")}`;
const main = new WebhookReceiver(testCerts(), secret());
const backup = new WebhookReceiver(testCerts(), secret());

before(async () => {
  await Promise.all([main.start(), backup.start()]);
  h = await startHarness({
    PULL_LAG_SECONDS: "0",
    "DESTINATIONS__soc-hook__TYPE": "webhook",
    "DESTINATIONS__soc-hook__URL": main.url,
    "DESTINATIONS__soc-hook__SECRET_NAME": "soc-hook-secret",
    "DESTINATIONS__backup-hook__TYPE": "webhook",
    "DESTINATIONS__backup-hook__URL": backup.url,
    "DESTINATIONS__backup-hook__SECRET_NAME": "backup-hook-secret",
  });
  svc = await services();
  svc.now = () => new Date(clock);
  svc.sleep = async () => {};
  await svc.secrets.setSecret("soc-hook-secret", main.secret);
  await svc.secrets.setSecret("backup-hook-secret", backup.secret);
});
after(async () => {
  await h?.stop();
  await Promise.all([main.stop(), backup.stop()]);
});
beforeEach(() => {
  main.down = undefined;
  backup.down = undefined;
});

function alertAt(at: number, seed: string): DefenderAlert {
  return makeAlert({ lastUpdateTime: new Date(at), seed, evidenceCount: 1 });
}

async function activeTenant(alerts: DefenderAlert[]): Promise<string> {
  const tenantId = h.newTenant();
  h.defender.setAlerts(tenantId, alerts);
  assert.equal((await h.onboard(tenantId)).status, 200);
  return tenantId;
}

async function pull(tenantId: string): Promise<void> {
  await h.trigger("pull-worker", { tenantId });
}

async function deliver(tenantId: string): Promise<void> {
  await h.trigger("deliver-worker", { tenantId });
}

/** Every alert of the tenant arrived at the receiver, the last one received being the latest version. */
function assertDelivered(receiver: WebhookReceiver, tenantId: string): void {
  const latest = receiver.latest();
  for (const alert of h.defender.getAlerts(tenantId)) {
    const got = latest.get(`${tenantId}|${alert.id}`);
    assert.ok(got, `${alert.id} delivered`);
    assert.equal(got.payload.data.alert.lastUpdateTime, alert.lastUpdateTime, `${alert.id} at its latest version`);
    assert.equal(got.id, `${tenantId}:defender:${alert.id}:${alert.lastUpdateTime}`, "webhook-id is the delivery key");
  }
}

/** No receiver ever got an older version of an alert after a newer one. */
function assertInOrder(receiver: WebhookReceiver): void {
  const seen = new Map<string, string>();
  for (const r of receiver.received) {
    const key = `${r.payload.data.tenantId}|${r.payload.data.alertId}`;
    const previous = seen.get(key);
    assert.ok(!previous || previous <= r.payload.data.lastUpdateTime, `${key}: ${r.payload.data.lastUpdateTime} after ${previous}`);
    seen.set(key, r.payload.data.lastUpdateTime);
  }
  assert.deepEqual(receiver.rejected, [], "every signature verified");
}

async function outboxRows(tenantId: string): Promise<number> {
  let n = 0;
  const filter = odata`PartitionKey eq ${tenantId} and RowKey ge ${"~o|"} and RowKey lt ${"~o}"}`;
  for await (const _ of svc.storage.table(TABLES.alerts).listEntities({ queryOptions: { filter } })) n++;
  return n;
}

describe("delivery", () => {
  it("delivers every alert, a 2 MB one byte for byte, then its newer versions, to every destination", async () => {
    clock = Date.now();
    const big = makeLargeAlert(2 * 1024 * 1024, { lastUpdateTime: new Date(clock - 30 * MINUTE), seed: "deliver-big" });
    const tenantId = await activeTenant([big, ...Array.from({ length: 30 }, (_, i) => alertAt(clock - (i + 1) * MINUTE, `deliver-${i}`))]);
    await pull(tenantId);
    await deliver(tenantId);
    assertDelivered(main, tenantId);
    assertDelivered(backup, tenantId);
    const bigBody = main.received.find((r) => r.payload.data.alertId === big.id)!.body;
    assert.ok(bigBody.includes(`"alert":${JSON.stringify(big)}}`), "the exact JSON");
    assert.equal(await outboxRows(tenantId), 0, "delivered entries are gone");
    const ids = h.defender.getAlerts(tenantId).slice(0, 5).map((a) => a.id);
    h.defender.touch(tenantId, ids, new Date(clock - 1000), { status: "Resolved" });
    h.defender.touch(tenantId, ids, new Date(clock - 500), { status: "Resolved", assignedTo: "soc@mssp.example" });
    await pull(tenantId);
    await deliver(tenantId);
    assertDelivered(main, tenantId);
    assertInOrder(main);
    assertInOrder(backup);
    const status = await h.http("health-details", { path: "health/details" });
    const delivery = (status.json as { delivery: { destinations: { name: string; lastSuccessAt?: string }[] } }).delivery;
    assert.ok(delivery.destinations.every((d) => d.lastSuccessAt), JSON.stringify(delivery));
  });

  it("loses nothing when the wake-up is lost or a pull crashes right after storing: the timer finds the marker", async () => {
    clock += 60 * MINUTE;
    const tenantId = await activeTenant(Array.from({ length: 12 }, (_, i) => alertAt(clock - (i + 1) * MINUTE, `crash-${i}`)));
    const table = svc.storage.table(TABLES.alerts);
    const submit = table.submitTransaction.bind(table);
    let crashed = false;
    table.submitTransaction = async (actions, options) => {
      const result = await submit(actions, options);
      if (!crashed) {
        crashed = true;
        throw Object.assign(new Error("the process died right after the transaction"), { statusCode: 500 });
      }
      return result;
    };
    try {
      await pull(tenantId).catch(() => undefined);
    } finally {
      table.submitTransaction = submit;
    }
    assert.ok(crashed);
    await pull(tenantId); // the rest of the alerts; this run's wake-up is lost too:
    const queue = svc.storage.deliveryQueue;
    await queue.clearMessages();
    assert.equal(main.latest().has(`${tenantId}|${h.defender.getAlerts(tenantId)[0]!.id}`), false);
    clock += 6 * MINUTE;
    await h.trigger("pull-timer", {});
    const queued = await queue.receiveMessages({ numberOfMessages: 32 });
    const wakes = queued.receivedMessageItems.map((m) => JSON.parse(Buffer.from(m.messageText, "base64").toString("utf8")) as { tenantId?: string });
    assert.ok(wakes.some((m) => m.tenantId === tenantId), "the timer queued the tenant whose marker is overdue");
    await deliver(tenantId);
    assertDelivered(main, tenantId);
    assertDelivered(backup, tenantId);
  });

  it("sends again after a crash between sending and recording the acknowledgement", async () => {
    clock += 60 * MINUTE;
    const tenantId = await activeTenant(Array.from({ length: 6 }, (_, i) => alertAt(clock - (i + 1) * MINUTE, `ack-crash-${i}`)));
    // One destination, so the acknowledgement that fails is soc-hook's.
    const routed = await h.http("tenants-patch", {
      method: "PATCH",
      path: `tenants/${tenantId}`,
      params: { tenantId },
      body: JSON.stringify({ destinations: ["soc-hook"] }),
    });
    assert.equal(routed.status, 200);
    await pull(tenantId);
    const table = svc.storage.table(TABLES.alerts);
    const del = table.deleteEntity.bind(table);
    let failed = 0;
    table.deleteEntity = async (...args) => {
      if (String(args[1]).startsWith("~o|") && failed++ === 0) throw Object.assign(new Error("crash after send"), { statusCode: 500 });
      return del(...args);
    };
    try {
      await deliver(tenantId).catch(() => undefined);
    } finally {
      table.deleteEntity = del;
    }
    const before = main.received.filter((r) => r.payload.data.tenantId === tenantId).length;
    assert.ok(before >= 6, "sent once");
    clock += 15 * MINUTE; // past the crashed run's lease
    await deliver(tenantId);
    assertDelivered(main, tenantId);
    assert.ok(main.received.filter((r) => r.payload.data.tenantId === tenantId).length > before, "sent again (at least once)");
    assert.equal(await outboxRows(tenantId), 0);
  });

  it("a destination down for an hour delays neither the other destination nor the pulls, then catches up in order", async () => {
    clock += 60 * MINUTE;
    const tenantId = await activeTenant(Array.from({ length: 10 }, (_, i) => alertAt(clock - (i + 1) * MINUTE, `down-${i}`)));
    main.down = { status: 500 };
    const start = clock;
    for (let minute = 0; minute <= 60; minute += 5) {
      clock = start + minute * MINUTE;
      h.defender.upsertAlert(tenantId, alertAt(clock - 30_000, `down-fresh-${minute}`));
      if (minute % 15 === 0) h.defender.touch(tenantId, [h.defender.getAlerts(tenantId)[0]!.id], new Date(clock - 20_000), { status: "InProgress" });
      await pull(tenantId);
      await deliver(tenantId);
      assertDelivered(backup, tenantId); // the healthy one is never behind
    }
    const logs = h.logs.filter((l) => l.includes(`tenantId=${tenantId}`));
    assert.ok(logs.filter((l) => l.includes("pull.succeeded")).length >= 13, "every pull went on");
    assert.ok(logs.some((l) => l.includes("delivery.retry destination=soc-hook")));
    const details = (await h.http("health-details", { path: "health/details" })).json as {
      delivery: { destinations: { name: string; backlogAgeSeconds?: number; lastError?: { code: string } }[] };
    };
    const down = details.delivery.destinations.find((d) => d.name === "soc-hook")!;
    assert.equal(down.lastError?.code, "HTTP500");
    assert.ok((down.backlogAgeSeconds ?? 0) >= 50 * 60, `backlog age ${down.backlogAgeSeconds}`);
    main.down = undefined;
    clock += 31 * MINUTE; // past the longest backoff
    await h.trigger("pull-timer", {});
    await deliver(tenantId);
    assertDelivered(main, tenantId);
    assertInOrder(main);
  });

  it("honours Retry-After on 429", async () => {
    clock += 120 * MINUTE;
    const tenantId = await activeTenant(Array.from({ length: 3 }, (_, i) => alertAt(clock - (i + 1) * MINUTE, `throttle-${i}`)));
    await pull(tenantId);
    main.inject({ status: 429, retryAfterSeconds: 120 });
    await deliver(tenantId);
    assert.ok(h.logs.some((l) => l.includes(`delivery.retry destination=soc-hook tenantId=${tenantId} code=HTTP429 waitMs=120000`)));
    clock += 60_000;
    const count = main.received.length;
    await deliver(tenantId); // still inside Retry-After: nothing is sent
    assert.equal(main.received.length, count);
    clock += 61_000;
    await deliver(tenantId);
    assertDelivered(main, tenantId);
    assertInOrder(main);
  });

  it("a 410 disables the destination until an operator enables it; the health details say so", async () => {
    clock += 120 * MINUTE;
    const tenantId = await activeTenant(Array.from({ length: 4 }, (_, i) => alertAt(clock - (i + 1) * MINUTE, `gone-${i}`)));
    await pull(tenantId);
    backup.down = { status: 410 };
    await deliver(tenantId);
    backup.down = undefined;
    const count = backup.received.length;
    clock += 60 * MINUTE;
    await deliver(tenantId);
    assert.equal(backup.received.length, count, "nothing sent while disabled");
    const details = (await h.http("health-details", { path: "health/details" })).json as {
      delivery: { destinations: { name: string; disabled?: { code: string } }[] };
    };
    assert.equal(details.delivery.destinations.find((d) => d.name === "backup-hook")?.disabled?.code, "HTTP410");
    const enabled = await h.http("destinations-enable", { method: "POST", path: "destinations/backup-hook/enable", params: { name: "backup-hook" } });
    assert.equal(enabled.status, 200);
    await deliver(tenantId);
    assertDelivered(backup, tenantId);
    assertDelivered(main, tenantId);
  });

  it("routes per tenant, and a replay re-sends exactly the asked range", async () => {
    clock += 120 * MINUTE;
    const a = await activeTenant(Array.from({ length: 5 }, (_, i) => alertAt(clock - (i + 1) * MINUTE, `route-a-${i}`)));
    const b = await activeTenant(Array.from({ length: 4 }, (_, i) => alertAt(clock - (i + 1) * MINUTE, `route-b-${i}`)));
    const patch = (tenantId: string, body: unknown) =>
      h.http("tenants-patch", { method: "PATCH", path: `tenants/${tenantId}`, params: { tenantId }, body: JSON.stringify(body) });
    assert.equal((await patch(a, { destinations: ["nope"] })).status, 400);
    const routed = await patch(a, { destinations: ["soc-hook"] });
    assert.equal(routed.status, 200, routed.text);
    assert.deepEqual((routed.json as { destinations: string[] }).destinations, ["soc-hook"]);
    await pull(a);
    await pull(b);
    await deliver(a);
    await deliver(b);
    assertDelivered(main, a);
    assert.ok(!backup.received.some((r) => r.payload.data.tenantId === a), "a is not routed to backup-hook");
    assertDelivered(backup, b);
    // Replay tenant a to backup-hook: exactly a's alerts, none of b's.
    const before = backup.received.length;
    const since = new Date(Date.now() - 3600_000).toISOString();
    const replay = await h.http("destinations-replay", {
      method: "POST",
      path: "destinations/backup-hook/replay",
      params: { name: "backup-hook" },
      body: JSON.stringify({ tenantId: a, since }),
    });
    assert.equal(replay.status, 202, replay.text);
    assert.ok((replay.json as { replayId: string }).replayId);
    const queued = await svc.storage.deliveryQueue.receiveMessages({ numberOfMessages: 32 });
    for (const m of queued.receivedMessageItems) {
      await h.trigger("deliver-worker", JSON.parse(Buffer.from(m.messageText, "base64").toString("utf8")));
      await svc.storage.deliveryQueue.deleteMessage(m.messageId, m.popReceipt);
    }
    await deliver(a);
    const replayed = backup.received.slice(before);
    assert.deepEqual(
      replayed.map((r) => r.payload.data.alertId).sort(),
      h.defender.getAlerts(a).map((x) => x.id).sort(),
      "every alert of a once, nothing of b",
    );
    const empty = await h.http("destinations-replay", {
      method: "POST",
      path: "destinations/backup-hook/replay",
      params: { name: "backup-hook" },
      body: JSON.stringify({ tenantId: b, since: new Date(Date.now() + 60_000).toISOString() }),
    });
    assert.equal(empty.status, 202);
    assert.equal(
      (await h.http("destinations-replay", { method: "POST", path: "destinations/nope/replay", params: { name: "nope" }, body: JSON.stringify({ since }) })).status,
      404,
    );
    assert.equal(
      (await h.http("destinations-replay", { method: "POST", path: "destinations/backup-hook/replay", params: { name: "backup-hook" }, body: JSON.stringify({ since: "yesterday" }) })).status,
      400,
    );
  });
});

describe("reading alerts with their JSON", () => {
  it("include=raw embeds each alert's exact JSON, caps top at 100, and stops a page at 8 MiB", async () => {
    clock += 240 * MINUTE;
    // 4 x 2.75 MiB (+ a small one): whatever the order, a page passes 8 MiB at its third big
    // alert with rows still to come, and stops there.
    const bigs = Array.from({ length: 4 }, (_, i) =>
      makeLargeAlert(2.75 * 1024 * 1024, { lastUpdateTime: new Date(clock - (i + 1) * MINUTE), seed: `raw-${i}` }),
    );
    const tenantId = await activeTenant([...bigs, alertAt(clock - 10 * MINUTE, "raw-small")]);
    await pull(tenantId);
    assert.equal((await h.http("alerts-list", { path: `alerts?tenantId=${tenantId}&include=raw&top=101` })).status, 400);
    assert.equal((await h.http("alerts-list", { path: `alerts?tenantId=${tenantId}&include=evidence` })).status, 400);
    const pages: { alerts: { id: string; raw: { id: string } }[]; continuationToken?: string; nextSince?: string }[] = [];
    let token: string | undefined;
    do {
      const query = new URLSearchParams({ tenantId, include: "raw", top: "100" });
      if (token) query.set("continuationToken", token);
      const got = await h.http("alerts-list", { path: `alerts?${query}` });
      assert.equal(got.status, 200, got.text.slice(0, 300));
      assert.ok(got.text.length < 12 * 1024 * 1024, `a page of ${got.text.length} bytes`);
      const body = got.json as (typeof pages)[number];
      for (const alert of body.alerts) {
        const expected = JSON.stringify(h.defender.getAlert(tenantId, alert.id));
        assert.ok(got.text.includes(`"raw":${expected}`), `${alert.id}: the exact JSON`);
      }
      pages.push(body);
      token = body.continuationToken;
    } while (token);
    assert.ok(pages.length >= 2, "the first page stopped early at 8 MiB");
    assert.ok(pages[0]!.alerts.length < 5);
    assert.deepEqual(pages.flatMap((p) => p.alerts.map((a) => a.id)).sort(), h.defender.getAlerts(tenantId).map((a) => a.id).sort());
    assert.ok(pages.at(-1)!.nextSince, "the last page carries nextSince");
  });
});
