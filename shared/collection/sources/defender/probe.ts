import { fetch as undiciFetch } from "undici";

/**
 * One `GET /api/alerts?$top=1`: proves that a token can read alerts (delegated consent, an
 * application-mode consent, or a permission that may have been withdrawn). 401/403 is
 * "forbidden"; anything else that fails (network, 5xx) is "failed". The token is sent, never
 * read: Microsoft's access tokens are for the API, not for the client.
 */
export async function probeAlerts(apiBaseUrl: string, accessToken: string): Promise<"ok" | "forbidden" | "failed"> {
  try {
    const response = await undiciFetch(`${apiBaseUrl}/api/alerts?$top=1`, {
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
