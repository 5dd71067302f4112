import { existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { repoRoot } from "../../simulators/https.js";

/**
 * Chromium through playwright-core, for the console tests: Debian's /usr/bin/chromium (no
 * browser download). When it (or playwright-core) is missing, `launchChromium` answers why,
 * and the test skips. Screenshots go to .cache/artifacts/ (the tests' artifacts).
 */

export const CHROMIUM = "/usr/bin/chromium";
export const ARTIFACTS = join(repoRoot(), ".cache", "artifacts");

/** The little of playwright-core's API the tests use, typed loosely (compiling needs no playwright). */
export interface Browser {
  newContext(options?: Record<string, unknown>): Promise<BrowserContext>;
  close(): Promise<void>;
}

export interface BrowserContext {
  newPage(): Promise<Page>;
  grantPermissions(permissions: string[], options?: { origin?: string }): Promise<void>;
  close(): Promise<void>;
}

export interface Locator {
  click(options?: Record<string, unknown>): Promise<void>;
  fill(value: string): Promise<void>;
  check(): Promise<void>;
  textContent(): Promise<string | null>;
  inputValue(): Promise<string>;
  isVisible(): Promise<boolean>;
  isDisabled(): Promise<boolean>;
  count(): Promise<number>;
  waitFor(options?: { state?: string; timeout?: number }): Promise<void>;
  allTextContents(): Promise<string[]>;
  first(): Locator;
}

export interface Page {
  goto(url: string): Promise<unknown>;
  waitForURL(url: RegExp | string, options?: Record<string, unknown>): Promise<void>;
  waitForSelector(selector: string, options?: Record<string, unknown>): Promise<unknown>;
  locator(selector: string): Locator;
  getByRole(role: string, options?: Record<string, unknown>): Locator;
  click(selector: string): Promise<void>;
  fill(selector: string, value: string): Promise<void>;
  check(selector: string): Promise<void>;
  selectOption(selector: string, value: string): Promise<string[]>;
  textContent(selector: string): Promise<string | null>;
  evaluate<T>(fn: string | (() => T)): Promise<T>;
  screenshot(options: { path: string; fullPage?: boolean }): Promise<unknown>;
  setViewportSize(size: { width: number; height: number }): Promise<void>;
  on(event: "request", listener: (request: { url(): string }) => void): void;
  on(event: "console", listener: (message: { type(): string; text(): string }) => void): void;
  url(): string;
  close(): Promise<void>;
}

interface PlaywrightChromium {
  launch(options: Record<string, unknown>): Promise<Browser>;
}

export async function launchChromium(): Promise<Browser | string> {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is not installed`;
  // A variable specifier: compiling does not need playwright-core, only running this part does.
  const specifier = "playwright-core";
  let chromium: PlaywrightChromium;
  try {
    chromium = ((await import(specifier)) as { chromium: PlaywrightChromium }).chromium;
  } catch {
    return "playwright-core is not installed";
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

export function artifact(name: string): string {
  mkdirSync(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Opens the console, clicks Sign in, picks the user on the (simulated) Entra page, accepts,
 * and waits for the console to show the signed-in user.
 */
export async function signIn(page: Page, consoleUrl: string, user: { tenantId: string; oid: string; upn: string }): Promise<void> {
  await page.goto(consoleUrl);
  await page.locator("#sign-in").click();
  await page.waitForSelector("button[value=accept]");
  await page.check(`input[name=user][value="${user.tenantId}|${user.oid}"]`);
  await page.click("button[value=accept]");
  await page.waitForSelector("#role", { timeout: 30_000 });
}
