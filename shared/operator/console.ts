import { existsSync, readdirSync, readFileSync } from "node:fs";
import { extname, join, relative } from "node:path";
import type { HttpResponseInit } from "@azure/functions";
import type { AppConfig } from "../platform/config.js";
import { PAGE_HEADERS } from "../platform/http.js";

/**
 * The operator console: a static single-page app (console/, built by `npm run build` into
 * dist/console and shipped in the package) served by the anonymous function `console` at
 * `/api/console/`. The page holds no data: it signs the operator in with MSAL (auth code +
 * PKCE, in the MSSP tenant) and calls the operator API with the access token, which the API
 * checks like any other caller's. `config.json` tells the page its sign-in settings.
 *
 * Files are looked up in a list made once from the build folder, so no request path ever
 * reaches the file system.
 */

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
};

interface Asset {
  type: string;
  body: Buffer;
  /** Hashed names never change content: cached for a year. */
  immutable: boolean;
}

let cached: { dir: string; files: Map<string, Asset> } | undefined;

function loadAssets(dir: string): Map<string, Asset> {
  if (cached?.dir === dir) return cached.files;
  const files = new Map<string, Asset>();
  if (existsSync(dir)) {
    for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (!entry.isFile()) continue;
      const path = join(entry.parentPath, entry.name);
      const name = relative(dir, path).split("\\").join("/");
      const type = TYPES[extname(name).toLowerCase()];
      if (!type || name.endsWith(".map")) continue;
      files.set(name, { type, body: readFileSync(path), immutable: /-[A-Z0-9]{8,}\.[a-z]+$/.test(name) });
    }
  }
  cached = { dir, files };
  return files;
}

/** The Content-Security-Policy of every console answer. */
export function consoleCsp(config: AppConfig): string {
  const authority = new URL(config.endpoints.authorityHost).origin;
  // MSAL's silent renewal uses a hidden iframe of the authority; the token calls go to it too.
  return `default-src 'self'; connect-src 'self' ${authority}; frame-src ${authority}; frame-ancestors 'none'`;
}

function headers(config: AppConfig, type: string, cache: string): Record<string, string> {
  return {
    "Content-Type": type,
    "Cache-Control": cache,
    "Content-Security-Policy": consoleCsp(config),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": PAGE_HEADERS["Strict-Transport-Security"],
  };
}

/** What the page needs to sign in; nothing secret. */
export function consoleConfig(config: AppConfig): Record<string, unknown> {
  const op = config.operator;
  const authorityHost = new URL(config.endpoints.authorityHost).host;
  return {
    configured: Boolean(op.consoleClientId),
    clientId: op.consoleClientId ?? "",
    authority: op.authority,
    // Known to MSAL, so it makes no instance-discovery call; the metadata spares the discovery call.
    knownAuthorities: [authorityHost],
    authorityMetadata: {
      issuer: op.issuer,
      authorization_endpoint: `${op.authority}/oauth2/v2.0/authorize`,
      token_endpoint: `${op.authority}/oauth2/v2.0/token`,
      end_session_endpoint: `${op.authority}/oauth2/v2.0/logout`,
      jwks_uri: op.jwksUri,
      response_modes_supported: ["query", "fragment", "form_post"],
    },
    scopes: [op.scope],
    redirectUri: `${config.publicBaseUrl}/api/console/`,
    apiBase: `${config.publicBaseUrl}/api`,
  };
}

/**
 * Answers GET /api/console/{path}. `path` is the catch-all route parameter (empty for the
 * page itself); `trailingSlash` tells `/api/console` (redirected) from `/api/console/`.
 */
export function consoleResponse(config: AppConfig, assetsDir: string, path: string, trailingSlash: boolean): HttpResponseInit {
  if (path === "" && !trailingSlash) {
    return { status: 301, headers: { ...headers(config, "text/plain; charset=utf-8", "no-store"), Location: "console/" } };
  }
  if (path === "config.json") {
    return { status: 200, body: JSON.stringify(consoleConfig(config)), headers: headers(config, TYPES[".json"]!, "no-store") };
  }
  const files = loadAssets(assetsDir);
  const name = path === "" ? "index.html" : path;
  const asset = files.get(name);
  if (!asset) {
    if (files.size === 0) {
      return {
        status: 503,
        body: "The console is not built: run npm run build.",
        headers: headers(config, TYPES[".txt"]!, "no-store"),
      };
    }
    return { status: 404, body: "Not found.", headers: headers(config, TYPES[".txt"]!, "no-store") };
  }
  const cache = asset.immutable ? "public, max-age=31536000, immutable" : "no-store";
  return { status: 200, body: asset.body, headers: headers(config, asset.type, cache) };
}
