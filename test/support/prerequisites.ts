import assert from "node:assert/strict";
import type { TestContext } from "node:test";

/** CI sets CI=true; there a missing tool is a failure, not a skip. */
export const IN_CI = /^(true|1)$/i.test(process.env.CI ?? "");

/**
 * For a test that needs something a contributor's machine may lack (the Bicep CLI, a
 * staged package): skips with the instructions, or fails under CI=true.
 */
export function missingPrerequisite(t: TestContext, instructions: string): void {
  if (IN_CI) assert.fail(`${instructions} (CI=true, so this is required)`);
  t.skip(instructions);
}
