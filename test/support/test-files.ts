import { existsSync, globSync } from "node:fs";
import { join, resolve } from "node:path";
import { repoRoot } from "../../simulators/https.js";

/**
 * Which compiled test files `npm test` runs, and the floor that keeps it honest: if the
 * build ever stops emitting dist/test (or most of it), the runner fails instead of
 * reporting "tests 0" as a pass. Raise MIN_TEST_FILES when you add test files.
 */
export const MIN_TEST_FILES = 37;
export const DEFAULT_GLOB = "dist/test/**/*.test.js";
/**
 * Run after every other file: they read what the others captured (test/alert-rules.test.ts
 * checks the log lines of every test run against the alert rules).
 */
export const LAST = ["alert-rules.test.js"];

/** Where the harness saves the log lines the alert rules read (see test/support/leaks.ts). */
export const CAPTURE_DIR = join(repoRoot(), ".cache", "test-logs");

/** Resolves paths and globs relative to `cwd` to absolute paths; throws naming what matched nothing. */
export function resolveTestFiles(cwd: string, patterns: string[]): string[] {
  const files = new Set<string>();
  for (const pattern of patterns) {
    const matches = /[*?[{]/.test(pattern) ? globSync(pattern, { cwd }) : existsSync(resolve(cwd, pattern)) ? [pattern] : [];
    if (matches.length === 0) throw new Error(`No test files match ${pattern}`);
    for (const m of matches) files.add(resolve(cwd, m));
  }
  return [...files].sort();
}

/** The problem with a full run's file list, or undefined when it is big enough. */
export function floorProblem(files: string[], floor = MIN_TEST_FILES): string | undefined {
  if (files.length === 0) return `No test files found (${DEFAULT_GLOB}); did the build run?`;
  if (files.length < floor) {
    return `Only ${files.length} test files found (${DEFAULT_GLOB}), fewer than the floor of ${floor} (test/support/test-files.ts)`;
  }
  return undefined;
}

/** Splits a list into the files run first (concurrently) and the LAST ones run afterwards. */
export function phases(files: string[]): [string[], string[]] {
  const isLast = (f: string) => LAST.some((name) => f.endsWith(`/${name}`) || f === name);
  return [files.filter((f) => !isLast(f)), files.filter(isLast)];
}
