import { ALERT_COLUMNS, type RawAlert } from "../../alert-store.js";
import { type AlertSource, type ItemSink, type ReadOptions, SourceApiError, type WindowAnswer, type WindowQuery } from "../../source.js";
import { canonicalTime } from "../../time.js";
import { checkedNextLink, ODataClient, type ODataClientOptions } from "../odata-client.js";

/**
 * The Defender for Endpoint alerts list API (`GET /api/alerts`) as an AlertSource. Items
 * come back unsorted, in an order that shifts as alerts change, and there is no nextLink
 * under `$top`, so `$skip` paging can lose items: a window is read in ONE request with
 * `$top`, and a full answer is cut by the engine. Only a 1 ms slice is read with `$skip`.
 * `$expand=evidence` for full reads; the sweep's light listing leaves evidence out.
 */

export type DefenderSourceOptions = Omit<ODataClientOptions, "name" | "refusal" | "headers"> & { baseUrl: string };

export class DefenderSource implements AlertSource {
  readonly name = "defender";
  private readonly http: ODataClient;
  private readonly origin: string;

  constructor(private readonly options: DefenderSourceOptions) {
    this.origin = new URL(options.baseUrl).origin;
    this.http = new ODataClient({ ...options, name: "defender", refusal });
  }

  /** Response bytes received, by purpose. */
  get bytes(): { incremental: number; sweep: number } {
    return this.http.bytes;
  }

  listUrl(query: WindowQuery): string {
    const filter = `lastUpdateTime ge ${new Date(query.from).toISOString()} and lastUpdateTime lt ${new Date(query.to).toISOString()}`;
    const params = new URLSearchParams({ $filter: filter });
    if (query.full) params.set("$expand", "evidence");
    params.set("$top", String(query.top));
    if (query.skip) params.set("$skip", String(query.skip));
    return `${this.options.baseUrl}/api/alerts?${params.toString().replace(/\+/g, "%20")}`;
  }

  /**
   * One request with `$top`: a window is either complete in one answer or full (as many
   * items as `$top`). A nextLink, should the service send one, is followed on the API's
   * own origin only.
   */
  async readWindow(query: WindowQuery, options: ReadOptions, sink: ItemSink): Promise<WindowAnswer> {
    await options.beforeRequest();
    const first = await this.http.page(this.listUrl(query), options, toRawAlert, sink);
    const answer: WindowAnswer = { times: first.times, full: first.items >= query.top };
    if (answer.full) return answer;
    for (let next = first.nextLink; next; ) {
      await options.beforeRequest();
      const more = await this.http.page(checkedNextLink(next, this.origin), options, toRawAlert, sink);
      answer.times.push(...more.times);
      next = more.nextLink;
    }
    return answer;
  }

  /** `$skip` pages of `$top` until a short page: the only deep paging this API has. */
  async readExhaustive(query: WindowQuery, options: ReadOptions): Promise<RawAlert[]> {
    const alerts: RawAlert[] = [];
    for (let skip = 0; ; skip += query.top) {
      await options.beforeRequest();
      const page = await this.http.page(this.listUrl({ ...query, skip }), options, toRawAlert);
      alerts.push(...page.alerts);
      if (page.items < query.top) return alerts;
    }
  }
}

function refusal(status: number): string {
  if (status === 401 || status === 403) {
    return 'Defender refused to list alerts: the consenting account needs the "View Data" role on all device groups';
  }
  return `Defender API answered ${status}`;
}

const KEPT_FIELDS = [...ALERT_COLUMNS, "incidentId", "alertCreationTime"];

function toRawAlert(json: string): RawAlert {
  const parsed = JSON.parse(json) as Record<string, unknown>;
  const id = parsed.id;
  const lastUpdateTime = parsed.lastUpdateTime;
  if (typeof id !== "string" || id === "" || typeof lastUpdateTime !== "string" || !canonicalTime(lastUpdateTime)) {
    throw new SourceApiError(200, "InvalidAlert", "An alert without id or a readable lastUpdateTime was returned", true);
  }
  // Keep only the columns' fields: the parsed evidence would double a page's memory.
  // Defender's own field names and values are the read API's vocabulary.
  const fields: Record<string, unknown> = {};
  for (const name of KEPT_FIELDS) fields[name] = parsed[name];
  return { json, id, lastUpdateTime, fields };
}
