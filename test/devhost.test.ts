import assert from "node:assert/strict";
import { globSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { after, before, beforeEach, describe, it } from "node:test";
import { type QueueClient, QueueServiceClient } from "@azure/storage-queue";
import { type Host, type InvocationEvent, type LogEntry, type QueueEvent, type Scheduler, startHost } from "../dev/host/host.js";
import { formatLogLine } from "../dev/host/log.js";
import { parseSchedule, timerInfo } from "../dev/host/timers.js";
import { type Azurite, startAzurite } from "./support/azurite.js";
import { type FixtureApp, writeFixtureApp } from "./support/fixture-app.js";

/**
 * The dev host against a small app written for this test (this process loads no other
 * app): how it loads an app, routes and authorizes HTTP requests, and the shapes in which
 * handlers receive their arguments, which are the shapes the Functions host and the
 * Node.js worker produce; and its timer and queue listener semantics, on real Azurite.
 */

const FIXTURE = {
  "package.json": JSON.stringify({ name: "devhost-fixture", private: true, type: "module", main: "fns/*" }),
  "host.json": JSON.stringify({
    version: "2.0",
    extensions: {
      http: { routePrefix: "api" },
      queues: { batchSize: 2, newBatchThreshold: 1, maxDequeueCount: 2, visibilityTimeout: "00:00:00" },
    },
  }),
  "fns/a-http.js": `
import { app } from "@azure/functions";
const g = globalThis;
g.devhostSeen ??= [];
app.http("echo", {
  route: "echo/{id}/{rest?}",
  methods: ["GET", "POST"],
  authLevel: "function",
  handler: async (request, context) => {
    const value = {
      method: request.method,
      url: request.url,
      headers: Object.fromEntries(request.headers),
      query: [...request.query.entries()],
      params: { ...request.params },
      body: await request.text(),
    };
    context.log("echo called with", request.params.id);
    g.devhostSeen.push({ kind: "http", value });
    return { status: 200, jsonBody: value, headers: { "X-Echo": "yes" } };
  },
});
app.http("nobody", { route: "nobody", methods: ["GET"], authLevel: "anonymous", handler: async () => ({ status: 204, body: "this body is dropped" }) });
app.http("boom", { route: "boom", methods: ["GET"], authLevel: "anonymous", handler: async () => { throw new Error("kaboom: the handler failed"); } });
app.http("literal", { route: "items/special", methods: ["GET"], authLevel: "anonymous", handler: async () => ({ body: "literal" }) });
app.http("number", { route: "items/{id:int}", methods: ["GET"], authLevel: "anonymous", handler: async (r) => ({ body: "number " + r.params.id }) });
app.http("named", { route: "items/{name}", methods: ["GET"], authLevel: "anonymous", handler: async (r) => ({ body: "named " + r.params.name }) });
`,
  "fns/b-triggers.js": `
import { app } from "@azure/functions";
const g = globalThis;
g.devhostSeen ??= [];
app.timer("tick", { schedule: "%TICK_SCHEDULE%", handler: async (timer) => { g.devhostSeen.push({ kind: "timer", value: timer }); } });
app.storageQueue("work", {
  queueName: "%WORK_QUEUE%",
  connection: "STORE",
  handler: async (message, context) => {
    g.devhostSeen.push({ kind: "queue", value: { message, triggerMetadata: context.triggerMetadata } });
    if (g.devhostOnQueue) await g.devhostOnQueue(message, context);
  },
});
app.storageBlob("blobby", { path: "c/{name}", connection: "STORE", handler: async () => {} });
app.hook.preInvocation((context) => { (g.devhostHooks ??= []).push(context.invocationContext.functionName); });
app.hook.appStart((context) => { g.devhostAppStart = typeof context.hookData; });
`,
  "fns/c-legacy.cjs": `
const { app } = require("@azure/functions");
app.http("cjs", { route: "cjs", methods: ["GET"], authLevel: "anonymous", handler: async () => ({ body: "from CommonJS" }) });
`,
};

interface Seen {
  kind: "http" | "timer" | "queue";
  value: Record<string, unknown>;
}
const g = globalThis as unknown as {
  devhostSeen: Seen[];
  devhostOnQueue?: (message: unknown, context: unknown) => Promise<void>;
  devhostHooks?: string[];
  devhostAppStart?: string;
};

let fixture: FixtureApp;
let azurite: Azurite;
let host: Host;
let settings: Record<string, string>;
let queue: QueueClient;
let poison: QueueClient;
const lines: string[] = [];
const invocations: InvocationEvent[] = [];
const queueEvents: QueueEvent[] = [];

/** Lease renewals fire when the test says so. */
const renewals = new Map<number, () => void>();
let nextHandle = 0;
const scheduler: Scheduler = {
  setTimeout(callback) {
    nextHandle++;
    renewals.set(nextHandle, callback);
    return nextHandle;
  },
  clearTimeout(handle) {
    renewals.delete(handle as number);
  },
};

before(async () => {
  fixture = writeFixtureApp("devhost", FIXTURE);
  azurite = await startAzurite();
  settings = { STORE: azurite.connectionString, WORK_QUEUE: "work-items", TICK_SCHEDULE: "*/10 * * * * *" };
  const service = QueueServiceClient.fromConnectionString(azurite.connectionString);
  queue = service.getQueueClient("work-items");
  poison = service.getQueueClient("work-items-poison");
  await queue.create();
  host = await startHost({
    root: fixture.root,
    settings,
    port: 0,
    timers: "manual",
    queues: "manual",
    scheduler,
    log: (entry: LogEntry) => lines.push(formatLogLine(entry)),
  });
  host.events.on("invocation", (e) => invocations.push(e));
  host.events.on("queue", (e) => queueEvents.push(e));
});

after(async () => {
  await host?.stop();
  await azurite?.stop();
  fixture?.remove();
});

beforeEach(async () => {
  g.devhostSeen.length = 0;
  g.devhostOnQueue = undefined;
  queueEvents.length = 0;
  await queue.clearMessages();
  if (await poison.exists()) await poison.clearMessages();
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** A raw HTTP request (repeated headers stay repeated). */
function send(method: string, path: string, headers: Record<string, string | string[]> = {}, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${host.url}${path}`, { method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.once("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
      res.once("error", reject);
    });
    for (const [name, value] of Object.entries(headers)) req.setHeader(name, value);
    req.once("error", reject);
    req.end(body);
  });
}

function seen(kind: Seen["kind"]): Record<string, unknown>[] {
  return g.devhostSeen.filter((s) => s.kind === kind).map((s) => s.value);
}

async function enqueue(...texts: string[]): Promise<void> {
  for (const text of texts) await queue.sendMessage(Buffer.from(text, "utf8").toString("base64"));
}

function until(check: () => boolean, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      if (check()) return resolve();
      if (Date.now() - started > 20_000) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(poll, 5);
    };
    poll();
  });
}

describe("dev host: loading", () => {
  it("loads the package.json main glob in glob order, ESM and CommonJS, registering through @azure/functions", async () => {
    assert.deepEqual(host.app.entryPoints, globSync("fns/*", { cwd: fixture.root }));
    assert.deepEqual(
      host.app.functions.map((f) => f.name),
      ["echo", "nobody", "boom", "literal", "number", "named", "tick", "work", "blobby", "cjs"],
    );
    assert.equal(host.app.programmingModel?.name, "@azure/functions");
    assert.equal(g.devhostAppStart, "object", "appStart hooks ran, with their hook data");
    const cjs = await send("GET", "/api/cjs");
    assert.equal(cjs.text, "from CommonJS");
    assert.ok(g.devhostHooks?.includes("cjs"), "preInvocation hooks run");
  });

  it("lists a function it cannot run as in error, and serves the rest", () => {
    assert.match(host.errors.get("blobby") ?? "", /cannot run its blobTrigger trigger/);
    assert.ok(lines.some((l) => l.includes("The 'blobby' function is in error")));
    assert.equal(host.errors.size, 1);
  });
});

describe("dev host: HTTP", () => {
  it("hands the handler lower-cased headers, the host's query map (repeated keys joined by a comma), route parameters and the body", async () => {
    const reply = await send(
      "POST",
      "/api/echo/42/more?a=1&A=2&b=x+y&c&d=%2F",
      { "X-Mixed-Case": "v", "X-Custom": ["a", "b"], "x-functions-key": host.key, "content-type": "text/plain" },
      "hello body",
    );
    assert.equal(reply.status, 200, reply.text);
    assert.equal(reply.headers["x-echo"], "yes");
    assert.match(String(reply.headers["content-type"]), /application\/json/);
    const [value] = seen("http");
    assert.ok(value);
    const headers = value.headers as Record<string, string>;
    for (const name of Object.keys(headers)) assert.equal(name, name.toLowerCase());
    assert.equal(headers["x-mixed-case"], "v");
    assert.equal(headers["x-custom"], "a,b");
    assert.deepEqual(value.query, [
      ["a", "1,2"],
      ["b", "x y"],
      ["c", ""],
      ["d", "/"],
    ]);
    assert.deepEqual(value.params, { id: "42", rest: "more" });
    assert.equal(value.body, "hello body");
    assert.equal(value.method, "POST");
    assert.equal(value.url, `http://${new URL(host.url).host}/api/echo/42/more?a=1&A=2&b=x+y&c&d=%2F`);
    assert.ok(lines.some((l) => l.includes("echo: echo called with 42")), "context.log reaches the console, one line per call");
  });

  it("requires the function key on function-level routes, as x-functions-key or ?code=, and not on anonymous ones", async () => {
    assert.equal((await send("GET", "/api/echo/1")).status, 401);
    assert.equal((await send("GET", "/api/echo/1", { "x-functions-key": `${host.key}x` })).status, 401);
    assert.equal((await send("GET", "/api/echo/1?code=wrong-key-of-some-length")).status, 401);
    assert.equal((await send("GET", "/api/echo/1", { "x-functions-key": host.key })).status, 200);
    assert.equal((await send("GET", `/api/echo/1?code=${encodeURIComponent(host.key)}`)).status, 200);
    assert.equal((await send("GET", "/api/cjs")).status, 200);
    assert.equal(seen("http").length, 2, "rejected requests never reach the handler");
  });

  it("drops the body of a 204", async () => {
    const reply = await send("GET", "/api/nobody");
    assert.equal(reply.status, 204);
    assert.equal(reply.text, "");
  });

  it("routes with routePrefix, literal segments before constrained and plain parameters; other methods and paths are 404", async () => {
    assert.equal((await send("GET", "/api/items/special")).text, "literal");
    assert.equal((await send("GET", "/API/Items/SPECIAL")).text, "literal");
    assert.equal((await send("GET", "/api/items/17")).text, "number 17");
    assert.equal((await send("GET", "/api/items/seventeen")).text, "named seventeen");
    assert.equal((await send("GET", "/items/special")).status, 404);
    assert.equal((await send("DELETE", "/api/items/special")).status, 404);
    assert.equal((await send("GET", "/api/echo")).status, 404);
  });

  it("answers 500 for a failed invocation and logs the failure as the host does", async () => {
    const before = invocations.length;
    const reply = await send("GET", "/api/boom");
    assert.equal(reply.status, 500);
    assert.equal(reply.text, "");
    const event = invocations.slice(before).find((e) => e.functionName === "boom");
    assert.equal(event?.status, "failed");
    assert.equal(event?.failure?.message, "kaboom: the handler failed");
    const line = lines.find((l) => l.includes("Executed 'Functions.boom' (Failed"));
    assert.ok(line, "the host logs the failure");
    assert.match(line, /Exception: kaboom: the handler failed Stack: Error: kaboom/);
  });
});

describe("dev host: timers", () => {
  it("hands the handler the host's TimerInfo, camel-cased, and moves the schedule status on", async () => {
    const next = host.nextRun("tick");
    assert.ok(next && next.getSeconds() % 10 === 0 && next.getMilliseconds() === 0, `next run ${next?.toISOString()}`);
    await host.runTimer("tick");
    await host.runTimer("tick");
    const [first, second] = seen("timer");
    assert.deepEqual(Object.keys(first ?? {}).sort(), ["isPastDue", "schedule", "scheduleStatus"]);
    assert.deepEqual(first?.schedule, { adjustForDST: true });
    assert.equal(first?.isPastDue, false);
    const status = first?.scheduleStatus as Record<string, string>;
    assert.deepEqual(Object.keys(status).sort(), ["last", "lastUpdated", "next"]);
    assert.equal(status.last, "0001-01-01T00:00:00");
    assert.match(status.next!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d0(\.\d+)?[+-]\d\d:\d\d$/);
    const later = second?.scheduleStatus as Record<string, string>;
    assert.notEqual(later.last, "0001-01-01T00:00:00");
    assert.ok(Date.parse(later.last!) <= Date.now());
  });

  it("reads six-field NCRONTAB (seconds first, day-of-month AND day-of-week), TimeSpans and %SETTING%, and names what is wrong", () => {
    const from = new Date(2024, 0, 1, 0, 0, 0);
    assert.equal(parseSchedule("0 */5 * * * *", {}, "t").next(from).getTime(), new Date(2024, 0, 1, 0, 5, 0).getTime());
    assert.equal(parseSchedule("30 * * * * *", {}, "t").next(from).getTime(), new Date(2024, 0, 1, 0, 0, 30).getTime());
    const friday13 = parseSchedule("0 0 9 13 * Fri", {}, "t").next(from);
    assert.equal(friday13.getDate(), 13);
    assert.equal(friday13.getDay(), 5);
    assert.equal(friday13.getMonth(), 8, "September 13, 2024 is the first Friday the 13th of 2024");
    assert.equal(parseSchedule("%S%", { S: "0 0 * * * *" }, "t").expression, "0 0 * * * *");
    assert.equal(parseSchedule("00:00:30", {}, "t").next(from).getTime(), from.getTime() + 30_000);
    assert.throws(() => parseSchedule("*/5 * * * *", {}, "t"), /'\*\/5 \* \* \* \*' of timer function 't' was not recognized/);
    assert.throws(() => parseSchedule("0 0 12 L * *", {}, "t"), /not recognized/);
    assert.throws(() => parseSchedule("%MISSING%", {}, "t"), /app setting %MISSING%, which is not set/);
    assert.deepEqual(timerInfo(null, true), { Schedule: { AdjustForDST: true }, ScheduleStatus: null, IsPastDue: true });
  });
});

describe("dev host: storage queues", () => {
  it("hands the handler the message JSON-parsed when it can (object, number, null, string) and dequeueCount only in triggerMetadata", async () => {
    await enqueue('{"tenantId":"t1","n":2}', "42", "null", "not json", '"quoted"');
    await host.drainQueues("work");
    const values = seen("queue");
    const messages = values.map((v) => v.message);
    assert.deepEqual(
      [...messages].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
      [42, "not json", "quoted", null, { tenantId: "t1", n: 2 }].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
    );
    const object = values.find((v) => typeof v.message === "object" && v.message !== null)!;
    assert.equal((object.message as Record<string, unknown>).dequeueCount, undefined);
    const meta = object.triggerMetadata as Record<string, unknown>;
    assert.equal(meta.dequeueCount, 1);
    assert.deepEqual(meta.queueTrigger, { tenantId: "t1", n: 2 });
    assert.equal(typeof meta.id, "string");
    assert.equal(typeof meta.popReceipt, "string");
    assert.match(String(meta.insertionTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$/);
    assert.match(String(meta.nextVisibleTime), /\+00:00$/);
    assert.equal((meta.sys as Record<string, unknown>).methodName, "work");
    assert.equal((await queue.getProperties()).approximateMessagesCount, 0, "every message was deleted after success");
  });

  it("invokes through host.invoke() with the same shapes (a string is the message text, anything else JSON)", async () => {
    await host.invoke("work", { tenantId: "direct" });
    await host.invoke("work", "plain text");
    const [a, b] = seen("queue");
    assert.deepEqual(a?.message, { tenantId: "direct" });
    assert.equal(b?.message, "plain text");
    assert.equal((a?.triggerMetadata as Record<string, unknown> | undefined)?.dequeueCount, 1);
  });

  it("keeps at most batchSize + newBatchThreshold messages in flight", async () => {
    const total = 7;
    await enqueue(...Array.from({ length: total }, (_, i) => JSON.stringify({ i })));
    const held: (() => void)[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    g.devhostOnQueue = async () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise<void>((resolve) => held.push(resolve));
      inFlight--;
    };
    let received = 0;
    const onEvent = (e: QueueEvent) => {
      if (e.type === "received") received++;
      // Release one message each time the listener waits for the batch threshold, and
      // the rest once everything was received.
      setImmediate(() => {
        if (received === total) for (const release of held.splice(0)) release();
        else if (e.type === "waiting") held.shift()?.();
      });
    };
    host.events.on("queue", onEvent);
    try {
      await host.drainQueues("work");
    } finally {
      host.events.off("queue", onEvent);
    }
    assert.equal(seen("queue").length, total);
    assert.equal(maxInFlight, 3, "batchSize 2 + newBatchThreshold 1");
    assert.ok(queueEvents.filter((e) => e.type === "waiting").every((e) => e.type === "waiting" && e.inFlight <= 3));
    assert.equal((await queue.getProperties()).approximateMessagesCount, 0);
  });

  it("keeps a running message invisible and renews its lease, then deletes it with the renewed pop receipt", async () => {
    await enqueue('{"slow":true}');
    let release: (() => void) | undefined;
    let started = false;
    g.devhostOnQueue = async () => {
      started = true;
      await new Promise<void>((resolve) => {
        release = resolve;
      });
    };
    const drained = host.drainQueues("work");
    try {
      await until(() => started, "the invocation to start");
      assert.equal((await queue.peekMessages()).peekedMessageItems.length, 0, "invisible while it runs");
      assert.equal((await queue.getProperties()).approximateMessagesCount, 1);
      assert.equal(renewals.size, 1, "a lease renewal is scheduled");
      const leased = Date.now();
      for (const [handle, renew] of [...renewals]) {
        renewals.delete(handle);
        renew();
      }
      await until(() => queueEvents.some((e) => e.type === "renewed"), "the renewal");
      const renewed = queueEvents.find((e) => e.type === "renewed");
      assert.ok(renewed?.type === "renewed" && renewed.nextVisibleOn.getTime() >= leased + 590_000, "leased for another 10 minutes");
      await until(() => renewals.size === 1, "the next renewal to be scheduled");
    } finally {
      release?.();
      await drained;
    }
    assert.equal(renewals.size, 0, "renewal stops with the invocation");
    assert.equal((await queue.getProperties()).approximateMessagesCount, 0, "deleted with the renewed pop receipt");
  });

  it("makes a failed message visible again after visibilityTimeout, and moves it to <queue>-poison at maxDequeueCount", async () => {
    await enqueue('{"fail":true}');
    g.devhostOnQueue = async () => {
      throw new Error("handler failed");
    };
    await host.drainQueues("work");
    const counts = seen("queue").map((v) => (v.triggerMetadata as { dequeueCount: number }).dequeueCount);
    assert.deepEqual(counts, [1, 2], "visibilityTimeout 00:00:00: retried at once, until maxDequeueCount 2");
    assert.deepEqual(
      queueEvents.filter((e) => e.type === "released" || e.type === "poisoned").map((e) => e.type),
      ["released", "poisoned"],
    );
    assert.equal((await queue.getProperties()).approximateMessagesCount, 0);
    const moved = (await poison.receiveMessages()).receivedMessageItems;
    assert.equal(moved.length, 1);
    assert.equal(Buffer.from(moved[0]!.messageText, "base64").toString("utf8"), '{"fail":true}', "the poison queue gets the message as it was");
  });

  it("holds a failed message back for host.json visibilityTimeout (here overridden by AzureFunctionsJobHost__ settings)", async () => {
    const slow = await startHost({
      root: fixture.root,
      settings: { ...settings, AzureFunctionsJobHost__extensions__queues__visibilityTimeout: "00:00:30" },
      port: 0,
      timers: "manual",
      queues: "manual",
      log: () => {},
    });
    const events: QueueEvent[] = [];
    slow.events.on("queue", (e) => events.push(e));
    try {
      assert.equal(slow.config.queues.visibilityTimeoutMs, 30_000);
      await enqueue('{"fail":"later"}');
      g.devhostOnQueue = async () => {
        throw new Error("handler failed");
      };
      const failedAt = Date.now();
      await slow.drainQueues("work");
      assert.equal(seen("queue").length, 1, "not retried within the visibility timeout");
      const released = events.find((e) => e.type === "released");
      assert.ok(released?.type === "released" && released.nextVisibleOn);
      const delay = released.nextVisibleOn.getTime() - failedAt;
      assert.ok(delay > 25_000 && delay < 35_000, `visible again after about 30 s, not ${delay} ms`);
      assert.equal((await queue.peekMessages()).peekedMessageItems.length, 0);
      assert.equal((await queue.getProperties()).approximateMessagesCount, 1, "still in the queue");
    } finally {
      await slow.stop();
    }
  });

  it("moves a message whose dequeueCount already exceeds maxDequeueCount to the poison queue without running it", async () => {
    await enqueue('{"seen":"too often"}');
    for (let i = 0; i < 3; i++) {
      const [item] = (await queue.receiveMessages({ visibilityTimeout: 30 })).receivedMessageItems;
      assert.ok(item);
      await queue.updateMessage(item.messageId, item.popReceipt, undefined, 0);
    }
    await host.drainQueues("work");
    assert.equal(seen("queue").length, 0);
    const poisoned = queueEvents.find((e) => e.type === "poisoned");
    assert.ok(poisoned?.type === "poisoned" && poisoned.reason === "maxDequeueCount" && poisoned.poisonQueue === "work-items-poison");
    assert.equal((await poison.peekMessages()).peekedMessageItems.length, 1);
  });

  it("moves a message that is not base64 to the poison queue", async () => {
    await queue.sendMessage("this is not base64!");
    await host.drainQueues("work");
    assert.equal(seen("queue").length, 0);
    assert.ok(queueEvents.some((e) => e.type === "poisoned" && e.reason === "decoding"));
  });

  it("polls on its own when started, and stops polling on stop()", async () => {
    const auto = await startHost({ root: fixture.root, settings, port: 0, timers: "manual", log: () => {} });
    try {
      await enqueue('{"auto":1}');
      await until(() => seen("queue").length === 1, "the listener to pick the message up");
    } finally {
      await auto.stop();
    }
    await enqueue('{"auto":2}');
    assert.equal(seen("queue").length, 1);
    assert.equal((await queue.peekMessages()).peekedMessageItems.length, 1, "nobody polls after stop()");
  });
});
