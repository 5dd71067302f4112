import { fetch as undiciFetch } from "undici";
import type { CloudEndpoints } from "../../platform/config.js";
import type { SourceName } from "../source.js";

/**
 * One list call with `$top=1` against a tenant's source: proves that a token can read alerts
 * (delegated consent, an application-mode consent, or a permission that may have been
 * withdrawn). 401/403 is "forbidden"; anything else that fails (network, 5xx) is "failed".
 * The token is sent, never read: Microsoft's access tokens are for the API, not the client.
 */
export async function probeSource(source: SourceName, endpoints: CloudEndpoints, accessToken: string): Promise<"ok" | "forbidden" | "failed"> {
  const url = source === "graph" ? `${endpoints.graphBaseUrl}/v1.0/security/alerts_v2?$top=1` : `${endpoints.apiBaseUrl}/api/alerts?$top=1`;
  try {
    const response = await undiciFetch(url, {
      headers: { Authorization: `Bearer ${accessToken}`, Accept: "application/json" },
      signal: AbortSignal.timeout(30_000),
    });
    await response.arrayBuffer();
    if (response.ok) return "ok";
    return response.status === 401 || response.status === 403 ? "forbidden" : "failed";
  } catch {
    return "failed";
  }
}
