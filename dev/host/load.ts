/**
 * Loads a Functions app the way the Node.js worker does at start: the `main` glob of
 * package.json, each matching file in the order the glob returns them, ESM or CommonJS by
 * the package's `type`; `@azure/functions` registers every function through the
 * `@azure/functions-core` module this host provides. Then the `appStart` hooks run and the
 * programming model reports its capabilities (which is where `app.setup({ enableHttpStream })`
 * takes effect and setup is locked).
 *
 * One app per process: `@azure/functions` keeps its registrations and setup per process.
 */
import { globSync, readFileSync } from "node:fs";
import { Server } from "node:http";
import { createRequire } from "node:module";
import { extname, isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { executeHooks, HostError, installCoreModule, type RegisteredFunction, readOnly, worker } from "./core-module.js";
import type { ProgrammingModel, RpcBindingInfo } from "./rpc.js";

/** What the worker reports to the host before the programming model adds its own. */
export const WORKER_CAPABILITIES: Readonly<Record<string, string>> = {
  RawHttpBodyBytes: "true",
  RpcHttpTriggerMetadataRemoved: "true",
  RpcHttpBodyOnly: "true",
  IgnoreEmptyValuedRpcHttpHeaders: "true",
  UseNullableValueDictionaryForHttp: "true",
  WorkerStatus: "true",
  TypedDataCollection: "true",
  HandlesWorkerTerminateMessage: "true",
};

export type TriggerKind = "http" | "timer" | "queue";

export interface AppFunction extends RegisteredFunction {
  name: string;
  id: string;
  kind?: TriggerKind;
  /** The trigger binding's name (randomised by `@azure/functions`) and options. */
  triggerName: string;
  trigger: RpcBindingInfo;
  /** Why this host cannot run the function (it is listed, but never invoked). */
  error?: string;
}

export interface LoadedApp {
  root: string;
  packageJson: { main?: string; type?: string };
  /** The files the main glob matched, in load order, relative to root. */
  entryPoints: string[];
  /** In registration order. */
  functions: AppFunction[];
  byName: Map<string, AppFunction>;
  programmingModel?: ProgrammingModel;
  capabilities: Record<string, string>;
  /** Set when the app called `app.setup({ enableHttpStream: true })`: where the model's HTTP proxy listens. */
  httpUri?: string;
}

const TRIGGERS: Record<string, TriggerKind> = { httptrigger: "http", timertrigger: "timer", queuetrigger: "queue" };

let loaded: { root: string; promise: Promise<LoadedApp> } | undefined;

/** Loads the app in `root` (once per process; later calls return the same app). */
export function loadApp(root: string): Promise<LoadedApp> {
  const abs = resolve(root);
  if (loaded) {
    if (loaded.root !== abs) {
      return Promise.reject(
        new HostError(`This process already loaded the app in ${loaded.root}; @azure/functions holds one app per process.`),
      );
    }
    return loaded.promise;
  }
  const promise = load(abs);
  loaded = { root: abs, promise };
  return promise;
}

async function load(root: string): Promise<LoadedApp> {
  installCoreModule();
  let packageJson: LoadedApp["packageJson"] = {};
  try {
    packageJson = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as LoadedApp["packageJson"];
  } catch (err) {
    worker.systemLog("warning", "system", `Worker failed to load package.json: ${(err as Error).message}`);
  }
  const pattern = packageJson.main;
  if (typeof pattern !== "string" || pattern.trim() === "") {
    throw new HostError(`package.json in ${root} has no "main": the worker finds the app's files through it.`);
  }
  const entryPoints = globSync(pattern, { cwd: root }).map((f) => f.split("\\").join("/"));
  if (entryPoints.length === 0) {
    const reason = /[*?[\]{}]/.test(pattern) ? "Found zero files matching the supplied pattern" : "File does not exist";
    throw new HostError(`Worker was unable to load entry point "${pattern}": ${reason}. Did you run npm run build?`);
  }
  for (const file of entryPoints) {
    const path = isAbsolute(file) ? file : join(root, file);
    worker.currentEntryPoint = path;
    try {
      if (isEsm(path, packageJson)) await import(pathToFileURL(path).href);
      else createRequire(path)(path);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      throw new HostError(`Worker was unable to load entry point "${file}": ${error.message}`, { cause: error });
    } finally {
      worker.currentEntryPoint = undefined;
    }
  }
  worker.indexingLocked = true;

  const appStart = {} as Record<string, unknown>;
  readOnly(appStart, "hookData", worker.appLevelOnlyHookData);
  readOnly(appStart, "appHookData", worker.appHookData);
  appStart.functionAppDirectory = root;
  await executeHooks("appStart", appStart);

  const model = worker.programmingModel;
  let capabilities: Record<string, string> = { ...WORKER_CAPABILITIES };
  if (model?.getCapabilities) capabilities = await unrefServersOf(() => model.getCapabilities!(capabilities));

  const functions = [...worker.functions.values()].map(describe);
  return {
    root,
    packageJson,
    entryPoints,
    functions,
    byName: new Map(functions.map((f) => [f.name, f])),
    ...(model ? { programmingModel: model } : {}),
    capabilities,
    ...(capabilities.HttpUri ? { httpUri: capabilities.HttpUri } : {}),
  };
}

/**
 * Runs `work` and unrefs the HTTP servers it starts: with `enableHttpStream`,
 * `@azure/functions` starts its HTTP proxy here and never closes it, which must not keep a
 * process that hosts the app in-process (a test) alive once everything else is done.
 */
async function unrefServersOf<T>(work: () => Promise<T> | T): Promise<T> {
  const listen = Server.prototype.listen;
  const started: Server[] = [];
  Server.prototype.listen = function (this: Server, ...args: unknown[]) {
    started.push(this);
    return (listen as (...a: unknown[]) => Server).apply(this, args);
  } as typeof listen;
  try {
    return await work();
  } finally {
    Server.prototype.listen = listen;
    for (const server of started) server.unref();
  }
}

function isEsm(path: string, packageJson: LoadedApp["packageJson"]): boolean {
  const ext = extname(path);
  if (ext === ".mjs") return true;
  if (ext === ".cjs") return false;
  return packageJson.type === "module";
}

/** The function as the host sees it: its trigger, and whether this host can run it. */
function describe(registered: RegisteredFunction): AppFunction {
  const { metadata } = registered;
  const entries = Object.entries(metadata.bindings);
  const triggers = entries.filter(([, b]) => /trigger$/i.test(b.type ?? ""));
  const [triggerName, trigger] = triggers[0] ?? ["", {}];
  const kind = TRIGGERS[(trigger.type ?? "").toLowerCase()];
  const fn: AppFunction = { ...registered, name: metadata.name, id: metadata.functionId, triggerName, trigger, ...(kind ? { kind } : {}) };
  const unsupported: string[] = [];
  if (!kind) unsupported.push(`its ${trigger.type ?? "missing"} trigger`);
  for (const [name, binding] of entries) {
    if (name === triggerName) continue;
    if (kind === "http" && binding.direction === "out" && (binding.type ?? "").toLowerCase() === "http") continue;
    unsupported.push(`its ${binding.type ?? "untyped"} ${binding.direction === "out" ? "output" : "input"} binding`);
  }
  if (metadata.retryOptions) unsupported.push("its retry policy");
  if (unsupported.length > 0) {
    fn.error =
      `The dev host cannot run ${unsupported.join(" and ")} (it runs HTTP, timer and storage queue triggers ` +
      "and HTTP outputs); run this app with Azure Functions Core Tools.";
  }
  return fn;
}
