import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import { odata } from "@azure/data-tables";
import { type AlertTables, readAlertJson } from "../shared/collection/alert-store.js";
import { timeMs } from "../shared/collection/time.js";
import { forgetAccessToken } from "../shared/collection/tokens.js";
import { type Services, services } from "../shared/platform/services.js";
import { TABLES } from "../shared/platform/storage.js";
import { type DefenderAlert, makeAlert, makeLargeAlert } from "../simulators/alerts.js";
import { type Harness, startHarness, untilOrEnd } from "./support/harness.js";

/**
 * Losing nothing under real timing (issue "Lose nothing under real timing"): late
 * publication, fenced pulls, newest-wins writes, failing windows, overflow garbage and the
 * readers' resume point. Time is virtual: the app's clock and the fake Defender's request
 * log follow `clock`, and every pull runs at an instant the test chooses.
 */

const MINUTE = 60_000;
/** Large enough that the compressed body overflows the alert row (10 x 64 KiB). */
const BIG = 5 * 1024 * 1024;
const HOUR = 60 * MINUTE;
let h: Harness;
let svc: Services;
let clock = Date.now();

before(async () => {
  h = await startHarness({ PULL_PAGE_SIZE: "100" });
  svc = await services();
  svc.now = () => new Date(clock);
  svc.sleep = async () => {};
  h.defender.now = () => clock;
});
after(async () => {
  await h?.stop();
});
beforeEach(() => {
  h.defender.clearFaults();
  h.defender.beforeResponse = undefined;
});

function alertAt(at: number, seed: string, extra: Partial<DefenderAlert> = {}): DefenderAlert {
  return { ...makeAlert({ lastUpdateTime: new Date(at), seed, evidenceCount: 1 }), ...extra };
}

async function activeTenant(alerts: DefenderAlert[]): Promise<string> {
  const tenantId = h.newTenant();
  h.defender.setAlerts(tenantId, alerts);
  const page = await h.onboard(tenantId);
  assert.equal(page.status, 200, page.text);
  return tenantId;
}

async function pullAt(at: number, tenantId: string): Promise<void> {
  clock = at;
  await h.trigger("pull-worker", { tenantId });
}

interface Row {
  alertId: string;
  lastUpdateTimeExact: string;
  status?: string;
  assignedTo?: string;
}

async function rows(tenantId: string): Promise<Map<string, Row>> {
  const out = new Map<string, Row>();
  const filter = odata`PartitionKey eq ${tenantId} and RowKey lt ${"~"}`;
  for await (const row of svc.storage.table(TABLES.alerts).listEntities<Row>({ queryOptions: { filter } })) {
    out.set(row.alertId, row);
  }
  return out;
}

async function assertInSync(tenantId: string): Promise<void> {
  const stored = await rows(tenantId);
  const expected = h.defender.getAlerts(tenantId);
  assert.equal(stored.size, expected.length, "one row per alert");
  for (const alert of expected) assert.equal(stored.get(alert.id)?.lastUpdateTimeExact, alert.lastUpdateTime, alert.id);
}

async function tenantStatus(tenantId: string): Promise<Record<string, unknown>> {
  const got = await h.http("tenants-get", { path: `tenants/${tenantId}`, params: { tenantId } });
  assert.equal(got.status, 200, got.text);
  return got.json as Record<string, unknown>;
}

function lateFound(tenantId: string, alertId: string): boolean {
  return h.logs.some((l) => l.includes(`pull.late-found tenantId=${tenantId} alertId=${alertId} `));
}

describe("late publication", () => {
  it("the overlap catches short delays, the hourly and daily sweeps the rest, a reconcile at once", async () => {
    const t0 = clock;
    const history = Array.from({ length: 20 }, (_, i) => alertAt(t0 - (i + 1) * HOUR, `late-history-${i}`));
    const tenantId = await activeTenant(history);
    await pullAt(t0, tenantId);
    const publish = (alert: DefenderAlert) => {
      h.defender.upsertAlert(tenantId, alert);
      return alert;
    };
    const late: Record<string, DefenderAlert> = {};
    // Two hours of a busy tenant: a fresh alert every five minutes, and late ones among them.
    for (let minute = 5; minute <= 125; minute += 5) {
      const now = t0 + minute * MINUTE;
      publish(alertAt(now - 65_000, `late-fresh-${minute}`));
      if (minute === 30) late.min5 = publish(alertAt(now - 5 * MINUTE, "late-5m"));
      if (minute === 35) late.h20 = publish(alertAt(now - 20 * HOUR, "late-20h"));
      if (minute === 40) late.min20 = publish(alertAt(now - 20 * MINUTE, "late-20m"));
      if (minute === 45) late.h30 = publish(alertAt(now - 30 * HOUR, "late-30h"));
      if (minute === 70) late.min60 = publish(alertAt(now - 60 * MINUTE, "late-60m"));
      await pullAt(now, tenantId);
      if (minute === 30) {
        assert.ok((await rows(tenantId)).has(late.min5!.id), "5 minutes late: inside the overlap, stored at once");
        assert.ok(!lateFound(tenantId, late.min5!.id));
      }
      if (minute === 40) assert.ok(!(await rows(tenantId)).has(late.min20!.id), "20 minutes late: past the overlap");
    }
    let stored = await rows(tenantId);
    for (const name of ["min20", "min60", "h20"] as const) {
      assert.ok(stored.has(late[name]!.id), `${name}: caught by the hourly sweep`);
      assert.ok(lateFound(tenantId, late[name]!.id), `${name}: logged as found late`);
    }
    assert.ok(!stored.has(late.h30!.id), "30 hours late: outside the hourly sweep's 24 h");
    // The daily sweep covers the last 7 days once a day.
    for (let hour = 3; hour <= 25; hour++) await pullAt(t0 + hour * HOUR, tenantId);
    stored = await rows(tenantId);
    assert.ok(stored.has(late.h30!.id), "30 hours late: caught by the daily sweep");
    assert.ok(lateFound(tenantId, late.h30!.id));
    // An operator reconcile of 48 h catches a late alert at once.
    const now = t0 + 25 * HOUR + 10 * MINUTE;
    clock = now;
    const l40 = publish(alertAt(now - 40 * HOUR, "late-40h"));
    const bad = await h.http("tenants-reconcile", {
      method: "POST",
      path: `tenants/${tenantId}/reconcile`,
      params: { tenantId },
      body: JSON.stringify({ lookbackHours: 5000 }),
    });
    assert.equal(bad.status, 400);
    assert.equal((bad.json as { error: { code: string } }).error.code, "InvalidLookback");
    const queued = await h.http("tenants-reconcile", {
      method: "POST",
      path: `tenants/${tenantId}/reconcile`,
      params: { tenantId },
      body: JSON.stringify({ lookbackHours: 48 }),
    });
    assert.equal(queued.status, 202, queued.text);
    assert.deepEqual(queued.json, { tenantId, queued: true, lookbackHours: 48 });
    await pullAt(now, tenantId);
    assert.ok((await rows(tenantId)).has(l40.id), "reconcile: stored at once");
    await assertInSync(tenantId);
    const s = await tenantStatus(tenantId);
    const lateness = s.lateness as { p99Seconds: number; maxSeconds: number; foundBySweep24h: number };
    assert.ok(lateness.maxSeconds >= 20 * 3600, `max lateness ${lateness.maxSeconds}s`);
    assert.ok(lateness.foundBySweep24h >= 1);
    assert.equal(s.overlapMinutes, 10);
    assert.ok(
      h.logs.some((l) => new RegExp(`pull\\.succeeded tenantId=${tenantId} .*lateP99Seconds=\\d+ lateMaxSeconds=\\d+`).test(l)),
    );
    assert.ok(h.logs.some((l) => l.includes(`sweep.succeeded tenantId=${tenantId} cursor=defender:sweep pass=reconcile`)));
    assert.ok(!h.logs.some((l) => l.includes(`pull.succeeded tenantId=${tenantId} cursor=`)), "sweeps never log pull.succeeded");
  });

  it("widens a tenant's overlap to twice its p99 lateness only when PULL_OVERLAP_AUTO_MAX_MINUTES is set, never above it", async () => {
    const t0 = clock + 30 * HOUR;
    const tenantId = await activeTenant([alertAt(t0 - HOUR, "widen-seed")]);
    await pullAt(t0, tenantId);
    // Alerts that arrive 40 minutes late, found by the hourly sweep.
    for (let minute = 5; minute <= 65; minute += 5) {
      const now = t0 + minute * MINUTE;
      h.defender.upsertAlert(tenantId, alertAt(now - 65_000, `widen-fresh-${minute}`));
      if (minute % 10 === 0) h.defender.upsertAlert(tenantId, alertAt(now - 40 * MINUTE, `widen-late-${minute}`));
      await pullAt(now, tenantId);
    }
    const off = await tenantStatus(tenantId);
    assert.equal(off.overlapMinutes, 10, "off by default");
    assert.equal(off.health, "degraded", "p99 lateness above half the overlap");
    assert.ok(h.logs.some((l) => l.includes(`pull.lateness-high tenantId=${tenantId}`)));
    const pull = svc.config.pull;
    const saved = pull.overlapAutoMaxMs;
    try {
      pull.overlapAutoMaxMs = 45 * MINUTE;
      const on = await tenantStatus(tenantId);
      assert.ok((on.overlapMinutes as number) > 10 && (on.overlapMinutes as number) <= 45, `overlap ${on.overlapMinutes}`);
      const before = h.defender.requests(tenantId).length;
      await pullAt(t0 + 70 * MINUTE, tenantId);
      const window = h.defender.requests(tenantId).slice(before).find((r) => r.query.$expand === "evidence");
      const bounds = /lastUpdateTime ge (\S+) and lastUpdateTime lt (\S+)/.exec(window?.query.$filter ?? "");
      assert.ok(bounds);
      const widthMinutes = (Date.parse(bounds[2]!) - Date.parse(bounds[1]!)) / MINUTE;
      assert.ok(widthMinutes > 15 && widthMinutes <= 45 + 7, `the incremental window spans ${widthMinutes} minutes`);
    } finally {
      pull.overlapAutoMaxMs = saved;
    }
  });

  it("answers 404 and 409 for reconciles of unknown and inactive tenants", async () => {
    const unknown = "6b1f5c3e-0000-4000-8000-00000000dddd";
    const missing = await h.http("tenants-reconcile", {
      method: "POST",
      path: `tenants/${unknown}/reconcile`,
      params: { tenantId: unknown },
      body: JSON.stringify({ lookbackHours: 1 }),
    });
    assert.equal(missing.status, 404);
    const pending = h.newTenant();
    await h.http("tenants-create", { method: "POST", path: "tenants", body: JSON.stringify({ tenantId: pending }) });
    const inactive = await h.http("tenants-reconcile", {
      method: "POST",
      path: `tenants/${pending}/reconcile`,
      params: { tenantId: pending },
      body: JSON.stringify({ lookbackHours: 1 }),
    });
    assert.equal(inactive.status, 409);
  });
});

describe("fenced pulls", () => {
  it("a re-consent during a slow pull starts no second pull; the expired loser writes nothing and regresses nothing", async () => {
    const start = clock;
    const big = makeLargeAlert(BIG, { lastUpdateTime: new Date(start - 3 * HOUR), seed: "fence-big" });
    const alerts = [big, ...Array.from({ length: 10 }, (_, i) => alertAt(start - (i + 2) * HOUR, `fence-${i}`))];
    const tenantId = await activeTenant(alerts);
    await pullAt(start, tenantId);
    const ids = alerts.map((a) => a.id);
    h.defender.touch(tenantId, ids, new Date(start + 30_000), { status: "InProgress" });

    // Pull A reads the InProgress versions, then stalls in its first write.
    const table = svc.storage.table(TABLES.alerts);
    const submit = table.submitTransaction.bind(table);
    let release: () => void = () => {};
    const stalled = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered: () => void = () => {};
    const inWrite = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let calls = 0;
    table.submitTransaction = async (actions, options) => {
      calls++;
      if (calls === 1) {
        entered();
        await stalled;
      }
      return submit(actions, options);
    };
    try {
      clock = start + 2 * MINUTE;
      const pullA = h.trigger("pull-worker", { tenantId });
      await untilOrEnd(inWrite, pullA);
      // A re-consent while A runs: it must not clear A's lease, so the next message finds it busy.
      assert.equal((await h.onboard(tenantId)).status, 200);
      const before = h.defender.requests(tenantId).length;
      await pullAt(start + 3 * MINUTE, tenantId);
      assert.equal(h.defender.requests(tenantId).length, before, "no second pull while A holds its lease");
      // A's lease expires; B takes it and stores the Resolved versions.
      h.defender.touch(tenantId, ids, new Date(start + 4 * MINUTE), { status: "Resolved" });
      forgetAccessToken(tenantId);
      await pullAt(start + 15 * MINUTE, tenantId);
      const watermarkB = (await tenantStatus(tenantId)).watermark as string;
      const callsBeforeRelease = calls;
      release();
      await pullA;
      assert.equal(calls, callsBeforeRelease, "the loser started no write batch after its lease expired");
      assert.ok(h.logs.some((l) => l.includes(`pull.lease-lost tenantId=${tenantId}`)));
      const stored = await rows(tenantId);
      for (const id of ids) assert.equal(stored.get(id)?.status, "Resolved", "no older version replaced a newer one");
      assert.equal((await tenantStatus(tenantId)).watermark, watermarkB, "the watermark did not move back");
      const got = await h.http("alerts-get", {
        path: `tenants/${tenantId}/alerts/${encodeURIComponent(big.id)}`,
        params: { tenantId, alertId: big.id },
      });
      assert.equal(got.status, 200);
      assert.equal(got.text, JSON.stringify(h.defender.getAlert(tenantId, big.id)));
    } finally {
      table.submitTransaction = submit;
      release();
    }
  });

  it("an offboarding stops a running pull at its next checkpoint", async () => {
    const now = clock + HOUR;
    const tenantId = await activeTenant(Array.from({ length: 250 }, (_, i) => alertAt(now - (i + 1) * MINUTE, `stop-${i}`)));
    let offboarded = false;
    h.defender.beforeResponse = async ({ tenantId: t, requestNumber }) => {
      if (t !== tenantId || offboarded || requestNumber < 3) return;
      offboarded = true;
      const gone = await h.http("tenants-delete", { method: "DELETE", path: `tenants/${tenantId}`, params: { tenantId } });
      assert.equal(gone.status, 204);
    };
    await pullAt(now, tenantId);
    assert.ok(offboarded);
    assert.ok(h.logs.some((l) => l.includes(`pull.lease-lost tenantId=${tenantId}`)));
    assert.ok(!h.logs.some((l) => l.includes(`pull.succeeded tenantId=${tenantId}`)));
  });

  it("a holder whose checkpoint races a successor's run stops, and merges nothing over the successor's state", async () => {
    const start = clock + HOUR;
    const alerts = Array.from({ length: 5 }, (_, i) => alertAt(start - (i + 2) * MINUTE, `race-${i}`));
    const tenantId = await activeTenant(alerts);
    await pullAt(start, tenantId);
    const ids = alerts.map((a) => a.id);
    h.defender.touch(tenantId, ids, new Date(start + 30_000), { status: "InProgress" });

    // Pull A writes the InProgress versions, then stalls in the checkpoint after them: it
    // passed its local lease check, and its ETag-conditioned write is on the way.
    const sync = svc.storage.table(TABLES.syncState);
    const update = sync.updateEntity.bind(sync);
    let release: () => void = () => {};
    const stalled = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered: () => void = () => {};
    const inCommit = new Promise<void>((resolve) => {
      entered = resolve;
    });
    let armed = true;
    sync.updateEntity = async (entity, mode, options) => {
      if (armed && entity.partitionKey === tenantId && "apiCalls" in entity) {
        armed = false;
        entered();
        await stalled;
      }
      return update(entity, mode, options);
    };
    try {
      clock = start + 2 * MINUTE;
      const pullA = h.trigger("pull-worker", { tenantId });
      await untilOrEnd(inCommit, pullA);
      // A's 12-minute lease runs out meanwhile; B takes it (a new epoch) and stores newer versions.
      h.defender.touch(tenantId, ids, new Date(start + 10 * MINUTE), { status: "Resolved" });
      forgetAccessToken(tenantId);
      await pullAt(start + 20 * MINUTE, tenantId);
      const watermarkB = (await tenantStatus(tenantId)).watermark;
      release();
      await pullA; // A's write fails on the ETag, it re-reads the row and finds another epoch
      assert.ok(h.logs.some((l) => l.includes(`pull.lease-lost tenantId=${tenantId}`)));
      assert.equal((await tenantStatus(tenantId)).watermark, watermarkB, "A merged no older watermark over B's");
      const stored = await rows(tenantId);
      for (const id of ids) assert.equal(stored.get(id)?.status, "Resolved");
    } finally {
      sync.updateEntity = update;
      release();
    }
  });
});

describe("newest-wins writes", () => {
  it("a stale page (an older version served after a newer one) does not regress a row", async () => {
    const now = clock + 2 * HOUR;
    // Enough alerts that the window splits, so the stale version and its stored newer one
    // can fall into different leaves (the point-read path) or the same one (the index path).
    const alerts = Array.from({ length: 150 }, (_, i) => alertAt(now - 8 * MINUTE + i * 3000, `stale-${i}`));
    const tenantId = await activeTenant(alerts);
    await pullAt(now, tenantId);
    const near = alerts[10]!;
    const far = alerts[20]!;
    const [nearV2] = h.defender.touch(tenantId, [near.id], new Date(now - 7 * MINUTE), { status: "Resolved" });
    const [farV2] = h.defender.touch(tenantId, [far.id], new Date(now + 30_000), { status: "Resolved" });
    await pullAt(now + 2 * MINUTE, tenantId);
    // A lagging replica serves the old versions again.
    h.defender.upsertAlert(tenantId, near);
    h.defender.upsertAlert(tenantId, far);
    await pullAt(now + 3 * MINUTE, tenantId);
    const stored = await rows(tenantId);
    assert.equal(stored.get(near.id)?.lastUpdateTimeExact, nearV2!.lastUpdateTime);
    assert.equal(stored.get(far.id)?.lastUpdateTimeExact, farV2!.lastUpdateTime);
    assert.equal(stored.get(far.id)?.status, "Resolved");
  });

  it("an equal time with a different body replaces the stored one, counted and logged once", async () => {
    const now = clock + 3 * HOUR;
    const alert = alertAt(now - 2 * MINUTE, "same-time");
    const tenantId = await activeTenant([alert, alertAt(now - 3 * MINUTE, "same-time-other")]);
    await pullAt(now, tenantId);
    h.defender.upsertAlert(tenantId, { ...alert, assignedTo: "analyst@mssp.example" });
    await pullAt(now + MINUTE, tenantId);
    await pullAt(now + 2 * MINUTE, tenantId);
    assert.equal((await rows(tenantId)).get(alert.id)?.assignedTo, "analyst@mssp.example");
    assert.equal((await tenantStatus(tenantId)).sameTimeChanges, 1);
    assert.equal(h.logs.filter((l) => l.includes(`pull.same-time-change tenantId=${tenantId} alertId=${alert.id}`)).length, 1);
  });
});

describe("failing windows", () => {
  it("narrows a window whose body is always cut off, reports the slice, and stores it once the fault clears", async () => {
    const now = clock + 4 * HOUR;
    const poison = alertAt(now - 90 * MINUTE, "poison");
    const others = Array.from({ length: 30 }, (_, i) => alertAt(now - (i + 1) * 7 * MINUTE, `cutoff-${i}`));
    const tenantId = await activeTenant([poison, ...others]);
    const poisonMs = timeMs(poison.lastUpdateTime)!;
    let faulty = true;
    // Any full read (with evidence) whose window holds the poison alert is cut off mid-body.
    h.defender.beforeResponse = ({ tenantId: t, entry, fake }) => {
      if (!faulty || t !== tenantId || entry.query.$expand !== "evidence") return;
      const bounds = /lastUpdateTime ge (\S+) and lastUpdateTime lt (\S+)/.exec(entry.query.$filter ?? "");
      if (bounds && timeMs(bounds[1]!)! <= poisonMs && poisonMs < timeMs(bounds[2]!)!) {
        fake.inject(t, { truncateAfterBytes: 200 });
      }
    };
    await pullAt(now, tenantId);
    for (let i = 1; i <= 3 && !(await tenantStatus(tenantId)).lastSuccessAt; i++) await pullAt(now + i * MINUTE, tenantId);
    const stored = await rows(tenantId);
    for (const alert of others) assert.ok(stored.has(alert.id), "the tenant's other windows are stored");
    assert.ok(!stored.has(poison.id));
    let s = await tenantStatus(tenantId);
    const slices = s.skippedSlices as { from: string; to: string; attempts: number; lastCode: string }[];
    assert.equal(slices.length, 1);
    assert.equal(Date.parse(slices[0]!.to) - Date.parse(slices[0]!.from), 1, "narrowed to 1 ms");
    assert.equal(s.health, "degraded");
    assert.ok(h.logs.some((l) => l.includes(`pull.slice-skipped tenantId=${tenantId} from=${slices[0]!.from}`)));
    // Ten days of failing: the slice stays listed, retried by every sweep run, never dropped.
    for (let hour = 1; hour <= 240; hour += 12) await pullAt(now + hour * HOUR, tenantId);
    s = await tenantStatus(tenantId);
    const kept = s.skippedSlices as { attempts: number }[];
    assert.equal(kept.length, 1, "still listed after ten days");
    assert.ok(kept[0]!.attempts > 10, `retried ${kept[0]!.attempts} times`);
    faulty = false;
    await pullAt(now + 241 * HOUR, tenantId);
    s = await tenantStatus(tenantId);
    assert.equal(s.skippedSlices, undefined);
    assert.equal(s.health, "ok");
    assert.ok((await rows(tenantId)).has(poison.id), "stored once the fault cleared");
  });
});

describe("overflow parts", () => {
  const tables = (): AlertTables => ({ alerts: svc.storage.table(TABLES.alerts), bodies: svc.storage.table(TABLES.alertBodies) });

  async function partKeys(tenantId: string): Promise<Set<string>> {
    const keys = new Set<string>();
    for await (const row of tables().bodies.listEntities({ queryOptions: { filter: odata`PartitionKey eq ${tenantId}` } })) {
      keys.add(String(row.rowKey).split("|")[1] ?? "");
    }
    return keys;
  }

  it("a big alert that shrinks leaves no orphan once the grace period has passed", async () => {
    const now = clock + 300 * HOUR;
    const big = makeLargeAlert(BIG, { lastUpdateTime: new Date(now - 10 * MINUTE), seed: "shrink" });
    const tenantId = await activeTenant([big]);
    await pullAt(now, tenantId);
    assert.equal((await partKeys(tenantId)).size, 1);
    h.defender.upsertAlert(tenantId, { ...alertAt(now - 5 * MINUTE, "shrunk"), id: big.id });
    await pullAt(now + MINUTE, tenantId);
    assert.equal((await partKeys(tenantId)).size, 1, "kept for readers during the grace period");
    // An orphan that no garbage row names (a crash between parts and row) goes with the next sweep.
    await tables().bodies.upsertEntity({ partitionKey: tenantId, rowKey: `${big.id}|deadbeefdeadbeef|0000`, body0: new Uint8Array(8) });
    await pullAt(now + 2 * HOUR, tenantId);
    assert.equal((await partKeys(tenantId)).size, 0, "no orphan after the grace period and the next sweep");
  });

  it("a reader racing the rewrite of a big alert always gets a complete version", async () => {
    const now = clock + 310 * HOUR;
    const v1 = makeLargeAlert(BIG, { lastUpdateTime: new Date(now - 10 * MINUTE), seed: "race" });
    const tenantId = await activeTenant([v1]);
    await pullAt(now, tenantId);
    const v2 = { ...makeLargeAlert(BIG, { lastUpdateTime: new Date(now - 5 * MINUTE), seed: "race-v2" }), id: v1.id };
    h.defender.upsertAlert(tenantId, v2);
    // The reader gets the old row, then the pull rewrites the alert before the reader reads its parts.
    const racing = (afterRow: () => Promise<void>): AlertTables => {
      const t = tables();
      const alerts = Object.create(t.alerts) as typeof t.alerts;
      let first = true;
      alerts.getEntity = async (...args: Parameters<typeof t.alerts.getEntity>) => {
        const row = await t.alerts.getEntity(...args);
        if (first) {
          first = false;
          await afterRow();
        }
        return row as never;
      };
      return { alerts, bodies: t.bodies };
    };
    const during = await readAlertJson(racing(() => pullAt(now + MINUTE, tenantId)), tenantId, v1.id);
    assert.equal(during?.toString("utf8"), JSON.stringify(v1), "the old version, complete");
    // A reader slower than the grace period finds the old parts gone and re-reads the row once.
    const v3 = { ...makeLargeAlert(BIG, { lastUpdateTime: new Date(now - 2 * MINUTE), seed: "race-v3" }), id: v1.id };
    h.defender.upsertAlert(tenantId, v3);
    const oldKeys = await partKeys(tenantId);
    const slow = await readAlertJson(
      racing(async () => {
        await pullAt(now + 2 * MINUTE, tenantId);
        await pullAt(now + 30 * MINUTE, tenantId); // past the grace period: v2's parts are collected
        const left = await partKeys(tenantId);
        assert.equal(left.size, 1, "only the newest version's parts are left");
        for (const key of oldKeys) assert.ok(!left.has(key), "the parts the reader was about to read are gone");
      }),
      tenantId,
      v1.id,
    );
    assert.equal(slow?.toString("utf8"), JSON.stringify(v3), "the new version, complete");
  });
});

describe("sweep budget over a simulated day", () => {
  it("incremental plus sweep stay within 90/min and 1,400/h; the sweep within its 10 % outside a reconcile", async () => {
    const day = clock + 400 * HOUR;
    const perDay = 1000;
    const step = 10 * MINUTE;
    const seedAlerts = Array.from({ length: 300 }, (_, i) => alertAt(day - (i + 1) * 5 * MINUTE, `busy-seed-${i}`));
    const tenantId = await activeTenant(seedAlerts);
    h.defender.clearRequests();
    const sweepCallsByRun: { at: number; calls: number }[] = [];
    let n = 0;
    for (let at = day; at < day + 24 * HOUR; at += step) {
      // About 1,000 alerts a day, a few of them published an hour late.
      const fresh = Math.round((perDay * step) / (24 * HOUR));
      for (let i = 0; i < fresh; i++) {
        const late = n % 50 === 0 ? HOUR : 0;
        h.defender.upsertAlert(tenantId, alertAt(at - 90_000 - i * 1000 - late, `busy-${n++}`));
      }
      const from = h.logs.length;
      await pullAt(at, tenantId);
      const line = h.logs.slice(from).find((l) => l.includes(`pull.succeeded tenantId=${tenantId}`));
      assert.ok(line, `the run at +${(at - day) / MINUTE} min succeeded`);
      sweepCallsByRun.push({ at, calls: Number(/sweepCalls=(\d+)/.exec(line)![1]) });
    }
    // The alerts published an hour late near the end are swept by the next hourly passes.
    for (let at = day + 24 * HOUR; at <= day + 26 * HOUR; at += step) await pullAt(at, tenantId);
    assert.ok(h.defender.maxRequestsInWindow(tenantId, MINUTE) <= 90);
    assert.ok(h.defender.maxRequestsInWindow(tenantId, HOUR) <= 1400);
    let worstHour = 0;
    for (const { at } of sweepCallsByRun) {
      const inHour = sweepCallsByRun.filter((r) => r.at >= at && r.at < at + HOUR).reduce((s, r) => s + r.calls, 0);
      worstHour = Math.max(worstHour, inHour);
    }
    const perRunMax = Math.max(...sweepCallsByRun.map((r) => r.calls));
    const total = sweepCallsByRun.reduce((s, r) => s + r.calls, 0);
    assert.ok(perRunMax <= 9, `sweep calls in one minute: ${perRunMax}`);
    assert.ok(worstHour <= 140, `sweep calls in one hour: ${worstHour}`);
    assert.ok(total > 0, "the sweep ran");
    await assertInSync(tenantId);
    console.log(
      `sweep over a simulated day at ${perDay} alerts/day: ${total} sweep calls, worst hour ${worstHour}, worst run ${perRunMax}; all calls ${h.defender.requests(tenantId).length}`,
    );
  });
});

describe("the readers' resume point", () => {
  it("a reader resuming from nextSince, while pulls and sweeps write, ends with every alert at its latest version", async () => {
    clock = Date.now();
    const tenantId = await activeTenant(Array.from({ length: 60 }, (_, i) => alertAt(clock - (i + 1) * MINUTE, `reader-${i}`)));
    const seen = new Map<string, string>();
    const scan = async (since: string | undefined, between?: () => Promise<void>): Promise<string> => {
      let token: string | undefined;
      for (let page = 0; ; page++) {
        const query = new URLSearchParams({ tenantId, top: "25" });
        if (since) query.set("since", since);
        if (token) query.set("continuationToken", token);
        const got = await h.http("alerts-list", { path: `alerts?${query}` });
        assert.equal(got.status, 200, got.text);
        const body = got.json as { alerts: { id: string; lastUpdateTime: string }[]; continuationToken?: string; nextSince?: string };
        for (const a of body.alerts) {
          const known = seen.get(a.id);
          if (!known || known < a.lastUpdateTime) seen.set(a.id, a.lastUpdateTime);
        }
        if (page === 0 && between) await between(); // writes land in the middle of a scan
        if (!body.continuationToken) {
          assert.ok(body.nextSince, "the last page carries nextSince");
          return body.nextSince;
        }
        assert.equal(body.nextSince, undefined, "only the last page carries nextSince");
        token = body.continuationToken;
      }
    };
    let since: string | undefined;
    for (let round = 0; round < 4; round++) {
      since = await scan(since, async () => {
        clock = Date.now();
        const ids = h.defender
          .getAlerts(tenantId)
          .slice(round * 5, round * 5 + 5)
          .map((a) => a.id);
        h.defender.touch(tenantId, ids, new Date(clock - 2000), { status: "Resolved" });
        h.defender.upsertAlert(tenantId, alertAt(clock - 30 * HOUR, `reader-late-${round}`)); // for the reconcile
        await h.http("tenants-reconcile", {
          method: "POST",
          path: `tenants/${tenantId}/reconcile`,
          params: { tenantId },
          body: JSON.stringify({ lookbackHours: 48 }),
        });
        await pullAt(clock, tenantId);
      });
    }
    await scan(since);
    const stored = await rows(tenantId);
    assert.equal(seen.size, stored.size);
    for (const [id, row] of stored) assert.equal(seen.get(id), row.lastUpdateTimeExact, id);
  });
});
