/**
 * `npm test` entry point: makes sure the local test CA exists, then runs node's test
 * runner over the compiled tests with NODE_EXTRA_CA_CERTS pointing at that CA, so the
 * app's HTTPS clients trust the local fakes without any switch in the app code.
 * Pass file paths or globs to run a subset: `node dist/test/support/run-tests.js dist/test/config.test.js`.
 */
import { spawn } from "node:child_process";
import { repoRoot, testCerts } from "../../simulators/https.js";

const root = repoRoot();
const certs = testCerts();
const files = process.argv.slice(2);
const args = [
  "--test",
  "--test-reporter=spec",
  `--test-concurrency=${process.env.TEST_CONCURRENCY ?? "2"}`,
  "--test-timeout=180000",
  ...(files.length > 0 ? files : ["dist/test/**/*.test.js"]),
];
const child = spawn(process.execPath, args, {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, NODE_EXTRA_CA_CERTS: certs.caPath },
});
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
