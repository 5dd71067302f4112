/**
 * Storage queue triggers, run as the queue extension's listener runs them:
 * - it fetches up to `batchSize` messages, each leased for 10 minutes, and fetches the next
 *   batch once no more than `newBatchThreshold` are still running, so at most
 *   `batchSize + newBatchThreshold` messages of one function are in flight;
 * - the lease is renewed at half time while the invocation runs, so the message stays
 *   invisible however long it takes;
 * - success deletes the message; a failure makes it visible again after host.json
 *   `visibilityTimeout`, or moves it to `<queue>-poison` once its `dequeueCount` has
 *   reached `maxDequeueCount` (a message that arrives with a higher count goes there
 *   without running);
 * - when a poll finds nothing it waits, 100 ms at first and twice as long (with jitter)
 *   each empty poll after, up to `maxPollingInterval`.
 * The message text is base64-decoded (host.json `messageEncoding`) and handed over as a
 * string, which `@azure/functions` JSON-parses when it can; `dequeueCount` and the other
 * message properties travel in the trigger metadata.
 */
import { DefaultAzureCredential, ManagedIdentityCredential } from "@azure/identity";
import { type DequeuedMessageItem, type QueueClient, QueueServiceClient } from "@azure/storage-queue";
import { HostError } from "./core-module.js";
import { lookup, MIN_POLLING_INTERVAL_MS, type QueueOptions, resolveSettingRefs, type Settings } from "./host-config.js";
import { baseRequest, dotnetOffset, sysMetadata } from "./invoke.js";
import type { AppFunction } from "./load.js";
import type { RpcInvocationRequest } from "./rpc.js";

/** How long the listener leases a message it hands to a function (the extension's fixed 10 minutes). */
export const MESSAGE_LEASE_SECONDS = 600;

export interface QueueMessage {
  messageId: string;
  popReceipt: string;
  dequeueCount: number;
  insertedOn: Date;
  expiresOn: Date;
  nextVisibleOn: Date;
  /** The message body after decoding: what the function receives. */
  text: string;
}

export type QueueEvent =
  | { type: "received"; functionName: string; messageId: string; dequeueCount: number }
  | { type: "renewed"; functionName: string; messageId: string; nextVisibleOn: Date }
  | { type: "deleted"; functionName: string; messageId: string }
  | { type: "released"; functionName: string; messageId: string; nextVisibleOn?: Date }
  | { type: "poisoned"; functionName: string; messageId: string; poisonQueue: string; reason: "maxDequeueCount" | "decoding" }
  | { type: "waiting"; functionName: string; inFlight: number };

/** Timers the lease renewal uses (a test can fire them by hand). */
export interface Scheduler {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realScheduler: Scheduler = {
  setTimeout: (callback, ms) => {
    const t = setTimeout(callback, ms);
    t.unref();
    return t;
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface QueueListenerDeps {
  options: QueueOptions;
  /** Runs the function for one message; rejects when the invocation failed. */
  invoke(request: RpcInvocationRequest): Promise<void>;
  events(event: QueueEvent): void;
  warn(message: string): void;
  scheduler: Scheduler;
  /** Lease while an invocation runs, in seconds (default 600). */
  leaseSeconds?: number;
}

/** The queue service client for a trigger's `connection`, resolved from the app settings as the host does. */
export function queueServiceFor(connection: string | undefined, settings: Settings, functionName: string): QueueServiceClient {
  const name = connection?.trim() || "AzureWebJobsStorage";
  const value = lookup(settings, name) ?? lookup(settings, `AzureWebJobs${name}`);
  if (value) {
    try {
      return QueueServiceClient.fromConnectionString(value);
    } catch {
      throw new HostError(`The connection '${name}' of queue function '${functionName}' is not a valid storage connection string.`);
    }
  }
  const uri = lookup(settings, `${name}__queueServiceUri`) ?? lookup(settings, `${name}__serviceUri`);
  if (uri) {
    const clientId = lookup(settings, `${name}__clientId`);
    return new QueueServiceClient(uri, clientId ? new ManagedIdentityCredential({ clientId }) : new DefaultAzureCredential());
  }
  throw new HostError(
    `The queue function '${functionName}' uses connection '${name}', but neither the app setting ${name} ` +
      `(a connection string) nor ${name}__queueServiceUri is set.`,
  );
}

/** The invocation request for one queue message, shaped as the host sends it. */
export function queueRequest(fn: AppFunction, message: QueueMessage, now = new Date()): RpcInvocationRequest {
  return {
    ...baseRequest(fn),
    inputData: [{ name: fn.triggerName, data: { string: message.text } }],
    triggerMetadata: {
      QueueTrigger: { string: message.text },
      // The host serializes non-string binding data as JSON: numbers and DateTimeOffsets.
      DequeueCount: { json: String(message.dequeueCount) },
      ExpirationTime: { json: JSON.stringify(dotnetOffset(message.expiresOn)) },
      Id: { string: message.messageId },
      InsertionTime: { json: JSON.stringify(dotnetOffset(message.insertedOn)) },
      NextVisibleTime: { json: JSON.stringify(dotnetOffset(message.nextVisibleOn)) },
      PopReceipt: { string: message.popReceipt },
      sys: sysMetadata(fn, now),
    },
  };
}

/** A strict base64 decode (the queue extension rejects what is not base64). */
export function decodeBase64(text: string): string | undefined {
  const compact = text.replace(/\s+/g, "");
  if (compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) return undefined;
  return Buffer.from(compact, "base64").toString("utf8");
}

/** The listener of one queue-triggered function. */
export class QueueListener {
  readonly queueName: string;
  readonly poisonQueueName: string;
  readonly queue: QueueClient;
  readonly poisonQueue: QueueClient;
  readonly #processing = new Set<Promise<void>>();
  #exists = false;
  #stopped = true;
  #loop?: Promise<void>;
  #wake?: () => void;
  #delayMs = MIN_POLLING_INTERVAL_MS;

  constructor(
    readonly fn: AppFunction,
    service: QueueServiceClient,
    settings: Settings,
    private readonly deps: QueueListenerDeps,
  ) {
    const raw = fn.trigger.queueName;
    if (typeof raw !== "string" || raw === "") throw new HostError(`Queue function '${fn.name}' has no queueName.`);
    this.queueName = resolveSettingRefs(raw, settings, `The queueName of queue function '${fn.name}'`).toLowerCase();
    this.poisonQueueName = `${this.queueName}-poison`;
    this.queue = service.getQueueClient(this.queueName);
    this.poisonQueue = service.getQueueClient(this.poisonQueueName);
  }

  get inFlight(): number {
    return this.#processing.size;
  }

  /** Polls in the background until stop(). */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#loop = this.#run();
  }

  /** Stops polling and waits for the invocations still running. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    this.#loop = undefined;
    await Promise.allSettled([...this.#processing]);
  }

  /**
   * One fetch of the listener: receives up to batchSize messages and starts processing
   * them (without waiting). Returns how many it received; 0 also when the queue does not exist.
   */
  async pollOnce(): Promise<number> {
    if (!this.#exists) {
      this.#exists = await this.queue.exists();
      if (!this.#exists) return 0;
    }
    let items: DequeuedMessageItem[];
    try {
      const response = await this.queue.receiveMessages({
        numberOfMessages: this.deps.options.batchSize,
        visibilityTimeout: this.deps.leaseSeconds ?? MESSAGE_LEASE_SECONDS,
      });
      items = response.receivedMessageItems;
    } catch (err) {
      // The queue may have been deleted: check again next time, as the listener does.
      this.#exists = false;
      if ((err as { statusCode?: number }).statusCode === 404) return 0;
      throw err;
    }
    for (const item of items) {
      const task = this.#process(item).catch((err: unknown) => {
        this.deps.warn(`Queue listener of '${this.fn.name}' failed on message ${item.messageId}: ${(err as Error).message}`);
      });
      this.#processing.add(task);
      void task.finally(() => this.#processing.delete(task));
    }
    return items.length;
  }

  /** Waits until at most newBatchThreshold messages are still running. */
  async waitForBatchThreshold(): Promise<void> {
    while (this.#processing.size > this.deps.options.newBatchThreshold) {
      this.deps.events({ type: "waiting", functionName: this.fn.name, inFlight: this.#processing.size });
      await Promise.race(this.#processing);
    }
  }

  /**
   * Processes messages until the queue has none visible and none is running, with the
   * listener's in-flight limit but without its polling delays. Messages that fail and
   * become visible again within the drain run again, so a drain ends once every message
   * succeeded, was poisoned, or waits out its visibilityTimeout.
   */
  async drain(): Promise<void> {
    for (;;) {
      const found = await this.pollOnce();
      if (found > 0) {
        await this.waitForBatchThreshold();
        continue;
      }
      if (this.#processing.size === 0) return;
      await Promise.race(this.#processing);
    }
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      let found = 0;
      try {
        found = await this.pollOnce();
      } catch (err) {
        this.deps.warn(`Polling queue '${this.queueName}' for '${this.fn.name}' failed: ${(err as Error).message}`);
      }
      if (found > 0) {
        this.#delayMs = MIN_POLLING_INTERVAL_MS;
        await this.waitForBatchThreshold();
        continue;
      }
      await this.#sleep(this.#nextDelay());
    }
  }

  /** Randomized exponential backoff between MIN_POLLING_INTERVAL_MS and maxPollingInterval. */
  #nextDelay(): number {
    const max = this.deps.options.maxPollingIntervalMs;
    const current = Math.min(this.#delayMs, max);
    this.#delayMs = Math.min(max, this.#delayMs * 2);
    return Math.max(MIN_POLLING_INTERVAL_MS, Math.round(current * (0.8 + Math.random() * 0.4)));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  async #process(item: DequeuedMessageItem): Promise<void> {
    const { options, events } = this.deps;
    const name = this.fn.name;
    events({ type: "received", functionName: name, messageId: item.messageId, dequeueCount: item.dequeueCount });
    if (item.dequeueCount > options.maxDequeueCount) {
      await this.#poison(item, item.popReceipt, "maxDequeueCount");
      return;
    }
    const text = options.messageEncoding === "base64" ? decodeBase64(item.messageText) : item.messageText;
    if (text === undefined) {
      this.deps.warn(`Message ${item.messageId} of queue '${this.queueName}' is not valid base64 (host.json messageEncoding).`);
      await this.#poison(item, item.popReceipt, "decoding");
      return;
    }
    const lease = this.#renewLease(item);
    let failed = false;
    try {
      await this.deps.invoke(queueRequest(this.fn, { ...item, text }));
    } catch {
      failed = true;
    }
    const popReceipt = await lease.stop();
    if (!failed) {
      await ignoreGone(this.queue.deleteMessage(item.messageId, popReceipt));
      events({ type: "deleted", functionName: name, messageId: item.messageId });
    } else if (item.dequeueCount >= options.maxDequeueCount) {
      await this.#poison(item, popReceipt, "maxDequeueCount");
    } else {
      const updated = await ignoreGone(
        this.queue.updateMessage(item.messageId, popReceipt, undefined, Math.round(options.visibilityTimeoutMs / 1000)),
      );
      events({
        type: "released",
        functionName: name,
        messageId: item.messageId,
        ...(updated?.nextVisibleOn ? { nextVisibleOn: updated.nextVisibleOn } : {}),
      });
    }
  }

  /** Keeps the message invisible while it runs: renews the lease at half time. Returns the latest pop receipt. */
  #renewLease(item: DequeuedMessageItem): { stop(): Promise<string> } {
    const { scheduler } = this.deps;
    const leaseSeconds = this.deps.leaseSeconds ?? MESSAGE_LEASE_SECONDS;
    let popReceipt = item.popReceipt;
    let stopped = false;
    let renewing: Promise<void> = Promise.resolve();
    let handle: unknown;
    const arm = () => {
      handle = scheduler.setTimeout(() => {
        renewing = (async () => {
          if (stopped) return;
          try {
            const updated = await this.queue.updateMessage(item.messageId, popReceipt, undefined, leaseSeconds);
            if (updated.popReceipt) popReceipt = updated.popReceipt;
            this.deps.events({
              type: "renewed",
              functionName: this.fn.name,
              messageId: item.messageId,
              nextVisibleOn: updated.nextVisibleOn ?? new Date(),
            });
          } catch (err) {
            this.deps.warn(`Renewing the lease of message ${item.messageId} failed: ${(err as Error).message}`);
          }
          if (!stopped) arm();
        })();
      }, (leaseSeconds * 1000) / 2);
    };
    arm();
    return {
      async stop() {
        stopped = true;
        scheduler.clearTimeout(handle);
        await renewing;
        return popReceipt;
      },
    };
  }

  async #poison(item: DequeuedMessageItem, popReceipt: string, reason: "maxDequeueCount" | "decoding"): Promise<void> {
    if (reason === "maxDequeueCount") {
      this.deps.warn(
        `Message ${item.messageId} has reached MaxDequeueCount of ${this.deps.options.maxDequeueCount}. ` +
          `Moving message to queue '${this.poisonQueueName}'.`,
      );
    }
    await this.poisonQueue.createIfNotExists();
    // The body as stored, still encoded, like the extension's copy.
    await this.poisonQueue.sendMessage(item.messageText);
    await ignoreGone(this.queue.deleteMessage(item.messageId, popReceipt));
    this.deps.events({ type: "poisoned", functionName: this.fn.name, messageId: item.messageId, poisonQueue: this.poisonQueueName, reason });
  }
}

/** A delete or update whose message or pop receipt is gone (someone else took over) is not an error. */
async function ignoreGone<T>(operation: Promise<T>): Promise<T | undefined> {
  try {
    return await operation;
  } catch (err) {
    const status = (err as { statusCode?: number }).statusCode;
    if (status === 404 || status === 400) return undefined;
    throw err;
  }
}
