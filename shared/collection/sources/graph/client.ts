import type { RawAlert } from "../../alert-store.js";
import { type AlertSource, type ItemSink, type ReadOptions, SourceApiError, type WindowAnswer, type WindowQuery } from "../../source.js";
import { canonicalTime, formatTicks } from "../../time.js";
import { checkedNextLink, type ODataAlertPage, ODataClient, type ODataClientOptions } from "../odata-client.js";

/**
 * Microsoft Graph security `alerts_v2` (all of Defender XDR) as an AlertSource.
 *
 * - Windows on `lastUpdateDateTime` (`ge` lower bound, `lt` upper; not documented, but used
 *   in production). A 400 to `lt` switches this source to `le` on the upper bound minus
 *   100 ns, which selects exactly the same items.
 * - Graph pages by `@odata.nextLink`. Within a window at most GRAPH_MAX_PAGES_PER_WINDOW
 *   pages are followed; a longer chain is treated like a full Defender answer and the
 *   window is cut by time, so no window is read through a deep offset. A page holding as
 *   many items as the effective page size (the `$top` asked, or the smaller size the
 *   service pages by, which a page with a nextLink shows) counts as full even without a
 *   nextLink: Graph caps `$top` silently. A window is complete only when its last page is
 *   not full and has no nextLink.
 * - A nextLink is a position in a result that changes while it is read: an alert updated
 *   between two pages leaves the window and every later item moves up one place, so the
 *   next page skips one. A chain of several pages is therefore checked: the first page's
 *   `@odata.count` (`$count=true`) must equal the number of distinct alerts the chain
 *   returned, and every page must report the same count. Otherwise the window is treated
 *   as full and cut by time into pieces that each fit one page.
 * - `Prefer: include-unknown-enum-members`, so newer `serviceSource` values arrive as
 *   themselves. The sweep's light listing selects `id,lastUpdateDateTime` only.
 * - Fields are mapped to the read API's vocabulary (docs/sources.md); the stored JSON is
 *   Graph's own.
 */

export type GraphSourceOptions = Omit<ODataClientOptions, "name" | "refusal" | "headers"> & {
  baseUrl: string;
  maxPagesPerWindow: number;
};

/** The largest page Graph serves for alerts_v2, whatever `$top` asks (observed by Elastic). */
export const GRAPH_MAX_TOP = 1000;

export class GraphSource implements AlertSource {
  readonly name = "graph";
  private readonly http: ODataClient;
  private readonly origin: string;
  /** The service refused `lt` on lastUpdateDateTime: use `le` on the upper bound minus 100 ns. */
  private useLe = false;

  constructor(private readonly options: GraphSourceOptions) {
    this.origin = new URL(options.baseUrl).origin;
    this.http = new ODataClient({
      ...options,
      name: "graph",
      refusal,
      headers: { Prefer: "include-unknown-enum-members" },
    });
  }

  get bytes(): { incremental: number; sweep: number } {
    return this.http.bytes;
  }

  listUrl(query: WindowQuery): string {
    const from = new Date(query.from).toISOString();
    const upper = this.useLe
      ? `lastUpdateDateTime le ${formatTicks(BigInt(query.to) * 10_000n - 1n)}`
      : `lastUpdateDateTime lt ${new Date(query.to).toISOString()}`;
    const params = new URLSearchParams({ $filter: `lastUpdateDateTime ge ${from} and ${upper}` });
    params.set("$top", String(query.top));
    params.set("$count", "true");
    if (!query.full) params.set("$select", "id,lastUpdateDateTime");
    if (query.skip) params.set("$skip", String(query.skip));
    return `${this.options.baseUrl}/v1.0/security/alerts_v2?${params.toString().replace(/\+/g, "%20")}`;
  }

  async readWindow(query: WindowQuery, options: ReadOptions, sink: ItemSink): Promise<WindowAnswer> {
    // Graph caps $top at about 1,000 without saying so (GRAPH_PAGE_SIZE is capped there too).
    let effective = Math.min(query.top, GRAPH_MAX_TOP);
    // The distinct ids of the chain, checked against @odata.count at its end.
    const ids = new Set<string>();
    const counting: ItemSink = async (batch) => {
      for (const alert of batch) ids.add(alert.id);
      await sink(batch);
    };
    let page = await this.first(query, options, counting);
    const count = page.count;
    const answer: WindowAnswer = { times: [], full: false, ...(count !== undefined ? { total: count } : {}) };
    let steady = count !== undefined;
    for (let pages = 1; ; pages++) {
      answer.times.push(...page.times);
      steady &&= page.count === count;
      if (!page.nextLink) {
        // A chain is complete only if the result did not move while it was read.
        answer.full = page.items >= effective || (pages > 1 && !(steady && ids.size === count));
        return answer;
      }
      effective = Math.min(effective, Math.max(1, page.items));
      if (pages >= this.options.maxPagesPerWindow) {
        answer.full = true;
        return answer;
      }
      await options.beforeRequest();
      page = await this.http.page(checkedNextLink(page.nextLink, this.origin), options, toRawAlert, counting);
    }
  }

  /** Every page of the chain: the deep paging Graph offers, for a 1 ms slice. */
  async readExhaustive(query: WindowQuery, options: ReadOptions): Promise<RawAlert[]> {
    const alerts: RawAlert[] = [];
    let page = await this.first(query, options);
    for (;;) {
      alerts.push(...page.alerts);
      if (!page.nextLink) return alerts;
      await options.beforeRequest();
      page = await this.http.page(checkedNextLink(page.nextLink, this.origin), options, toRawAlert);
    }
  }

  private async first(query: WindowQuery, options: ReadOptions, sink?: ItemSink): Promise<ODataAlertPage> {
    await options.beforeRequest();
    try {
      return await this.http.page(this.listUrl(query), options, toRawAlert, sink);
    } catch (err) {
      if (!(err instanceof SourceApiError) || err.status !== 400 || this.useLe) throw err;
      // The service does not take `lt` on lastUpdateDateTime: `le` (upper bound - 100 ns).
      this.useLe = true;
      await options.beforeRequest();
      return this.http.page(this.listUrl(query), options, toRawAlert, sink);
    }
  }
}

function refusal(status: number): string {
  if (status === 401 || status === 403) {
    return "Graph refused to list security alerts: the app needs SecurityAlert.Read.All (delegated or application), and a delegated account a Defender role";
  }
  return `Graph answered ${status}`;
}

const SEVERITIES: Record<string, string> = {
  informational: "Informational",
  low: "Low",
  medium: "Medium",
  high: "High",
};
const STATUSES: Record<string, string> = { new: "New", inProgress: "InProgress", resolved: "Resolved" };

function pascal(value: unknown): unknown {
  return typeof value === "string" && value ? value[0]!.toUpperCase() + value.slice(1) : value;
}

/** The first evidence item of a type (`#microsoft.graph.security.deviceEvidence`, ...). */
function evidenceOf(alert: Record<string, unknown>, type: string): Record<string, unknown> | undefined {
  const evidence = alert.evidence;
  if (!Array.isArray(evidence)) return undefined;
  return evidence.find(
    (e): e is Record<string, unknown> => typeof e === "object" && e !== null && String((e as Record<string, unknown>)["@odata.type"]).endsWith(`.${type}`),
  );
}

/** Graph's schema mapped to the table's columns and the read API's vocabulary. */
export function graphFields(alert: Record<string, unknown>): Record<string, unknown> {
  const device = evidenceOf(alert, "deviceEvidence");
  return {
    title: alert.title,
    // unknown, unknownFutureValue and values newer than this code: UnSpecified / Unknown
    severity: SEVERITIES[String(alert.severity)] ?? "UnSpecified",
    status: STATUSES[String(alert.status)] ?? "Unknown",
    category: alert.category,
    classification: pascal(alert.classification),
    determination: pascal(alert.determination),
    detectionSource: alert.detectionSource,
    firstEventTime: alert.firstActivityDateTime,
    lastEventTime: alert.lastActivityDateTime,
    machineId: device?.mdeDeviceId,
    computerDnsName: device?.deviceDnsName,
    assignedTo: alert.assignedTo,
    incidentId: alert.incidentId,
    alertCreationTime: alert.createdDateTime,
    providerAlertId: alert.providerAlertId,
  };
}

function toRawAlert(json: string): RawAlert {
  const parsed = JSON.parse(json) as Record<string, unknown>;
  const id = parsed.id;
  const lastUpdateTime = parsed.lastUpdateDateTime;
  if (typeof id !== "string" || id === "" || typeof lastUpdateTime !== "string" || !canonicalTime(lastUpdateTime)) {
    throw new SourceApiError(200, "InvalidAlert", "An alert without id or a readable lastUpdateDateTime was returned", true);
  }
  return { json, id, lastUpdateTime, fields: graphFields(parsed) };
}
