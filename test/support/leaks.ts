import { appendFileSync, mkdirSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { basename, join } from "node:path";
import { after } from "node:test";
import { CAPTURE_DIR } from "./test-files.js";

/**
 * ONE leak check for the whole suite. Every test file that starts the harness gets it:
 *
 * - secrets: everything the simulators issued or received (`secretsSeen()` of the fake
 *   Entra, Key Vault and managed identity: state, nonce, codes, PKCE verifiers, access,
 *   refresh and id tokens, client secrets, managed-identity tokens, secret values written
 *   to the vault) plus every consent link secret the app handed out;
 * - haystacks: every log line, every response (body and headers, gzip'd bodies unpacked) and
 *   the message, stack and causes of every error a handler threw (what the Functions host
 *   would log), and what the harness adds at the end (the audit trail's rows);
 * - allowed exceptions, by design: the consent link in POST /api/tenants' `consentUrl`,
 *   and the Entra authorize URL (state, nonce) in consent/start's 302 Location.
 *
 * It also checks that every response carries `X-Content-Type-Options: nosniff` and every
 * HTML page `Strict-Transport-Security`, and it saves the log lines the Azure Monitor
 * alert rules read (pull.*, sweep.*, tenant.status, tenant.state) for
 * test/alert-rules.test.ts.
 *
 * The check runs in an `after` hook registered when this module is imported (by
 * harness.ts, so at the test file's top level): a hook registered inside a `before`
 * would run right after that `before`. When the check fails it stops the harnesses first,
 * because node:test skips the file's remaining `after` hooks (its own `stop`).
 */

export interface SecretSource {
  secretsSeen(): string[];
}

export interface HttpLike {
  status: number;
  headers: Record<string, string>;
  text: string;
  json: unknown;
  bytes?: Buffer;
}

/** What watch() needs of the harness: the fakes, the log sink, and the two ways to call the app. */
export interface Watchable {
  entra: SecretSource;
  vault: SecretSource;
  identity: SecretSource;
  logs: string[];
  http(name: string, call: never): Promise<HttpLike>;
  trigger(name: string, input: unknown): Promise<void>;
  stop(): Promise<void>;
  /** More to search, read when the check runs (e.g. rows the app stored). */
  storedHaystacks?(): Promise<Seen[]>;
}

export interface Seen {
  where: string;
  text: string;
}

const MIN_SECRET_LENGTH = 8;

/** The log lines the alert rules read: `pull.*`, `sweep.*`, `tenant.status`, `tenant.state`. */
export const RULE_LINE = /^(pull\.|sweep\.|tenant\.status |tenant\.state )/;

/** A log line as the host stores it in `message`: without the harness's `[level] ` prefix. */
export function messageOf(line: string): string {
  return line.replace(/^\[\w+\] /, "");
}

/** What one test file recorded, and the checks over it. */
export class LeakCheck {
  readonly sources: SecretSource[] = [];
  readonly extraSecrets = new Set<string>();
  readonly logSinks: string[][] = [];
  readonly seen: Seen[] = [];
  readonly headerProblems: string[] = [];
  readonly cleanups: (() => Promise<void>)[] = [];
  readonly collectors: (() => Promise<Seen[]>)[] = [];

  /** Wraps the harness so that every response and thrown error is recorded. */
  watch<H extends Watchable>(harness: H): H {
    this.sources.push(harness.entra, harness.vault, harness.identity);
    this.logSinks.push(harness.logs);
    this.cleanups.push(() => harness.stop());
    if (harness.storedHaystacks) this.collectors.push(harness.storedHaystacks.bind(harness));
    const http = harness.http.bind(harness) as (name: string, call: unknown) => Promise<HttpLike>;
    const trigger = harness.trigger.bind(harness);
    (harness as { http: unknown }).http = async (name: string, call: unknown) => {
      try {
        const result = await http(name, call);
        this.recordResponse(name, result);
        return result;
      } catch (err) {
        this.recordThrown(name, err);
        throw err;
      }
    };
    harness.trigger = async (name, input) => {
      try {
        await trigger(name, input);
      } catch (err) {
        this.recordThrown(name, err);
        throw err;
      }
    };
    return harness;
  }

  /** Records one response: its body and headers are checked, minus the two allowed places. */
  recordResponse(name: string, result: HttpLike): void {
    const headers = { ...result.headers };
    let body = result.text;
    if (name === "tenants-create") {
      const consentUrl = (result.json as { consentUrl?: unknown } | undefined)?.consentUrl;
      if (typeof consentUrl === "string") {
        const link = URL.canParse(consentUrl) ? new URL(consentUrl).searchParams.get("link") : null;
        if (link) this.extraSecrets.add(link);
        body = body.split(JSON.stringify(consentUrl).slice(1, -1)).join("<consentUrl>");
      }
    }
    if (name === "consent-start" && result.status === 302) delete headers.location;
    if (/gzip/i.test(headers["content-encoding"] ?? "") && result.bytes) {
      try {
        body = gunzipSync(result.bytes).toString("utf8");
      } catch {
        // a cut-off stream: the raw text stays the haystack
      }
    }
    this.seen.push({ where: `response of ${name}`, text: `${body}\n${JSON.stringify(headers)}` });
    if (headers["x-content-type-options"] !== "nosniff") this.headerProblems.push(`${name} answered ${result.status} without nosniff`);
    if (/text\/html/.test(headers["content-type"] ?? "") && !headers["strict-transport-security"]) {
      this.headerProblems.push(`${name} answered a page (${result.status}) without Strict-Transport-Security`);
    }
  }

  /** Records what a handler threw: message, stack and causes, as the host would log them. */
  recordThrown(name: string, err: unknown): void {
    const parts: string[] = [];
    let current: unknown = err;
    for (let depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
      if (current instanceof Error) {
        parts.push(current.message, current.stack ?? "");
        current = current.cause;
      } else {
        parts.push(String(current));
        current = undefined;
      }
    }
    this.seen.push({ where: `error thrown by ${name}`, text: parts.join("\n") });
  }

  /** Every secret known so far. */
  knownSecrets(): Set<string> {
    const all = new Set<string>();
    for (const source of this.sources) for (const s of source.secretsSeen()) if (s.length >= MIN_SECRET_LENGTH) all.add(s);
    for (const s of this.extraSecrets) all.add(s);
    return all;
  }

  /** Everything recorded so far: log lines, responses, thrown errors. */
  haystacks(): Seen[] {
    const lines = this.logSinks.flatMap((sink) => sink.map((text) => ({ where: "log", text })));
    return [...lines, ...this.seen];
  }

  /** Leaks, then missing headers. */
  problems(): string[] {
    return [...findLeaks(this.knownSecrets(), this.haystacks()), ...this.headerProblems];
  }

  ruleLines(): string[] {
    return this.logSinks.flatMap((sink) => sink.map(messageOf)).filter((line) => RULE_LINE.test(line));
  }
}

/** Finds secrets in haystacks; returns one line per leak (the secret itself is not repeated). */
export function findLeaks(secrets: Iterable<string>, haystacks: Seen[]): string[] {
  const leaks: string[] = [];
  const list = [...secrets];
  for (const { where, text } of haystacks) {
    for (const secret of list) {
      const at = text.indexOf(secret);
      if (at >= 0) {
        const context = `${text.slice(Math.max(0, at - 60), at)}<SECRET ${secret.length} chars>`;
        leaks.push(`a secret leaked into the ${where}: ...${context.replace(/\s+/g, " ")}`);
      }
    }
  }
  return leaks;
}

/** This test file's check, fed by harness.ts. */
const file = new LeakCheck();

export function watch<H extends Watchable>(harness: H): H {
  return file.watch(harness);
}

/**
 * Adds more fakes (their `secretsSeen()`) and log sinks to this file's check, for tests
 * that drive a module directly against simulators rather than through the harness.
 * `stop` shuts down what the file started when the check fails (node:test then skips the
 * file's own `after` hooks, and open servers would keep it running until the timeout).
 */
export function watchParts(parts: { sources?: SecretSource[]; logs?: string[][]; stop?: () => Promise<void> }): void {
  file.sources.push(...(parts.sources ?? []));
  file.logSinks.push(...(parts.logs ?? []));
  if (parts.stop) file.cleanups.push(parts.stop);
}

/** Adds text the app produced outside a handler (an error it threw, a report it returned) to this file's check. */
export function recordSeen(where: string, text: string): void {
  file.seen.push({ where, text });
}

/** Every secret this file's check knows so far. */
export function knownSecrets(): Set<string> {
  return file.knownSecrets();
}

function saveRuleLines(lines: string[]): void {
  if (lines.length === 0) return;
  mkdirSync(CAPTURE_DIR, { recursive: true });
  const name = `${basename(process.argv[1] ?? "test").replace(/\W+/g, "-")}-${process.pid}.log`;
  appendFileSync(join(CAPTURE_DIR, name), `${lines.join("\n")}\n`);
}

const underTestRunner = process.env.NODE_TEST_CONTEXT !== undefined || /\.test\.[cm]?js$/.test(process.argv[1] ?? "");
if (underTestRunner) {
  after(async () => {
    if (file.logSinks.length === 0 && file.seen.length === 0) return;
    for (const collect of file.collectors) file.seen.push(...(await collect().catch(() => [])));
    saveRuleLines(file.ruleLines());
    const found = file.problems();
    if (found.length === 0) return;
    for (const cleanup of file.cleanups) await cleanup().catch(() => undefined);
    throw new Error(`Leak check failed (${found.length}):\n${found.slice(0, 20).join("\n")}`);
  });
}
