/**
 * The dev host: a local stand-in for the Azure Functions host and its Node.js worker, for
 * machines without Azure Functions Core Tools. It loads the app through `@azure/functions`
 * (dev/host/load.ts), serves its HTTP triggers, fires its timers and drains its storage
 * queues the way the host does, and invokes every function through the programming model
 * with the invocation data the host would send. Usable in-process (`startHost`, as the
 * tests and the sandbox walkthrough do) and as a command (dev/host/cli.ts).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { HostError, worker } from "./core-module.js";
import { type HostConfig, readHostConfig, type Settings } from "./host-config.js";
import { compileRoute, type HttpRoute, sortRoutes } from "./http-routes.js";
import { createHttpHandler } from "./http-server.js";
import { type InvocationFailure, type InvocationOutcome, invoke, type LogEntry, type LogSink, toFailure } from "./invoke.js";
import { type AppFunction, type LoadedApp, loadApp, type TriggerKind } from "./load.js";
import { isFunctionKey, newFunctionKey } from "./keys.js";
import { consoleSink } from "./log.js";
import { type QueueEvent, QueueListener, queueRequest, queueServiceFor, realScheduler, type Scheduler } from "./queues.js";
import type { RpcInvocationRequest } from "./rpc.js";
import { parseSchedule, TimerRunner, timerInfo, timerRequest } from "./timers.js";

export type { LogEntry, LogSink } from "./invoke.js";
export { newFunctionKey } from "./keys.js";
export type { QueueEvent, Scheduler } from "./queues.js";

export interface HostOptions {
  /** The app's folder: package.json (main), host.json. Default: the current directory. */
  root?: string;
  /** The app settings (resolve %NAME%, storage connections, DEV_FUNCTION_KEY). Default: process.env. */
  settings?: Settings;
  /** HTTP port; 0 picks a free one. Default 7071. */
  port?: number;
  /** The function key of function-level routes. Default: DEV_FUNCTION_KEY, else a random one. */
  key?: string;
  /** `auto` (default) fires timers on their schedule; `manual` only through runTimer(). */
  timers?: "auto" | "manual";
  /** `auto` (default) polls the queues; `manual` only through pollOnce() and drain(). */
  queues?: "auto" | "manual";
  /** Where log lines go. Default: the console, filtered by host.json logging.logLevel. */
  log?: LogSink;
  /** Timers of the queue lease renewal. Default: real timers. */
  scheduler?: Scheduler;
  /** How long a running message stays leased (renewed at half time). Default 600 s, as the host. */
  leaseSeconds?: number;
}

export interface InvocationEvent {
  functionName: string;
  invocationId: string;
  trigger: TriggerKind;
  status: "succeeded" | "failed";
  durationMs: number;
  /** What a failed invocation reported to the host: the error's message and stack. */
  failure?: InvocationFailure;
}

export interface HostRoute {
  functionName: string;
  methods: string[] | undefined;
  authLevel: HttpRoute["authLevel"];
  /** `/api/tenants/{tenantId}` */
  path: string;
}

export interface Host {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  key: string;
  config: HostConfig;
  app: LoadedApp;
  routes: HostRoute[];
  /** True when the app enabled HTTP streaming (`app.setup({ enableHttpStream: true })`). */
  streaming: boolean;
  /** Functions this host cannot run, and why (also logged at start). */
  errors: Map<string, string>;
  /** `invocation` (InvocationEvent) after each invocation; `queue` (QueueEvent) for each message step. */
  events: EventEmitter<{ invocation: [InvocationEvent]; queue: [QueueEvent] }>;
  /**
   * Invokes a timer or queue function now with the data the host would send: for a timer,
   * its TimerInfo (`input.isPastDue` is honoured); for a queue function, a message whose
   * text is `input` (a string as is, anything else as JSON). Rejects when it fails.
   */
  invoke(name: string, input: unknown): Promise<void>;
  /** Fires a timer now, as the Functions admin API does (the schedule status moves on). Rejects when it fails. */
  runTimer(name: string): Promise<void>;
  /** The next time a timer fires. */
  nextRun(name: string): Date | undefined;
  /** One fetch of a queue function's listener (all queue functions when no name); resolves to the count received. */
  pollQueue(name?: string): Promise<number>;
  /** Runs queue functions until their queues have no visible message and none is running. */
  drainQueues(name?: string): Promise<void>;
  /** The listener of one queue function. */
  queueListener(name: string): QueueListener;
  stop(): Promise<void>;
}

/** Loads the app (once per process) and starts serving it. */
export async function startHost(options: HostOptions = {}): Promise<Host> {
  const root = resolve(options.root ?? process.cwd());
  const settings: Settings = options.settings ?? process.env;
  const config = readHostConfig(root, settings);
  const log = options.log ?? consoleSink(config.logLevel);
  const hostLog = (level: LogEntry["level"], message: string, functionName?: string) =>
    log({ time: new Date(), level, category: "host", message, ...(functionName ? { functionName } : {}) });
  worker.systemLog = (level, category, message) => log({ time: new Date(), level, category, message });
  const app = await loadApp(root);

  const events = new EventEmitter<{ invocation: [InvocationEvent]; queue: [QueueEvent] }>();
  const errors = new Map<string, string>();
  for (const fn of app.functions) if (fn.error) errors.set(fn.name, fn.error);

  const run = async (fn: AppFunction, request: RpcInvocationRequest, reason: string): Promise<InvocationOutcome> => {
    const invocationId = request.invocationId!;
    const started = Date.now();
    hostLog("information", `Executing 'Functions.${fn.name}' (Reason='${reason}', Id=${invocationId})`, fn.name);
    const event = (status: InvocationEvent["status"], failure?: InvocationFailure): InvocationEvent => ({
      functionName: fn.name,
      invocationId,
      trigger: fn.kind!,
      status,
      durationMs: Date.now() - started,
      ...(failure ? { failure } : {}),
    });
    try {
      const outcome = await withTimeout(invoke(app, fn, request, log), config.functionTimeoutMs, () =>
        hostLog("error", `Timeout value of ${formatSpan(config.functionTimeoutMs!)} exceeded by function 'Functions.${fn.name}' (Id: '${invocationId}').`, fn.name),
      );
      const done = event("succeeded");
      hostLog("information", `Executed 'Functions.${fn.name}' (Succeeded, Id=${invocationId}, Duration=${done.durationMs}ms)`, fn.name);
      events.emit("invocation", done);
      return outcome;
    } catch (err) {
      // What the worker sends the host for a failed invocation, and what the host logs.
      const failure = toFailure(err);
      const done = event("failed", failure);
      hostLog(
        "error",
        `Executed 'Functions.${fn.name}' (Failed, Id=${invocationId}, Duration=${done.durationMs}ms) ` +
          `Exception: ${failure.message}${failure.stackTrace ? ` Stack: ${failure.stackTrace}` : ""}`,
        fn.name,
      );
      events.emit("invocation", done);
      throw err;
    }
  };

  const routes: HttpRoute[] = [];
  const timers = new Map<string, TimerRunner>();
  const queues = new Map<string, QueueListener>();
  for (const fn of app.functions) {
    if (fn.error) continue;
    try {
      if (fn.kind === "http") {
        routes.push(compileRoute(fn, config.routePrefix));
      } else if (fn.kind === "timer") {
        const schedule = parseSchedule(String(fn.trigger.schedule ?? ""), settings, fn.name);
        timers.set(
          fn.name,
          new TimerRunner(fn, schedule, async (info) => {
            await run(fn, timerRequest(fn, info), `Timer fired at ${new Date().toISOString()}`);
          }),
        );
      } else if (fn.kind === "queue") {
        const service = queueServiceFor(typeof fn.trigger.connection === "string" ? fn.trigger.connection : undefined, settings, fn.name);
        const listener: QueueListener = new QueueListener(fn, service, settings, {
          options: config.queues,
          invoke: async (request) => {
            await run(fn, request, `New queue message detected on '${listener.queueName}'.`);
          },
          events: (e) => events.emit("queue", e),
          warn: (message) => hostLog("warning", message, fn.name),
          scheduler: options.scheduler ?? realScheduler,
          ...(options.leaseSeconds ? { leaseSeconds: options.leaseSeconds } : {}),
        });
        queues.set(fn.name, listener);
      }
    } catch (err) {
      errors.set(fn.name, (err as Error).message);
    }
  }
  for (const [name, error] of errors) hostLog("error", `The '${name}' function is in error: ${error}`, name);
  const sortedRoutes = sortRoutes(routes);

  const key = options.key ?? (settings.DEV_FUNCTION_KEY?.trim() || newFunctionKey());
  if (!isFunctionKey(key)) throw new HostError("The function key (DEV_FUNCTION_KEY) must be 16 to 256 letters, digits, '-', '_' or '='.");
  const handler = createHttpHandler({
    routes: sortedRoutes,
    key,
    ...(app.httpUri ? { httpUri: app.httpUri } : {}),
    run,
    warn: (message) => hostLog("warning", message),
  });
  const servers = await listen(handler, options.port ?? 7071);
  const port = (servers[0]!.address() as AddressInfo).port;

  if (options.timers !== "manual") for (const runner of timers.values()) runner.start();
  if (options.queues !== "manual") for (const listener of queues.values()) listener.start();

  const need = <T>(map: Map<string, T>, name: string, what: string): T => {
    const found = map.get(name);
    if (found) return found;
    const error = errors.get(name);
    throw new HostError(error ? `Function '${name}' is in error: ${error}` : `No ${what} function named '${name}'.`);
  };
  const selected = (name?: string) => (name === undefined ? [...queues.values()] : [need(queues, name, "queue")]);
  let stopped = false;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    key,
    config,
    app,
    routes: sortedRoutes.map((r) => ({ functionName: r.fn.name, methods: r.methods, authLevel: r.authLevel, path: r.path })),
    streaming: app.httpUri !== undefined,
    errors,
    events,
    async invoke(name, input) {
      const fn = app.byName.get(name);
      if (fn?.kind === "timer") {
        const runner = need(timers, name, "timer");
        const isPastDue = typeof input === "object" && input !== null && (input as { isPastDue?: unknown }).isPastDue === true;
        await runner.fire(isPastDue, true);
      } else if (fn?.kind === "queue") {
        need(queues, name, "queue");
        await run(fn, triggerRequest(fn, input), "This function was programmatically called via the host APIs.");
      } else {
        throw new HostError(`No timer or queue function named '${name}'.`);
      }
    },
    runTimer: (name) => need(timers, name, "timer").fire(false, true),
    nextRun: (name) => timers.get(name)?.status.next,
    async pollQueue(name) {
      let count = 0;
      for (const listener of selected(name)) count += await listener.pollOnce();
      return count;
    },
    async drainQueues(name) {
      await Promise.all(selected(name).map((l) => l.drain()));
    },
    queueListener: (name) => need(queues, name, "queue"),
    async stop() {
      if (stopped) return;
      stopped = true;
      await Promise.all([...timers.values()].map((t) => t.stop()));
      await Promise.all([...queues.values()].map((q) => q.stop()));
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((done) => {
              server.close(() => done());
              server.closeAllConnections();
            }),
        ),
      );
    },
  };
}

/**
 * The invocation request a timer or queue function gets for `input`, without a running
 * host (a queue message that was never in a queue; a timer without schedule status).
 */
export function triggerRequest(fn: AppFunction, input: unknown): RpcInvocationRequest {
  if (fn.kind === "timer") {
    const isPastDue = typeof input === "object" && input !== null && (input as { isPastDue?: unknown }).isPastDue === true;
    return timerRequest(fn, timerInfo(null, isPastDue));
  }
  if (fn.kind === "queue") {
    const now = new Date();
    return queueRequest(fn, {
      messageId: randomUUID(),
      popReceipt: randomBytes(12).toString("base64"),
      dequeueCount: 1,
      insertedOn: now,
      expiresOn: new Date(now.getTime() + 7 * 24 * 3600_000),
      nextVisibleOn: new Date(now.getTime() + 600_000),
      text: typeof input === "string" ? input : JSON.stringify(input),
    });
  }
  throw new HostError(`Function '${fn.name}' is not a timer or queue function.`);
}

/** Invokes a timer or queue function of an already loaded app, without a host around it. */
export async function invokeTrigger(root: string, name: string, input: unknown, log: LogSink): Promise<void> {
  const app = await loadApp(root);
  const fn = app.byName.get(name);
  if (!fn || (fn.kind !== "timer" && fn.kind !== "queue")) throw new HostError(`No timer or queue function named '${name}'.`);
  await invoke(app, fn, triggerRequest(fn, input), log);
}

/** Listens on 127.0.0.1 and, where the machine has it, on ::1 with the same port (localhost is either). */
async function listen(handler: ReturnType<typeof createHttpHandler>, port: number): Promise<Server[]> {
  const start = (host: string, p: number) =>
    new Promise<Server>((done, fail) => {
      const server = createServer(handler);
      server.once("error", fail);
      server.listen({ port: p, host, exclusive: true }, () => {
        server.off("error", fail);
        done(server);
      });
    });
  let primary: Server;
  try {
    primary = await start("127.0.0.1", port);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EADDRINUSE") {
      throw new HostError(`Port ${port} is already in use: is func start or another dev host running? Pick another port with --port.`);
    }
    throw err;
  }
  const actual = (primary.address() as AddressInfo).port;
  try {
    return [primary, await start("::1", actual)];
  } catch {
    return [primary];
  }
}

function withTimeout<T>(work: Promise<T>, ms: number | undefined, onTimeout: () => void): Promise<T> {
  if (!ms) return work;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => {
      onTimeout();
      fail(new HostError("Function timed out (host.json functionTimeout)."));
    }, ms);
    timer.unref();
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

function formatSpan(ms: number): string {
  const s = Math.floor(ms / 1000);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(Math.floor(s / 3600))}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}`;
}
