/**
 * The `@azure/functions-core` module. The Azure Functions Node.js worker does not ship it
 * as a package: it intercepts `require("@azure/functions-core")` and answers with its own
 * API object, which `@azure/functions` uses to register functions (`registerFunction`),
 * hand over its programming model (`setProgrammingModel`), register hooks (`registerHook`)
 * and write system logs (`log`). This module does the same for the dev host, so the app
 * registers itself through `@azure/functions` exactly as it does under the real worker.
 *
 * `@azure/functions` keeps its state per process (the programming model, `app.setup()`),
 * so there is one worker state per process too: the app is loaded once and every host
 * started in this process serves it.
 */
import Module from "node:module";
import type {
  FunctionCallback,
  FunctionMetadata,
  HookCallback,
  HookData,
  ProgrammingModel,
  RpcFunctionMetadata,
  RpcLogCategory,
  RpcLogLevel,
} from "./rpc.js";

export const CORE_MODULE = "@azure/functions-core";
/** Reported as the worker and host versions; nothing in `@azure/functions` 4.x compares them. */
export const DEV_HOST_VERSION = "dev-host";

export interface RegisteredFunction {
  metadata: RpcFunctionMetadata;
  callback: FunctionCallback;
}

export type SystemLog = (level: RpcLogLevel, category: RpcLogCategory, message: string) => void;

/** The worker's app state (what WorkerContext.app holds in the real worker). */
export interface WorkerState {
  functions: Map<string, RegisteredFunction>;
  programmingModel?: ProgrammingModel;
  hooks: Map<string, HookCallback[]>;
  appHookData: HookData;
  appLevelOnlyHookData: HookData;
  /** Set once startup is over: registering a function later is an error, as in the worker. */
  indexingLocked: boolean;
  currentEntryPoint?: string;
  /** Where system logs (`coreApi.log`, outside an invocation) go. */
  systemLog: SystemLog;
}

export const worker: WorkerState = {
  functions: new Map(),
  hooks: new Map(),
  appHookData: {},
  appLevelOnlyHookData: {},
  indexingLocked: false,
  systemLog: () => {},
};

class Disposable {
  static from(...items: { dispose: () => unknown }[]): Disposable {
    return new Disposable(() => {
      for (const item of items) item.dispose();
    });
  }
  #callOnDispose?: () => unknown;
  constructor(callOnDispose: () => unknown) {
    this.#callOnDispose = callOnDispose;
  }
  dispose(): unknown {
    const call = this.#callOnDispose;
    this.#callOnDispose = undefined;
    return call?.();
  }
}

/** An error of the host itself (not of the app), worded like the worker's. */
export class HostError extends Error {
  override name = "HostError";
}

function registerFunction(metadata: FunctionMetadata, callback: FunctionCallback): Disposable {
  if (worker.indexingLocked) throw new HostError("A function can only be registered during app startup.");
  const functionId = metadata.functionId || metadata.name;
  if (worker.functions.has(functionId)) throw new HostError(`A function with id "${functionId}" has already been registered.`);
  const entry = worker.currentEntryPoint;
  const rpcMetadata: RpcFunctionMetadata = {
    ...metadata,
    functionId,
    // What the real host reads: one JSON string per binding, with its name.
    rawBindings: Object.entries(metadata.bindings).map(([name, binding]) => JSON.stringify({ ...binding, name })),
    scriptFile: entry ? entry.split(/[\\/]/).pop()! : "unknown",
    directory: entry ? entry.replace(/[\\/][^\\/]*$/, "") : "",
  };
  worker.functions.set(functionId, { metadata: rpcMetadata, callback });
  return new Disposable(() => {
    if (worker.indexingLocked) throw new HostError("A function can only be disposed during app startup.");
    worker.functions.delete(functionId);
  });
}

function setProgrammingModel(model: ProgrammingModel): void {
  if (worker.programmingModel) {
    worker.systemLog("information", "system", `Setting Node.js programming model to "${model.name}" version "${model.version}"`);
  }
  worker.programmingModel = model;
}

/** The hooks the worker runs (this host, like worker 3.9, has no `log` hooks). */
const HOOKS = new Set(["preInvocation", "postInvocation", "appStart", "appTerminate"]);

function registerHook(hookName: string, callback: HookCallback): Disposable {
  if (!HOOKS.has(hookName)) {
    // The worker's error for a hook it does not know; @azure/functions explains it to the app.
    throw Object.assign(new RangeError(`Unrecognized hook "${hookName}"`), { isAzureFunctionsSystemError: true });
  }
  let list = worker.hooks.get(hookName);
  if (!list) {
    list = [];
    worker.hooks.set(hookName, list);
  }
  list.push(callback);
  return new Disposable(() => {
    const index = list.indexOf(callback);
    if (index >= 0) list.splice(index, 1);
  });
}

/** Runs the hooks registered under `hookName`, in order; a hook that throws stops the rest. */
export async function executeHooks(hookName: string, context: unknown): Promise<void> {
  for (const callback of [...(worker.hooks.get(hookName) ?? [])]) await callback(context);
}

/** Hook context properties that may be modified but not replaced. */
export function readOnly<T extends object>(target: T, name: string, value: unknown): T {
  Object.defineProperty(target, name, {
    enumerable: true,
    get: () => value,
    set: () => {
      throw new TypeError(`Cannot assign to read only property '${name}'`);
    },
  });
  return target;
}

const coreApi = {
  version: DEV_HOST_VERSION,
  get hostVersion() {
    return DEV_HOST_VERSION;
  },
  registerFunction,
  setProgrammingModel,
  getProgrammingModel: () => worker.programmingModel,
  registerHook,
  log: (level: RpcLogLevel, category: RpcLogCategory, message: string) => worker.systemLog(level, category, message),
  Disposable,
};

let installed = false;

/**
 * Makes `require("@azure/functions-core")` answer with this host's API, the way the worker
 * does (a proxy on Module.prototype.require). Must run before any app file is loaded:
 * `@azure/functions` looks the module up once, at its first registration.
 */
export function installCoreModule(): void {
  if (installed) return;
  installed = true;
  const proto = Module.prototype as unknown as { require: (id: string) => unknown };
  proto.require = new Proxy(proto.require, {
    apply(target, thisArg, args: unknown[]) {
      if (args[0] === CORE_MODULE) return coreApi;
      return Reflect.apply(target, thisArg, args);
    },
  });
}
