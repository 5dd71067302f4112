import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { repoRoot } from "../simulators/https.js";

/**
 * host.json's queue settings and function timeout are part of the pull design (README,
 * "Pulling"): a failing message is retried 5 times, then parked in tenant-pulls-poison.
 * How functionTimeout relates to the pull lease is checked in registrations.test.ts.
 */

interface HostJson {
  functionTimeout: string;
  extensions: { queues: { batchSize: number; newBatchThreshold: number; maxDequeueCount: number; visibilityTimeout: string } };
}

const host = JSON.parse(readFileSync(`${repoRoot()}/host.json`, "utf8")) as HostJson;
const readme = readFileSync(`${repoRoot()}/README.md`, "utf8");

/** "hh:mm:ss" -> milliseconds. */
function timespan(value: string): number {
  const match = /^(\d{2}):(\d{2}):(\d{2})$/.exec(value);
  assert.ok(match, `${value} is hh:mm:ss`);
  return ((Number(match[1]) * 60 + Number(match[2])) * 60 + Number(match[3])) * 1000;
}

describe("host.json", () => {
  it("retries a failing pull message 5 times before the poison queue, as the README says", () => {
    assert.equal(host.extensions.queues.maxDequeueCount, 5);
    assert.match(readme, /goes to `tenant-pulls-poison` after 5 tries/);
  });

  it("runs at most 6 pulls at once per instance and makes a failed message visible again after 30 s", () => {
    assert.equal(host.extensions.queues.batchSize, 4);
    assert.equal(host.extensions.queues.newBatchThreshold, 2);
    assert.equal(timespan(host.extensions.queues.visibilityTimeout), 30_000);
  });
});
