import { app } from "@azure/functions";
import { checkHealth } from "../shared/platform/health.js";
import { json } from "../shared/platform/http.js";
import { services } from "../shared/platform/services.js";

/** GET /api/health: 200 when storage and Key Vault answer, 503 otherwise. No details leak. */
export async function health() {
  try {
    const result = await checkHealth(await services());
    return json(result.status === "ok" ? 200 : 503, result);
  } catch {
    return json(503, { status: "unhealthy" });
  }
}

app.http("health", {
  route: "health",
  methods: ["GET"],
  authLevel: "anonymous",
  handler: health,
});
