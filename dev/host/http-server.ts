/**
 * The HTTP front end: matches the route, checks the function key, turns the request into
 * the host's RpcHttp invocation data (lower-cased header names, the query as the host's
 * map with repeated keys joined by a comma, the route parameters, the body as bytes) and
 * writes the function's RpcHttp response back (a 204 or 304 carries no body).
 *
 * When the app called `app.setup({ enableHttpStream: true })`, `@azure/functions` runs an
 * HTTP proxy of its own and reports its address as the `HttpUri` capability. Then, as the
 * host does, the request is forwarded to that proxy as it arrives (body streamed, with
 * `x-ms-invocation-id` and the `x-forwarded-*` headers), the invocation carries only the
 * headers, query and route parameters in its trigger metadata, and the proxy's response
 * is streamed back to the client.
 */
import { timingSafeEqual } from "node:crypto";
import { type IncomingMessage, request as httpRequest, type ServerResponse } from "node:http";
import { baseRequest, type InvocationOutcome, sysMetadata } from "./invoke.js";
import { type HttpRoute, matchRoute, pathSegments } from "./http-routes.js";
import type { AppFunction } from "./load.js";
import type { RpcHttpCookie, RpcHttpData, RpcInvocationRequest, RpcNullableString, RpcTypedData } from "./rpc.js";

/** The host's limit on a request body (100 MB). */
export const MAX_REQUEST_BYTES = 100 * 1024 * 1024;
const INVOCATION_ID_HEADER = "x-ms-invocation-id";
/** Hop-by-hop headers a proxy does not pass on. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"]);

export interface HttpFrontEndOptions {
  routes: HttpRoute[];
  key: string;
  /** The programming model's HTTP proxy, in streaming mode. */
  httpUri?: string;
  /** Runs one invocation (logging it); rejects when it failed. */
  run(fn: AppFunction, request: RpcInvocationRequest, reason: string): Promise<InvocationOutcome>;
  warn(message: string): void;
}

export type HttpHandler = (req: IncomingMessage, res: ServerResponse) => void;

const REASON = "This function was programmatically called via the host APIs.";

export function createHttpHandler(options: HttpFrontEndOptions): HttpHandler {
  return (req, res) => {
    handle(options, req, res).catch((err: unknown) => {
      options.warn(`HTTP front end failed: ${(err as Error).message}`);
      if (!res.headersSent) res.writeHead(500, { "content-length": "0" });
      res.end();
    });
  };
}

async function handle(options: HttpFrontEndOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const rawUrl = req.url ?? "/";
  const q = rawUrl.indexOf("?");
  const rawPath = q >= 0 ? rawUrl.slice(0, q) : rawUrl;
  const rawQuery = q >= 0 ? rawUrl.slice(q + 1) : "";
  const segments = pathSegments(rawPath);
  if (!segments) return empty(res, 400);
  const method = (req.method ?? "GET").toUpperCase();
  let route: HttpRoute | undefined;
  let params: Record<string, string> | undefined;
  for (const candidate of options.routes) {
    const matched = matchRoute(candidate, segments);
    if (!matched) continue;
    if (candidate.methods && !candidate.methods.includes(method)) continue;
    route = candidate;
    params = matched;
    break;
  }
  if (!route || !params) return empty(res, 404);
  const query = hostQuery(rawQuery);
  if (route.authLevel !== "anonymous") {
    const presented = headerValue(req, "x-functions-key") ?? queryValue(rawQuery, "code");
    if (!presented || !sameKey(presented, options.key)) return empty(res, 401);
  }
  const host = req.headers.host ?? "localhost";
  const url = `http://${host}${rawUrl}`;
  const headers = hostHeaders(req);

  if (options.httpUri) return stream(options, route.fn, req, res, { url, host, headers, query, params, method });

  const body = await readBody(req);
  if (body === "too large") return empty(res, 413);
  const http: RpcHttpData = {
    method,
    url,
    nullableHeaders: nullable(headers),
    nullableQuery: nullable(query),
    nullableParams: nullable(params),
    ...(body.length > 0 ? { body: { bytes: body } } : {}),
  };
  const request: RpcInvocationRequest = {
    ...baseRequest(route.fn),
    inputData: [{ name: route.fn.triggerName, data: { http } }],
    triggerMetadata: { sys: sysMetadata(route.fn, new Date()) },
  };
  let outcome: InvocationOutcome;
  try {
    outcome = await options.run(route.fn, request, REASON);
  } catch {
    return empty(res, 500);
  }
  writeRpcResponse(res, method, httpReturn(outcome));
}

/** The RpcHttp of the function's `$return` (or first http output) binding. */
function httpReturn(outcome: InvocationOutcome): RpcHttpData | undefined {
  const value = outcome.response.returnValue ?? outcome.response.outputData?.find((o) => o.data?.http)?.data;
  return value?.http ?? undefined;
}

/** Writes the function's response; no response at all answers 204. */
export function writeRpcResponse(res: ServerResponse, method: string, http: RpcHttpData | undefined): void {
  if (!http) {
    empty(res, 204);
    return;
  }
  const status = Number(http.statusCode) || 200;
  for (const [name, value] of Object.entries(http.headers ?? {})) {
    if (!HOP_BY_HOP.has(name.toLowerCase()) && name.toLowerCase() !== "content-length") res.setHeader(name, value);
  }
  const cookies = (http.cookies ?? []).map(serializeCookie);
  if (cookies.length > 0) res.setHeader("set-cookie", cookies);
  const noBody = status === 204 || status === 304 || (status >= 100 && status < 200) || method === "HEAD";
  const body = noBody ? Buffer.alloc(0) : typedDataBytes(http.body);
  if (!noBody) res.setHeader("content-length", body.length);
  res.writeHead(status);
  res.end(body);
}

async function stream(
  options: HttpFrontEndOptions,
  fn: AppFunction,
  req: IncomingMessage,
  res: ServerResponse,
  r: { url: string; host: string; headers: Record<string, string>; query: Record<string, string>; params: Record<string, string>; method: string },
): Promise<void> {
  const base = baseRequest(fn);
  const invocationId = base.invocationId!;
  const forwardHeaders: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) forwardHeaders[name] = value;
  }
  forwardHeaders[INVOCATION_ID_HEADER] = invocationId;
  forwardHeaders["x-forwarded-host"] = r.host;
  forwardHeaders["x-forwarded-proto"] = "http";
  const target = new URL(req.url ?? "/", options.httpUri);
  let answered = false;
  const proxied = httpRequest(target, { method: r.method, headers: forwardHeaders });
  const responded = new Promise<void>((resolve) => {
    proxied.once("response", (upstream) => {
      answered = true;
      const headers: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(upstream.headers)) {
        if (value !== undefined && !HOP_BY_HOP.has(name) && name !== INVOCATION_ID_HEADER) headers[name] = value;
      }
      const status = upstream.statusCode ?? 200;
      if (status === 204 || status === 304) {
        delete headers["content-length"];
        upstream.resume();
        res.writeHead(status, headers).end();
      } else {
        res.writeHead(status, headers);
        upstream.pipe(res);
      }
      upstream.once("end", () => resolve());
      upstream.once("error", () => resolve());
    });
    proxied.once("error", () => resolve());
  });
  req.pipe(proxied);

  const triggerMetadata: Record<string, RpcTypedData> = {
    Headers: { json: JSON.stringify(r.headers) },
    Query: { json: JSON.stringify(r.query) },
    sys: sysMetadata(fn, new Date()),
  };
  for (const [name, value] of Object.entries(r.params)) triggerMetadata[name] = { string: value };
  const request: RpcInvocationRequest = {
    ...base,
    inputData: [{ name: fn.triggerName, data: { http: { method: r.method, url: r.url, nullableHeaders: nullable(r.headers) } } }],
    triggerMetadata,
  };
  let outcome: InvocationOutcome | undefined;
  try {
    outcome = await options.run(fn, request, REASON);
  } catch {
    outcome = undefined;
  }
  // A function that returned no response never answers on the proxy.
  if (!answered && (outcome === undefined || outcome.result === undefined || outcome.result === null)) {
    proxied.destroy();
    return empty(res, outcome ? 204 : 500);
  }
  await responded;
}

/** Header names lower-cased; repeated headers joined with a comma, as the host's header map does. */
export function hostHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    out[name] = name in out ? `${out[name]},${raw[i + 1]}` : raw[i + 1]!;
  }
  return out;
}

/**
 * The query as the host's map: names case-insensitive (the first spelling is kept), the
 * values of a repeated name joined with a comma, `+` and percent-escapes decoded.
 */
export function hostQuery(rawQuery: string): Record<string, string> {
  const out: Record<string, string> = {};
  const names = new Map<string, string>();
  for (const part of rawQuery.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const name = decodeQueryPart(eq >= 0 ? part.slice(0, eq) : part);
    const value = decodeQueryPart(eq >= 0 ? part.slice(eq + 1) : "");
    if (name === "") continue;
    const key = names.get(name.toLowerCase());
    if (key === undefined) {
      names.set(name.toLowerCase(), name);
      out[name] = value;
    } else {
      out[key] = `${out[key]},${value}`;
    }
  }
  return out;
}

function decodeQueryPart(text: string): string {
  const spaced = text.replace(/\+/g, " ");
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced;
  }
}

function queryValue(rawQuery: string, name: string): string | undefined {
  const query = hostQuery(rawQuery);
  const key = Object.keys(query).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : query[key];
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function sameKey(presented: string, key: string): boolean {
  const a = Buffer.from(presented);
  const b = Buffer.from(key);
  return a.length === b.length && timingSafeEqual(a, b);
}

function nullable(map: Record<string, string>): Record<string, RpcNullableString> {
  return Object.fromEntries(Object.entries(map).map(([k, v]) => [k, { value: v }]));
}

function readBody(req: IncomingMessage): Promise<Buffer | "too large"> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_REQUEST_BYTES) over = true;
      else chunks.push(chunk);
    });
    req.once("end", () => resolve(over ? "too large" : Buffer.concat(chunks)));
    req.once("error", reject);
  });
}

function typedDataBytes(data: RpcTypedData | null | undefined): Buffer {
  if (!data) return Buffer.alloc(0);
  if (data.bytes) return Buffer.from(data.bytes);
  if (data.stream) return Buffer.from(data.stream);
  if (typeof data.string === "string") return Buffer.from(data.string, "utf8");
  if (typeof data.json === "string") return Buffer.from(data.json, "utf8");
  if (typeof data.int === "number") return Buffer.from(String(data.int));
  if (typeof data.double === "number") return Buffer.from(String(data.double));
  return Buffer.alloc(0);
}

function serializeCookie(c: RpcHttpCookie): string {
  const parts = [`${c.name ?? ""}=${c.value ?? ""}`];
  if (c.domain?.value) parts.push(`Domain=${c.domain.value}`);
  if (c.path?.value) parts.push(`Path=${c.path.value}`);
  const seconds = c.expires?.value?.seconds;
  if (typeof seconds === "number") parts.push(`Expires=${new Date(seconds * 1000).toUTCString()}`);
  if (typeof c.maxAge?.value === "number") parts.push(`Max-Age=${c.maxAge.value}`);
  if (c.secure?.value) parts.push("Secure");
  if (c.httpOnly?.value) parts.push("HttpOnly");
  if (c.sameSite === "lax") parts.push("SameSite=Lax");
  else if (c.sameSite === "strict") parts.push("SameSite=Strict");
  else if (c.sameSite === "explicitNone") parts.push("SameSite=None");
  return parts.join("; ");
}

function empty(res: ServerResponse, status: number): void {
  res.writeHead(status, { "content-length": "0" });
  res.end();
}
