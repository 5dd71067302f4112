/**
 * The sandbox's Microsoft Graph side (issue 14): who the simulated Graph security API lets
 * in, the alerts_v2 alerts of the customer tenants whose source is `graph`, and their
 * simulated SOC activity (new alerts; open ones move New > InProgress > Resolved with a
 * comment each time), as `createActivity` does for the Defender tenants.
 */
import { formatTimestamp, type Rng, toTicks } from "../simulators/alerts.js";
import { type FakeEntra, GRAPH_RESOURCE } from "../simulators/entra.js";
import type { FakeGraph, GraphPrincipal } from "../simulators/graph.js";
import { type GraphAlert, makeGraphAlert, makeGraphAlerts } from "../simulators/graph-alerts.js";
import type { ActivityReport, SandboxTenant } from "./sandbox-servers.js";

/** Graph accepts the simulated Entra ID's tokens for Graph, with their delegated scopes (scp) or application roles. */
export function graphAuthenticator(entra: FakeEntra): (bearer: string) => Promise<GraphPrincipal | null> {
  return async (bearer) => {
    const claims = await entra.verifyAccessToken(bearer, GRAPH_RESOURCE);
    if (!claims) return null;
    return { tenantId: claims.tenantId, permissions: [...(claims.scp?.split(" ") ?? []), ...claims.roles] };
  };
}

/** `count` alerts over the last 6 days (inside the first pull's 7-day lookback, before its 60 s lag). */
export function graphSeedAlerts(tenantId: string, count: number, now: number): GraphAlert[] {
  return makeGraphAlerts({
    count,
    from: new Date(now - 6 * 24 * 3600_000),
    to: new Date(now - 2 * 60_000),
    seed: `sandbox-graph:${tenantId}`,
    tenantId,
  });
}

const GRAPH_ANALYSTS = ["soc.tier1@mssp.example", "soc.tier2@mssp.example", "analyst@mssp.example"];
const GRAPH_COMMENT_AUTHORS = ["SOC Tier 1", "SOC Tier 2", "MSSP Analyst"];
const GRAPH_COMMENTS = [
  "Triaged: mailbox rule removed, user notified.",
  "Sign-in confirmed by the user from a new device.",
  "Escalated to tier 2.",
  "Blocked the sender domain tenant-wide.",
];
/** Graph's own vocabulary (camelCase enum members), unlike Defender's. */
const GRAPH_RESOLUTIONS: [string, string][] = [
  ["truePositive", "malware"],
  ["truePositive", "phishing"],
  ["falsePositive", "clean"],
  ["informationalExpectedActivity", "securityTesting"],
];

/** One round of activity on the Graph tenants: 2-5 open alerts move on, 1-4 new ones arrive. */
export function createGraphActivity(graph: FakeGraph, tenants: readonly SandboxTenant[], rng: Rng): (at: Date) => ActivityReport[] {
  const int = (min: number, max: number) => min + Math.floor(rng() * (max - min + 1));
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rng() * list.length)]!;
  return (at) => {
    const reports: ActivityReport[] = [];
    const stamp = formatTimestamp(at, 7);
    for (const tenant of tenants) {
      const updated: string[] = [];
      const open = graph.getAlerts(tenant.id).filter((a) => a.status !== "resolved");
      const updates = Math.min(open.length, int(2, 5));
      for (let i = 0; i < updates; i++) {
        const alert = open.splice(Math.floor(rng() * open.length), 1)[0]!;
        const changes: Partial<GraphAlert> = {
          comments: [...alert.comments, { comment: pick(GRAPH_COMMENTS), createdByDisplayName: pick(GRAPH_COMMENT_AUTHORS), createdDateTime: stamp }],
        };
        if (alert.status === "new" || alert.status === "unknown") {
          Object.assign(changes, { status: "inProgress", assignedTo: pick(GRAPH_ANALYSTS) });
        } else {
          const [classification, determination] = pick(GRAPH_RESOLUTIONS);
          Object.assign(changes, { status: "resolved", resolvedDateTime: stamp, classification, determination });
        }
        graph.touch(tenant.id, [alert.id], at, changes);
        updated.push(alert.id);
      }
      const added: string[] = [];
      const count = int(1, 4);
      for (let i = 0; i < count; i++) {
        const alert = newGraphAlert(tenant.id, at, rng);
        if (graph.getAlert(tenant.id, alert.id)) continue;
        graph.upsertAlert(tenant.id, alert);
        added.push(alert.id);
      }
      reports.push({ tenantId: tenant.id, name: tenant.name, source: "graph", added, updated, total: graph.getAlerts(tenant.id).length });
    }
    return reports;
  };
}

/** A freshly raised alert: created within the last hour, status new, nobody on it yet. */
function newGraphAlert(tenantId: string, at: Date, rng: Rng): GraphAlert {
  const hourAgo = toTicks(at) - 3600n * 10_000_000n;
  const fresh = () =>
    makeGraphAlert({
      rng,
      lastUpdateDateTime: at,
      tenantId,
      status: "new",
      classification: "unknown",
      determination: "unknown",
      assignedTo: null,
      resolvedDateTime: null,
      comments: [],
    });
  let alert = fresh();
  for (let i = 0; i < 20 && toTicks(alert.createdDateTime) < hourAgo; i++) alert = fresh();
  return alert;
}
