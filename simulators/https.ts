import { existsSync } from "node:fs";
import type { IncomingMessage, RequestListener, Server, ServerResponse } from "node:http";
import { createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureCerts, type TestCerts } from "./tls.js";

/**
 * Small plumbing shared by the local protocol fakes (Entra ID, Key Vault, managed identity):
 * start an HTTP(S) listener on a loopback address and port (0 = any free port), read bodies,
 * and find the repository root, test CA and loopback DNS preload from compiled test code.
 */

export interface Listening {
  /** Base URL without a trailing slash, e.g. `https://127.0.0.1:50123`. */
  url: string;
  port: number;
  server: Server;
  /** Stops listening and drops keep-alive connections; resolves when the server is closed. */
  close(): Promise<void>;
}

export interface ListenOptions {
  /** Port to listen on; 0 (default) picks a free one. */
  port?: number;
  /** Host name used in the returned URL (default `127.0.0.1`). It must resolve to `bind`. */
  host?: string;
  /** Address actually bound (default `127.0.0.1`). */
  bind?: string;
}

/** Creates an HTTPS server with the local test certificate and starts listening. */
export function listenHttps(certs: TestCerts, handler: RequestListener, options: ListenOptions = {}): Promise<Listening> {
  const server = createHttpsServer({ key: certs.key, cert: certs.cert }, handler);
  return listen(server, "https", options);
}

/** A fake HTTPS service with start/stop and its base URL; subclasses answer requests. */
export abstract class HttpsFake {
  private listening: Listening | undefined;

  constructor(
    /** The fake's name in errors (`FakeSplunkHec`). */
    private readonly fakeName: string,
    private readonly listen: { certs: TestCerts; port?: number; host?: string },
  ) {}

  protected abstract handle(req: IncomingMessage, res: ServerResponse): Promise<void>;

  async start(): Promise<void> {
    if (this.listening) return;
    this.listening = await listenHttps(this.listen.certs, (req, res) => void this.handle(req, res), {
      port: this.listen.port ?? 0,
      host: this.listen.host ?? "127.0.0.1",
    });
  }

  async stop(): Promise<void> {
    const l = this.listening;
    this.listening = undefined;
    await l?.close();
  }

  /** Base URL, e.g. `https://127.0.0.1:50123`. */
  get url(): string {
    if (!this.listening) throw new Error(`${this.fakeName} is not started`);
    return this.listening.url;
  }
}

/** Plain HTTP, for endpoints that are plain HTTP in Azure too (the App Service identity endpoint). */
export function listenHttp(handler: RequestListener, options: ListenOptions = {}): Promise<Listening> {
  return listen(createHttpServer(handler), "http", options);
}

function listen(server: Server, scheme: "http" | "https", options: ListenOptions): Promise<Listening> {
  const bind = options.bind ?? "127.0.0.1";
  const host = options.host ?? bind;
  // Keep-alive sockets from SDK agents must not keep a stopped fake (or the test process) alive.
  server.keepAliveTimeout = 5_000;
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once("error", onError);
    server.listen(options.port ?? 0, bind, () => {
      server.off("error", onError);
      const port = (server.address() as AddressInfo).port;
      const hostPart = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
      resolve({
        url: `${scheme}://${hostPart}:${port}`,
        port,
        server,
        close: () =>
          new Promise<void>((done) => {
            if (!server.listening) return done();
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

/** Reads a request body as a string, refusing more than `limit` bytes. */
export async function readBody(req: IncomingMessage, limit = 1_000_000): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
    size += buf.length;
    if (size > limit) throw new Error("request body too large");
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Sends a JSON body with the given status and headers. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** The repository root: the nearest ancestor of the compiled file that holds package.json. */
export function repoRoot(fromUrl: string = import.meta.url): string {
  let dir = dirname(fileURLToPath(fromUrl));
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "dev", "loopback-dns.cjs"))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no repository root above ${fromUrl}`);
    dir = parent;
  }
}

/** The local test CA and server certificate (created on first use under `.cache/tls`). */
export function testCerts(): TestCerts {
  return ensureCerts(join(repoRoot(), ".cache", "tls"));
}

/** Makes every `*.localhost` name resolve to 127.0.0.1 in this process (idempotent). */
export function loadLoopbackDns(): void {
  createRequire(import.meta.url)(join(repoRoot(), "dev", "loopback-dns.cjs"));
}

/** Escapes text for HTML element content and double-quoted attribute values. */
export function escapeHtml(value: string): string {
  return value
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}
