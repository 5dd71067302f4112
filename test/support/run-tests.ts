/**
 * `npm test` entry point: makes sure the local test CA exists, then runs node's test
 * runner over the compiled tests with NODE_EXTRA_CA_CERTS pointing at that CA, so the
 * app's HTTPS clients trust the local fakes without any switch in the app code.
 *
 * - A full run (no arguments) needs at least MIN_TEST_FILES files (test/support/test-files.ts).
 * - Files named in LAST (the alert-rule check) run after all the others, because they read
 *   the log lines the others captured into .cache/test-logs (cleared at the start).
 *
 * Pass file paths or globs to run a subset: `node dist/test/support/run-tests.js dist/test/config.test.js`.
 */
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { repoRoot, testCerts } from "../../simulators/https.js";
import { CAPTURE_DIR, DEFAULT_GLOB, floorProblem, phases, resolveTestFiles } from "./test-files.js";

const root = repoRoot();
const certs = testCerts();
const requested = process.argv.slice(2);

function run(files: string[]): Promise<number> {
  if (files.length === 0) return Promise.resolve(0);
  const args = [
    "--test",
    "--test-reporter=spec",
    `--test-concurrency=${process.env.TEST_CONCURRENCY ?? "2"}`,
    "--test-timeout=300000",
    ...files,
  ];
  const child = spawn(process.execPath, args, {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, NODE_EXTRA_CA_CERTS: certs.caPath },
  });
  return new Promise((resolve) => child.on("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}

async function main(): Promise<number> {
  let files: string[];
  try {
    files = requested.length > 0 ? resolveTestFiles(process.cwd(), requested) : resolveTestFiles(root, [DEFAULT_GLOB]);
  } catch (err) {
    console.error(`run-tests: ${(err as Error).message}`);
    return 1;
  }
  const problem = requested.length === 0 ? floorProblem(files) : undefined;
  if (problem) {
    console.error(`run-tests: ${problem}`);
    return 1;
  }
  rmSync(CAPTURE_DIR, { recursive: true, force: true });
  const [first, last] = phases(files);
  const firstCode = await run(first);
  const lastCode = await run(last);
  return firstCode || lastCode;
}

main().then((code) => process.exit(code));
