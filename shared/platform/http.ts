import type { HttpRequest, HttpResponseInit } from "@azure/functions";

/** JSON in and out for the operator API, with errors shaped `{"error":{"code","message"}}`. */

export const MAX_JSON_BODY_BYTES = 16 * 1024;

export class ApiError extends Error {
  constructor(
    public readonly status: number,
    public readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): HttpResponseInit {
  return {
    status,
    jsonBody: body,
    headers: { "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", ...headers },
  };
}

/**
 * Runs an operator API handler. ApiErrors become their JSON error; anything else becomes a
 * plain 500, and the log gets the error's type only (see errorName). Every answer gets
 * `X-Content-Type-Options: nosniff`, whatever headers the handler set.
 */
export async function api(
  context: { error(...args: unknown[]): void },
  run: () => Promise<HttpResponseInit>,
): Promise<HttpResponseInit> {
  try {
    return withNosniff(await run());
  } catch (err) {
    if (err instanceof ApiError) return json(err.status, { error: { code: err.code, message: err.message } });
    context.error(`api.failed error=${errorName(err)}`);
    return json(500, { error: { code: "InternalError", message: "The request failed; see the app's logs." } });
  }
}

function withNosniff(response: HttpResponseInit): HttpResponseInit {
  const headers = { ...((response.headers ?? {}) as Record<string, string>) };
  if (!Object.keys(headers).some((name) => name.toLowerCase() === "x-content-type-options")) {
    headers["X-Content-Type-Options"] = "nosniff";
  }
  return { ...response, headers };
}

/** Reads a JSON object body, refusing oversized, non-JSON and non-object bodies. */
export async function readJsonObject(request: HttpRequest): Promise<Record<string, unknown>> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > MAX_JSON_BODY_BYTES) throw tooLarge();
  const bytes = Buffer.from(await request.arrayBuffer());
  if (bytes.length > MAX_JSON_BODY_BYTES) throw tooLarge();
  const contentType = request.headers.get("content-type") ?? "";
  if (contentType && !/^application\/(.+\+)?json\b/i.test(contentType)) {
    throw new ApiError(415, "UnsupportedMediaType", "Send the body as application/json.");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new ApiError(400, "InvalidJson", "The request body is not valid JSON.");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new ApiError(400, "InvalidBody", "The request body must be a JSON object.");
  }
  return parsed as Record<string, unknown>;
}

function tooLarge(): ApiError {
  return new ApiError(413, "PayloadTooLarge", `The request body must be at most ${MAX_JSON_BODY_BYTES} bytes.`);
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isGuid(value: unknown): value is string {
  return typeof value === "string" && GUID.test(value);
}

/** Parses a tenant ID route/query/body value to the canonical lowercase GUID. */
export function parseTenantId(value: unknown, field = "tenantId"): string {
  if (!isGuid(value)) throw new ApiError(400, "InvalidTenantId", `${field} must be a GUID.`);
  return value.toLowerCase();
}

export function escapeHtml(value: unknown): string {
  return String(value).replace(
    /[&<>"'`=/]/g,
    (c) =>
      ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "`": "&#96;", "=": "&#61;", "/": "&#47;" })[
        c
      ] ?? c,
  );
}

export const PAGE_HEADERS = {
  "Content-Type": "text/html; charset=utf-8",
  "Cache-Control": "no-store",
  Pragma: "no-cache",
  "Referrer-Policy": "no-referrer",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  // Browsers ignore it over http (the loopback sandbox) and keep to https afterwards.
  "Strict-Transport-Security": "max-age=31536000",
  "Content-Security-Policy":
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
} as const;

/** A small self-contained HTML page; every value is escaped, nothing external is loaded. */
export function page(status: number, title: string, paragraphs: string[]): HttpResponseInit {
  const body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}h1{font-size:1.4rem}</style>
</head><body><main><h1>${escapeHtml(title)}</h1>
${paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`).join("\n")}
</main></body></html>
`;
  return { status, body, headers: { ...PAGE_HEADERS } };
}

export function redirect(location: string): HttpResponseInit {
  return {
    status: 302,
    headers: {
      Location: location,
      "Cache-Control": "no-store",
      "Referrer-Policy": "no-referrer",
      "X-Content-Type-Options": "nosniff",
      "Strict-Transport-Security": PAGE_HEADERS["Strict-Transport-Security"],
    },
  };
}

/**
 * Runs a browser-facing handler. An unexpected failure becomes a plain 500 page; the log
 * gets the error's type only, because SDK and OAuth errors can carry request details.
 */
export async function safePage(
  log: { error(message: string): void },
  run: () => Promise<HttpResponseInit>,
): Promise<HttpResponseInit> {
  try {
    return await run();
  } catch (err) {
    log.error(`page.failed error=${errorName(err)}`);
    return page(500, "Something went wrong", [
      "The service could not complete this step. Nothing was stored. Please try again in a few minutes.",
    ]);
  }
}

/**
 * What a timer or queue handler throws when the host must see a failure (and retry): the
 * event and the error class only. The original error is not attached, because the host
 * logs a thrown error's message, stack and cause, and SDK errors carry request details.
 */
export class HandlerFailure extends Error {
  constructor(event: string, err: unknown) {
    super(`${event} error=${errorName(err)}`);
    this.name = "HandlerFailure";
  }
}

/** A loggable description of an error: its class and HTTP status, never its message. */
export function errorName(err: unknown): string {
  if (!(err instanceof Error)) return "unknown";
  // A ConfigError's message names the bad settings and never holds a value.
  if (err.name === "ConfigError") return `ConfigError: ${err.message}`;
  const status = (err as { statusCode?: number }).statusCode;
  const code = (err as { code?: unknown }).code;
  return [err.name, typeof code === "string" ? code : undefined, status].filter(Boolean).join("/");
}
