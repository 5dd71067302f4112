import { app, type HttpMethod, type HttpRequest, type HttpResponseInit, type InvocationContext } from "@azure/functions";
import { ConfigError, loadOperatorConfig, type OperatorConfig } from "../platform/config.js";
import { api, json } from "../platform/http.js";
import { loggerFrom, services, unensuredServices } from "../platform/services.js";
import { TABLES } from "../platform/storage.js";
import { type AuditEntry, startAudit } from "./audit.js";
import { hasRole, type OperatorIdentity, type OperatorRole, requireRole, Unauthenticated, verifyOperatorToken } from "./auth.js";

/**
 * The one way to register an operator route. `operatorHttp(name, {route, methods, role,
 * audit?, handler})` registers it `authLevel: "anonymous"` (Functions keys grant nothing)
 * and runs every request through the same steps:
 *
 *   1. the Entra ID access token is verified (auth.ts): 401 without a valid one;
 *   2. the token's app roles must include `role` or a higher one: 403 otherwise;
 *   3. for an audited route (`audit`), the tenant is read from the request and checked
 *      (no storage call, so bad input is a 400), then the audit entry is written
 *      (`started`), or the call is refused with 503;
 *   4. the handler runs; its answer completes the audit entry (`succeeded` below 400,
 *      `failed` otherwise) unless the handler completes it itself (a streamed export).
 *
 * Every decision is recorded in `operatorRoutes()`, which the authorization-matrix test
 * compares with the routes the host registered: an HTTP route without a decision fails it.
 */

export interface OperatorCall {
  identity: OperatorIdentity;
  /** The audit entry of this call (audited routes only). */
  audit?: AuditEntry;
  /**
   * Streamed answers: the handler completes the audit entry itself when the stream ends,
   * so the wrapper does not complete it when the handler returns.
   */
  completesAuditItself?: boolean;
}

export interface OperatorAudit {
  /** The action's name in the audit trail, e.g. `tenant.offboard`. */
  action: string | ((request: HttpRequest) => string);
  /**
   * The tenant the call is about, validated (throw ApiError 400) without any storage call.
   * It gets a clone of the request, so it may read the body.
   */
  tenant?: (request: HttpRequest) => string | undefined | Promise<string | undefined>;
}

export interface OperatorRouteOptions {
  route: string;
  methods: HttpMethod[];
  /** The lowest role that may call the route. */
  role: OperatorRole;
  /** State-changing routes and alert exports; reads are not audited. */
  audit?: OperatorAudit;
  handler: (request: HttpRequest, context: InvocationContext, call: OperatorCall) => Promise<HttpResponseInit>;
}

export interface OperatorRouteDecision {
  route: string;
  methods: HttpMethod[];
  role: OperatorRole;
  audited: boolean;
}

const decisions = new Map<string, OperatorRouteDecision>();

/** Every operator route registered in this process: function name -> its decision. */
export function operatorRoutes(): ReadonlyMap<string, OperatorRouteDecision> {
  return decisions;
}

export function operatorHttp(name: string, options: OperatorRouteOptions): void {
  decisions.set(name, { route: options.route, methods: options.methods, role: options.role, audited: options.audit !== undefined });
  app.http(name, {
    route: options.route,
    methods: options.methods,
    authLevel: "anonymous",
    handler: (request, context) => runOperatorCall(name, options, request, context),
  });
}

/** The steps above, for one request (exported for tests of a handler without the host). */
export async function runOperatorCall(
  name: string,
  options: OperatorRouteOptions,
  request: HttpRequest,
  context: InvocationContext,
): Promise<HttpResponseInit> {
  const log = loggerFrom(context);
  let entry: AuditEntry | undefined;
  const response = await api(context, async () => {
    // Tokens are checked even when other settings are broken, so health/details can say which.
    let operator: OperatorConfig;
    let now: () => Date = () => new Date();
    try {
      const svc = unensuredServices();
      operator = svc.config.operator;
      now = svc.now;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      operator = loadOperatorConfig(process.env);
    }
    let identity: OperatorIdentity;
    try {
      identity = await verifyOperatorToken(operator, request.headers.get("authorization"), now());
    } catch (err) {
      if (!(err instanceof Unauthenticated)) throw err;
      log.info(`operator.unauthenticated function=${name} reason=${err.reason}`);
      return json(401, { error: { code: err.code, message: err.message } }, { "WWW-Authenticate": wwwAuthenticate(err) });
    }
    if (!hasRole(identity, options.role)) {
      log.warn(`operator.forbidden function=${name} needs=${options.role} has=${identity.role} oid=${identity.oid}`);
      requireRole(identity, options.role);
    }
    const call: OperatorCall = { identity };
    if (options.audit) {
      const tenantId = options.audit.tenant ? await options.audit.tenant(request.clone()) : undefined;
      const action = typeof options.audit.action === "function" ? options.audit.action(request) : options.audit.action;
      // Storage that cannot be reached refuses the action (503); broken settings are a 500 naming them.
      const svcWithStorage = await services().catch((err: unknown) => {
        if (err instanceof ConfigError) throw err;
        return undefined;
      });
      if (!svcWithStorage) {
        log.error(`audit.write-failed action=${action} error=StorageUnavailable`);
        return json(503, {
          error: { code: "AuditUnavailable", message: "The audit trail cannot be written right now, so the action was not taken; try again shortly." },
        });
      }
      entry = await startAudit(
        svcWithStorage.storage.table(TABLES.audit),
        { identity, action, route: `${request.method} ${options.route}`, ...(tenantId ? { tenantId } : {}) },
        svcWithStorage.now,
        log,
      );
      call.audit = entry;
    }
    try {
      const result = await options.handler(request, context, call);
      if (entry && !call.completesAuditItself) await entry.complete((result.status ?? 200) < 400 ? "succeeded" : "failed", result.status ?? 200);
      return result;
    } catch (err) {
      // Completed here; the error itself is mapped (and logged by its class) by api().
      if (entry) await entry.complete("failed", (err as { status?: number }).status ?? 500);
      throw err;
    }
  });
  return response;
}

function wwwAuthenticate(err: Unauthenticated): string {
  // RFC 6750: no error attribute when the request carried no token at all.
  if (err.reason === "missing") return 'Bearer realm="operator-api"';
  return `Bearer realm="operator-api", error="invalid_token", error_description="${err.message.replace(/["\\]/g, "'")}"`;
}
