import { request as httpRequest } from "node:http";
import { type Host, invokeTrigger, type LogEntry, startHost } from "../../dev/host/host.js";
import { compileRoute, matchRoute, pathSegments } from "../../dev/host/http-routes.js";
import { loadApp } from "../../dev/host/load.js";
import type { RpcBindingInfo } from "../../dev/host/rpc.js";
import { operatorRoutes } from "../../shared/operator/route.js";
import { repoRoot } from "../../simulators/https.js";
import type { Role } from "../../simulators/operators.js";

/**
 * The app as the tests run it: loaded by the dev host (dev/host) exactly as the sandbox
 * and `npm start` without Core Tools load it (package.json main glob, registrations through
 * `@azure/functions` and the `@azure/functions-core` module the host provides), served
 * over real HTTP by an in-process host, so tests can still replace services() fields.
 */
const ROOT = repoRoot(import.meta.url);

/** One registered function, as the test of the registrations reads it. */
export interface Registration {
  kind: "http" | "timer" | "storageQueue";
  name: string;
  /** The trigger's options as registered (route, methods, authLevel, schedule, queueName, ...) and the handler. */
  options: Record<string, unknown> & { handler: (...args: never[]) => unknown };
  /** Every binding, keyed by binding name, as the host receives them. */
  bindings: Record<string, RpcBindingInfo>;
}

const KINDS = { http: "http", timer: "timer", queue: "storageQueue" } as const;

/** Loads the app through the dev host's loader (once per process). */
export async function loadFunctions(): Promise<Map<string, Registration>> {
  const app = await loadApp(ROOT);
  const out = new Map<string, Registration>();
  for (const fn of app.functions) {
    if (!fn.kind) throw new Error(`Function ${fn.name} has a trigger the dev host does not run: ${fn.trigger.type}`);
    out.set(fn.name, {
      kind: KINDS[fn.kind],
      name: fn.name,
      options: { ...fn.trigger, handler: fn.callback as Registration["options"]["handler"] },
      bindings: fn.metadata.bindings,
    });
  }
  return out;
}

/** A log line as the tests read it: `[level] message`; the host's own failure lines are `[host] ...`. */
export function logLine(entry: LogEntry): string | undefined {
  if (entry.category === "host") return entry.level === "error" || entry.level === "critical" ? `[host] ${entry.message}` : undefined;
  return `[${entry.level}] ${entry.message}`;
}

export interface HttpCall {
  method?: string;
  /** Path after /api, with route parameters filled in, and an optional query string. */
  path: string;
  /** The route parameters the path is expected to give (checked against the function's route). */
  params?: Record<string, string>;
  body?: string;
  headers?: Record<string, string>;
  /** The function key to send as x-functions-key (default: the host's, for function-level routes); null sends none. */
  key?: string | null;
  /**
   * Operator routes: the role whose operator token is sent as `Authorization: Bearer`
   * (default Admin, from the token source the harness installs); null sends none.
   */
  as?: Role | null;
  /** Operator routes: send this bearer token instead. */
  bearer?: string;
}

/** Where operator tokens come from (the harness installs one backed by the fake Entra). */
export type OperatorTokenSource = (role: Role) => Promise<string>;
let tokenSource: OperatorTokenSource | undefined;

/** Installs (or, with undefined, removes) the source of the tokens sendHttp sends to operator routes. */
export function useOperatorTokens(source: OperatorTokenSource | undefined): void {
  tokenSource = source;
}

export interface HttpResult {
  status: number;
  headers: Record<string, string>;
  text: string;
  json: unknown;
  /** The body's bytes as received (still gzip'd when Content-Encoding says so). */
  bytes: Buffer;
}

export interface AppHost {
  host: Host;
  /** Every line the functions and the worker logged, and the host's failure lines. */
  logs: string[];
  /** Sends a real HTTP request to the route of the HTTP function `name`. */
  http(name: string, call: HttpCall): Promise<HttpResult>;
  /** Invokes a timer or queue function through the host, with the data the host would send. */
  trigger(name: string, input: unknown): Promise<void>;
  stop(): Promise<void>;
}

export interface AppHostOptions {
  /** Where log lines go (default: a new array, AppHost.logs). */
  logs?: string[];
  /** HTTP port (default: a free one). */
  port?: number;
  /**
   * `manual` (default): the queue listener polls only when the test calls
   * `host.pollQueue()` / `host.drainQueues()`; `auto`: it polls on its own, as under func start.
   */
  queues?: "auto" | "manual";
  /** `manual` (default): timers fire only through `host.runTimer()`; `auto`: on their schedule. */
  timers?: "auto" | "manual";
}

/** Starts an in-process dev host for the app. */
export async function startAppHost(settings: Record<string, string | undefined>, options: AppHostOptions = {}): Promise<AppHost> {
  const logs = options.logs ?? [];
  const host = await startHost({
    root: ROOT,
    settings,
    port: options.port ?? 0,
    timers: options.timers ?? "manual",
    queues: options.queues ?? "manual",
    log: (entry) => {
      const line = logLine(entry);
      if (line !== undefined) logs.push(line);
    },
  });
  return {
    host,
    logs,
    http: (name, call) => sendHttp(host, name, call),
    trigger: (name, input) => host.invoke(name, input),
    stop: () => host.stop(),
  };
}

/** Sends `call` to the host over HTTP, after checking that it is a request for the function `name`. */
export async function sendHttp(host: Host, name: string, call: HttpCall): Promise<HttpResult> {
  const fn = host.app.byName.get(name);
  if (fn?.kind !== "http") throw new Error(`No HTTP function ${name}`);
  const route = compileRoute(fn, host.config.routePrefix);
  const method = (call.method ?? "GET").toUpperCase();
  if (route.methods && !route.methods.includes(method)) throw new Error(`${name} does not answer ${method} (only ${route.methods.join(", ")})`);
  const relative = call.path.replace(/^\//, "");
  const path = `/${[host.config.routePrefix, relative].filter((p) => p !== "").join("/")}`;
  const rawPath = path.split("?")[0]!;
  const params = matchRoute(route, pathSegments(rawPath) ?? []);
  if (!params) throw new Error(`${rawPath} does not match the route ${route.path} of ${name}`);
  for (const [key, value] of Object.entries(call.params ?? {})) {
    if (params[key] !== value) throw new Error(`${rawPath} gives ${key}=${params[key]} for ${name}, not ${value}`);
  }
  const headers: Record<string, string> = { ...(call.headers ?? (call.body !== undefined ? { "content-type": "application/json" } : {})) };
  const key = call.key === undefined ? host.key : call.key;
  if (route.authLevel !== "anonymous" && key !== null && !/[?&]code=/.test(path)) headers["x-functions-key"] ??= key;
  if (operatorRoutes().has(name) && call.as !== null && !Object.keys(headers).some((h) => h.toLowerCase() === "authorization")) {
    const token = call.bearer ?? (tokenSource ? await tokenSource(call.as ?? "Admin") : undefined);
    if (token) headers.authorization = `Bearer ${token}`;
  }
  const body = call.body !== undefined ? Buffer.from(call.body, "utf8") : undefined;
  if (body) headers["content-length"] = String(body.length);

  return new Promise<HttpResult>((resolve, reject) => {
    const req = httpRequest(`${host.url}${path}`, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.once("error", reject);
      res.once("end", () => {
        const bytes = Buffer.concat(chunks);
        const text = bytes.toString("utf8");
        const out: Record<string, string> = {};
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: out, text, json, bytes });
      });
    });
    req.once("error", reject);
    req.end(body);
  });
}

/**
 * Calls an HTTP function once, over HTTP, on a host started for this call with the
 * current process.env as its settings; the log lines land in `logs`.
 */
export async function callHttp(name: string, call: HttpCall, logs: string[], _baseUrl?: string): Promise<HttpResult> {
  const app = await startAppHost(process.env, { logs });
  try {
    return await app.http(name, call);
  } finally {
    await app.stop();
  }
}

/** Invokes a timer or queue function with the host's invocation data for `input`, without a running host. */
export async function callTrigger(name: string, input: unknown, logs: string[]): Promise<void> {
  await invokeTrigger(ROOT, name, input, (entry) => {
    const line = logLine(entry);
    if (line !== undefined) logs.push(line);
  });
}
