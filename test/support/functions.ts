import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { HttpRequest as HttpRequestType, HttpResponseInit, InvocationContext as InvocationContextType } from "@azure/functions";
import functionsModule from "@azure/functions";

// @azure/functions is CommonJS; only `app` is visible as a named ESM export.
const { app, HttpRequest, InvocationContext } = functionsModule;

/**
 * Loads every compiled function file the way the host does (package.json "main" glob),
 * recording each registration instead of handing it to a Functions host. Tests then check
 * the registrations (routes, methods, auth levels, schedules, queue bindings) and call the
 * registered handlers directly.
 */
export interface Registration {
  kind: "http" | "timer" | "storageQueue";
  name: string;
  options: Record<string, unknown> & { handler: (...args: never[]) => unknown };
}

const registrations = new Map<string, Registration>();
let loaded: Promise<Map<string, Registration>> | undefined;

export function loadFunctions(): Promise<Map<string, Registration>> {
  loaded ??= (async () => {
    const record = (kind: Registration["kind"]) => (name: string, options: Registration["options"]) => {
      if (registrations.has(name)) throw new Error(`Function ${name} registered twice`);
      registrations.set(name, { kind, name, options });
    };
    const target = app as unknown as Record<string, unknown>;
    target.http = record("http");
    target.timer = record("timer");
    target.storageQueue = record("storageQueue");
    const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "functions");
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".js")).sort()) {
      await import(pathToFileURL(join(dir, file)).href);
    }
    return registrations;
  })();
  return loaded;
}

export interface Invocation {
  context: InvocationContextType;
  logs: string[];
}

/** An InvocationContext whose log lines land in `sink` (and nowhere else). */
export function invocation(sink: string[], functionName = "test"): InvocationContextType {
  return new InvocationContext({
    functionName,
    invocationId: "test-invocation",
    logHandler: (level, ...args) => sink.push(`[${level}] ${args.map(String).join(" ")}`),
  });
}

export interface HttpCall {
  method?: string;
  /** Path after /api, with route parameters filled in, and an optional query string. */
  path: string;
  params?: Record<string, string>;
  body?: string;
  headers?: Record<string, string>;
}

export interface HttpResult {
  status: number;
  headers: Record<string, string>;
  text: string;
  json: unknown;
}

/** Calls a registered HTTP function with a request shaped like the host's. */
export async function callHttp(name: string, call: HttpCall, logs: string[], baseUrl = "https://collector.localhost"): Promise<HttpResult> {
  const registration = (await loadFunctions()).get(name);
  if (registration?.kind !== "http") throw new Error(`No HTTP function ${name}`);
  const url = new URL(`${baseUrl}/api/${call.path.replace(/^\//, "")}`);
  const query: Record<string, string> = {};
  for (const [k, v] of url.searchParams) query[k] = v;
  const request = new HttpRequest({
    method: call.method ?? "GET",
    url: url.href,
    headers: call.headers ?? (call.body !== undefined ? { "content-type": "application/json" } : {}),
    query,
    params: call.params ?? {},
    ...(call.body !== undefined ? { body: { string: call.body } } : {}),
  });
  const handler = registration.options.handler as (r: HttpRequestType, c: InvocationContextType) => Promise<HttpResponseInit>;
  const response = await handler(request, invocation(logs, name));
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries((response.headers ?? {}) as Record<string, string>)) headers[k.toLowerCase()] = v;
  let text = "";
  if (response.jsonBody !== undefined) {
    text = JSON.stringify(response.jsonBody);
    headers["content-type"] ??= "application/json";
  } else if (typeof response.body === "string") text = response.body;
  else if (response.body instanceof Uint8Array) text = Buffer.from(response.body).toString("utf8");
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: response.status ?? 200, headers, text, json };
}

/** Calls a registered non-HTTP function (timer or queue) with its trigger input. */
export async function callTrigger(name: string, input: unknown, logs: string[]): Promise<void> {
  const registration = (await loadFunctions()).get(name);
  if (!registration || registration.kind === "http") throw new Error(`No trigger function ${name}`);
  const handler = registration.options.handler as (i: unknown, c: InvocationContextType) => Promise<void>;
  await handler(input, invocation(logs, name));
}
