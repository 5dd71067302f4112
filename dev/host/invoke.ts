/**
 * One invocation, as the Node.js worker's InvocationHandler runs it: the programming model
 * (`@azure/functions`) turns the host's invocation request into the handler's arguments,
 * the preInvocation hooks run, then the handler, then the postInvocation hooks, and the
 * model turns the result into the invocation response. An error of the handler (or of a
 * hook) fails the invocation, as it does under the real worker.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { executeHooks, HostError, readOnly, worker } from "./core-module.js";
import type { AppFunction, LoadedApp } from "./load.js";
import type { CoreInvocationContext, RpcInvocationRequest, RpcInvocationResponse, RpcLogCategory, RpcLogLevel, RpcTypedData } from "./rpc.js";

/** One log line of the host, the worker or a function. */
export interface LogEntry {
  time: Date;
  level: RpcLogLevel;
  /** `user`: the function's context.log; `system`: the worker or `@azure/functions`; `host`: this host. */
  category: RpcLogCategory | "host";
  message: string;
  functionName?: string;
  invocationId?: string;
}

export type LogSink = (entry: LogEntry) => void;

export interface InvocationOutcome {
  response: RpcInvocationResponse;
  /** What the handler returned, after the postInvocation hooks. */
  result: unknown;
}

/** The exception as the worker reports a failed invocation to the host. */
export interface InvocationFailure {
  message: string;
  stackTrace?: string;
}

/** Request fields every trigger shares: the invocation id and a W3C trace context. */
export function baseRequest(fn: AppFunction, invocationId: string = randomUUID()): RpcInvocationRequest {
  return {
    invocationId,
    functionId: fn.id,
    traceContext: { traceParent: `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-00`, traceState: "", attributes: {} },
  };
}

/** The `sys` trigger metadata the host adds to every invocation. */
export function sysMetadata(fn: AppFunction, now: Date): RpcTypedData {
  return { json: JSON.stringify({ MethodName: fn.name, UtcNow: dotnetUtc(now), RandGuid: randomUUID() }) };
}

/** Runs one invocation through the programming model. Rejects with the handler's error. */
export async function invoke(app: LoadedApp, fn: AppFunction, request: RpcInvocationRequest, log: LogSink): Promise<InvocationOutcome> {
  const model = app.programmingModel;
  if (!model) throw new HostError("No programming model was set: the app registered no functions through @azure/functions.");
  if (fn.error) throw new HostError(`Function '${fn.name}' is in error: ${fn.error}`);
  const invocationId = request.invocationId ?? randomUUID();
  const coreCtx: CoreInvocationContext = {
    invocationId,
    request: { ...request, invocationId },
    metadata: fn.metadata,
    log(level: RpcLogLevel, category: RpcLogCategory, message: string) {
      log({ time: new Date(), level, category, message, functionName: fn.name, invocationId });
    },
  };
  const invocationModel = await model.getInvocationModel(coreCtx);
  const { context, inputs: initialInputs } = await invocationModel.getArguments();
  const hookData = {};

  const pre = { functionCallback: fn.callback, inputs: initialInputs } as Record<string, unknown> & {
    functionCallback: typeof fn.callback;
    inputs: unknown[];
  };
  readOnly(pre, "hookData", hookData);
  readOnly(pre, "appHookData", worker.appHookData);
  readOnly(pre, "invocationContext", context);
  coreCtx.state = "preInvocationHooks";
  try {
    await executeHooks("preInvocation", pre);
  } finally {
    coreCtx.state = undefined;
  }

  const post = { inputs: pre.inputs, result: null as unknown, error: null as unknown };
  readOnly(post, "hookData", hookData);
  readOnly(post, "appHookData", worker.appHookData);
  readOnly(post, "invocationContext", context);
  coreCtx.state = "invocation";
  try {
    post.result = await invocationModel.invokeFunction(context, pre.inputs, pre.functionCallback);
  } catch (err) {
    post.error = err;
  } finally {
    coreCtx.state = undefined;
  }
  coreCtx.state = "postInvocationHooks";
  try {
    await executeHooks("postInvocation", post);
  } finally {
    coreCtx.state = undefined;
  }
  if (post.error !== null && post.error !== undefined) throw post.error;
  return { response: await invocationModel.getResponse(context, post.result), result: post.result };
}

/** What the worker sends the host about an error (message and stack, as `ensureErrorType` makes them). */
export function toFailure(err: unknown): InvocationFailure {
  if (err instanceof Error) return { message: err.message, ...(err.stack ? { stackTrace: err.stack } : {}) };
  if (err === undefined || err === null) return { message: "Unknown error" };
  if (typeof err === "string") return { message: err };
  if (typeof err === "object") return { message: JSON.stringify(err) };
  return { message: String(err) };
}

/** A DateTimeOffset as the host's JSON serializer writes it: `2024-06-01T12:05:00+00:00`. */
export function dotnetOffset(date: Date, utc = true): string {
  const offsetMinutes = utc ? 0 : -date.getTimezoneOffset();
  const local = new Date(date.getTime() + offsetMinutes * 60_000);
  const sign = offsetMinutes < 0 ? "-" : "+";
  const abs = Math.abs(offsetMinutes);
  return `${dotnetClock(local)}${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** A UTC DateTime as the host's JSON serializer writes it: `2024-06-01T12:05:00.123Z`. */
export function dotnetUtc(date: Date): string {
  return `${dotnetClock(date)}Z`;
}

/** `yyyy-MM-ddTHH:mm:ss[.fff]` of the UTC fields of `date`, trailing zeros of the fraction dropped. */
function dotnetClock(d: Date): string {
  const ms = d.getUTCMilliseconds();
  const fraction = ms === 0 ? "" : `.${String(ms).padStart(3, "0").replace(/0+$/, "")}`;
  return (
    `${String(d.getUTCFullYear()).padStart(4, "0")}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}` +
    `T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}${fraction}`
  );
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}
