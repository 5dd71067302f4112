import type { AppConfig, CloudEndpoints } from "../../platform/config.js";
import type { Logger } from "../../platform/services.js";
import type { BudgetLimits, CallBudget } from "../budget.js";
import type { AlertSource, SourceName } from "../source.js";
import { DefenderSource } from "./defender/client.js";
import { GraphSource } from "./graph/client.js";

/**
 * What the engine needs to know of each source: its token scope, page size, call limits
 * (per (tenant, source): Defender and Graph limit calls separately), and how to build it.
 */
export interface SourceProfile {
  name: SourceName;
  scope: string;
  pageSize: number;
  limits: BudgetLimits;
}

export function sourceProfile(name: SourceName, config: AppConfig, endpoints: CloudEndpoints): SourceProfile {
  if (name === "graph") {
    const perMinute = config.graph.maxCallsPerMinute;
    // Graph documents a per-minute limit only (150 per app per tenant for security alerts).
    return { name, scope: endpoints.graphScope, pageSize: config.graph.pageSize, limits: { perMinute, perHour: perMinute * 60 } };
  }
  const { pull } = config;
  return {
    name,
    scope: endpoints.apiScope,
    pageSize: pull.pageSize,
    limits: { perMinute: pull.maxCallsPerMinute, perHour: pull.maxCallsPerHour },
  };
}

export interface SourceDeps {
  tenantId: string;
  endpoints: CloudEndpoints;
  config: AppConfig;
  budget: CallBudget;
  token(forceNew: boolean): Promise<string>;
  sleep(ms: number): Promise<void>;
  random(): number;
  log: Logger;
}

export type MeasuredSource = AlertSource & { readonly bytes: { incremental: number; sweep: number } };

export function createSource(name: SourceName, deps: SourceDeps): MeasuredSource {
  const common = {
    tenantId: deps.tenantId,
    budget: deps.budget,
    sleep: deps.sleep,
    random: deps.random,
    log: deps.log,
    token: deps.token,
  };
  if (name === "graph") {
    return new GraphSource({ ...common, baseUrl: deps.endpoints.graphBaseUrl, maxPagesPerWindow: deps.config.graph.maxPagesPerWindow });
  }
  return new DefenderSource({ ...common, baseUrl: deps.endpoints.apiBaseUrl });
}
export { probeSource } from "./probe.js";
export { grantsRead, SOURCE_NAMES, sourceAccess, type SourceAccess } from "./access.js";
