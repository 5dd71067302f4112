import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { consoleResponse } from "../shared/operator/console.js";
import { safePage } from "../shared/platform/http.js";
import { loggerFrom, unensuredServices } from "../shared/platform/services.js";

/** The console's built files: dist/console, next to dist/functions (in the repository and in the package). */
const ASSETS = join(dirname(fileURLToPath(import.meta.url)), "..", "console");

/**
 * GET /api/console/{*path} (anonymous): the operator console's static files. The page holds
 * no data; it signs in with Entra ID and calls the operator API, which checks every call.
 */
export async function consolePage(request: HttpRequest, context: InvocationContext) {
  return safePage(loggerFrom(context), async () => {
    const path = request.params.path ?? "";
    const trailingSlash = new URL(request.url).pathname.endsWith("/");
    return consoleResponse(unensuredServices().config, ASSETS, path, trailingSlash);
  });
}

app.http("console", {
  route: "console/{*path}",
  methods: ["GET"],
  authLevel: "anonymous",
  handler: consolePage,
});
