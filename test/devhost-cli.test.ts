import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { request as httpRequest } from "node:http";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, describe, it } from "node:test";
import { NO_FUNC_LINE } from "../dev/func-path.js";
import { readLocalSettings, splitArgs, workerEnv } from "../dev/host/local-settings.js";
import { repoRoot } from "../simulators/https.js";
import { type FixtureApp, writeFixtureApp } from "./support/fixture-app.js";

/**
 * The dev host as a command (`node dist/dev/host/cli.js`), in its own processes as
 * `func start` runs: local.settings.json as Core Tools reads it, the worker arguments,
 * and HTTP streaming for an app that calls `app.setup({ enableHttpStream: true })`.
 */

const DIST = join(repoRoot(import.meta.url), "dist", "dev");
const CLI = join(DIST, "host", "cli.js");
const KEY = "fixture-key-0123456789abcdef";

const STREAMING_APP = {
  "package.json": JSON.stringify({ name: "devhost-stream-fixture", private: true, type: "module", main: "index.js" }),
  "host.json": JSON.stringify({ version: "2.0" }),
  "preload.cjs": "globalThis.devhostPreloaded = true;\n",
  "index.js": `
import { Readable } from "node:stream";
import { app } from "@azure/functions";
app.setup({ enableHttpStream: true });
app.http("upload", {
  route: "upload/{name}",
  methods: ["POST"],
  authLevel: "function",
  handler: async (request) => {
    let bytes = 0;
    for await (const chunk of request.body) bytes += chunk.length;
    return {
      status: 201,
      jsonBody: {
        name: request.params.name,
        bytes,
        header: request.headers.get("x-mixed-case"),
        query: request.query.get("q"),
        preloaded: globalThis.devhostPreloaded === true,
        greeting: process.env.GREETING ?? null,
        shadowed: process.env.SHADOWED ?? null,
      },
    };
  },
});
app.http("chunks", { route: "chunks", methods: ["GET"], authLevel: "anonymous", handler: async () => ({ body: Readable.from(["one,", "two,", "three"]) }) });
app.http("empty", { route: "empty", methods: ["GET"], authLevel: "anonymous", handler: async () => ({ status: 204, body: "dropped" }) });
`,
};

interface Running {
  child: ChildProcess;
  output: string[];
  url: string;
}

function startCli(args: string[], env: NodeJS.ProcessEnv = process.env, entry = CLI): Promise<Running> {
  const child = spawn(process.execPath, [entry, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  const output: string[] = [];
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output.push(...chunk.toString("utf8").split("\n"));
      const ready = output.join("\n").match(/Dev host ready at (http:\/\/localhost:\d+)/);
      if (ready) resolve({ child, output, url: ready[1]!.replace("localhost", "127.0.0.1") });
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code) => reject(Object.assign(new Error(`exited with ${code}: ${output.join("\n")}`), { code, output })));
  });
}

function runToExit(args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (c: Buffer) => (output += c.toString("utf8")));
  child.stderr.on("data", (c: Buffer) => (output += c.toString("utf8")));
  return new Promise((resolve) => child.once("exit", (code) => resolve({ code, output })));
}

function send(url: string, method: string, headers: Record<string, string> = {}, body?: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.once("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
    });
    req.once("error", reject);
    req.end(body);
  });
}

let fixture: FixtureApp;
let running: Running | undefined;

before(async () => {
  fixture = writeFixtureApp("devhost-cli", STREAMING_APP);
  const settings = {
    IsEncrypted: false,
    Values: {
      GREETING: "from local settings",
      SHADOWED: "from local settings",
      DEV_FUNCTION_KEY: KEY,
      languageWorkers__node__arguments: `--require "${join(fixture.root, "preload.cjs")}"`,
    },
  };
  writeFileSync(join(fixture.root, "local.settings.json"), JSON.stringify(settings));
  running = await startCli(["--root", fixture.root, "--port", "0"], { ...process.env, SHADOWED: "from the environment" });
});

after(async () => {
  if (running && running.child.exitCode === null) {
    const exited = new Promise((resolve) => running!.child.once("exit", resolve));
    running.child.kill("SIGTERM");
    await exited;
  }
  fixture?.remove();
});

describe("dev host command", () => {
  it("reads local.settings.json as Core Tools does: settings become environment variables unless already set, worker arguments apply", async () => {
    assert.ok(
      running!.output.some((l) => l.includes("Skipping 'SHADOWED' from local settings as it's already defined in current environment variables.")),
    );
    assert.ok(running!.output.some((l) => l.includes(`Function key (send it as the x-functions-key header or ?code=): ${KEY}`)));
    const reply = await send(`${running!.url}/api/upload/one`, "POST", { "x-functions-key": KEY }, Buffer.from("x"));
    assert.equal(reply.status, 201, reply.text);
    const body = JSON.parse(reply.text) as Record<string, unknown>;
    assert.equal(body.greeting, "from local settings");
    assert.equal(body.shadowed, "from the environment");
    assert.equal(body.preloaded, true, "languageWorkers__node__arguments reached the worker process");
  });

  it("serves HTTP in the worker's streaming mode once the app calls app.setup({ enableHttpStream: true })", async () => {
    assert.ok(running!.output.some((l) => l.includes("HTTP streaming is on")));
    const upload = Buffer.alloc(3 * 1024 * 1024, 7);
    const reply = await send(`${running!.url}/api/upload/big?q=1&Q=2`, "POST", { "x-functions-key": KEY, "X-Mixed-Case": "yes" }, upload);
    assert.equal(reply.status, 201, reply.text);
    const body = JSON.parse(reply.text) as Record<string, unknown>;
    assert.equal(body.name, "big");
    assert.equal(body.bytes, upload.length, "the request body streamed through the proxy whole");
    assert.equal(body.header, "yes");
    assert.equal(body.query, "1", "in streaming mode the query comes from the URL, as @azure/functions reads it");
    assert.equal((await send(`${running!.url}/api/upload/big`, "POST", {}, Buffer.from("x"))).status, 401, "the key is still checked");
    const chunks = await send(`${running!.url}/api/chunks`, "GET");
    assert.equal(chunks.text, "one,two,three");
    const empty = await send(`${running!.url}/api/empty`, "GET");
    assert.equal(empty.status, 204);
    assert.equal(empty.text, "");
  });

  it("stops with the worker's message when an entry point fails to load, or the main glob matches nothing", async () => {
    const broken = writeFixtureApp("devhost-broken", {
      "package.json": JSON.stringify({ type: "module", main: "fns/*.js" }),
      "fns/bad.js": 'throw new Error("this module is broken");\n',
    });
    const empty = writeFixtureApp("devhost-empty", { "package.json": JSON.stringify({ type: "module", main: "dist/nothing/*.js" }) });
    try {
      const bad = await runToExit(["--root", broken.root, "--port", "0"]);
      assert.equal(bad.code, 1);
      assert.match(bad.output, /The dev host did not start: Worker was unable to load entry point "fns\/bad\.js": this module is broken/);
      const none = await runToExit(["--root", empty.root, "--port", "0"]);
      assert.equal(none.code, 1);
      assert.match(none.output, /Worker was unable to load entry point "dist\/nothing\/\*\.js": Found zero files matching the supplied pattern/);
    } finally {
      broken.remove();
      empty.remove();
    }
  });

  it("lets a process that hosts a streaming app in-process exit once the host stopped", () => {
    const hostModule = pathToFileURL(join(DIST, "host", "host.js")).href;
    const script =
      `const { startHost } = await import(${JSON.stringify(hostModule)});` +
      `const host = await startHost({ root: ${JSON.stringify(fixture.root)}, port: 0, settings: {}, timers: "manual", queues: "manual", log: () => {} });` +
      "if (!host.streaming) process.exit(3);" +
      "await host.stop();";
    const result = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 60_000 });
    assert.equal(result.signal, null, "it exited by itself (the proxy of @azure/functions does not hold it)");
    assert.equal(result.status, 0, result.stderr);
  });

  it("npm start: runs func start when func is on PATH, else says so in one line and runs the dev host", async () => {
    const bin = mkdtempSync(join(tmpdir(), "fake-func-"));
    try {
      writeFileSync(join(bin, "func"), '#!/bin/sh\necho "fake func: $*"\n');
      chmodSync(join(bin, "func"), 0o755);
      const withFunc = spawnSync(process.execPath, [join(DIST, "start.js"), "--port", "7099"], {
        env: { ...process.env, PATH: `${bin}:${dirname(process.execPath)}` },
        encoding: "utf8",
      });
      assert.equal(withFunc.status, 0, withFunc.stderr);
      assert.equal(withFunc.stdout, "fake func: start --port 7099\n", "func start, with the arguments, and nothing else");

      const started = await startCli(["--root", fixture.root, "--port", "0"], { ...process.env, PATH: dirname(process.execPath) }, join(DIST, "start.js"));
      try {
        assert.equal(started.output[0], NO_FUNC_LINE);
        assert.equal((await send(`${started.url}/api/empty`, "GET")).status, 204);
      } finally {
        const exited = new Promise((resolve) => started.child.once("exit", resolve));
        started.child.kill("SIGTERM");
        await exited;
      }
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it("parses local.settings.json, the environment precedence and worker arguments", () => {
    assert.deepEqual(readLocalSettings(join(fixture.root, "missing.json")), { values: {} });
    const { env, skipped } = workerEnv({ A: "env" }, { A: "file", B: "file" });
    assert.deepEqual(skipped, ["A"]);
    assert.equal(env.A, "env");
    assert.equal(env.B, "file");
    assert.deepEqual(splitArgs('--require "/a path/x.cjs" --inspect'), ["--require", "/a path/x.cjs", "--inspect"]);
  });
});
