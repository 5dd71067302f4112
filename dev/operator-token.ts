/**
 * `node dist/dev/operator-token.js [Reader|Operator|Admin]`: prints an operator access token
 * of the running sandbox (default Admin), for curl:
 *
 *   export TOKEN=$(node dist/dev/operator-token.js)
 *   curl http://localhost:7071/api/tenants -H "Authorization: Bearer $TOKEN"
 *
 * It asks the sandbox's Entra ID simulator (ENTRA_AUTHORITY_HOST of local.settings.json) for
 * an app-only token of the role's automation application (client credentials), exactly as
 * automation does against Entra ID. Tokens last an hour. Sandbox only: the automation
 * applications exist in the simulator alone.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Agent, fetch as undiciFetch } from "undici";
import { repoRoot } from "../simulators/https.js";
import { automationToken, defaultAutomation, OPERATOR_ROLES, type Role } from "../simulators/operators.js";

async function main(): Promise<void> {
  const role = (process.argv[2] ?? "Admin") as Role;
  if (!OPERATOR_ROLES.includes(role)) throw new Error(`the role must be one of ${OPERATOR_ROLES.join(", ")}`);
  const root = repoRoot(import.meta.url);
  const settings = (JSON.parse(readFileSync(join(root, "local.settings.json"), "utf8")) as { Values: Record<string, string> }).Values;
  const entra = settings.ENTRA_AUTHORITY_HOST;
  const tenantId = settings.OPERATOR_TENANT_ID;
  const apiClientId = settings.OPERATOR_API_CLIENT_ID;
  if (!entra || !tenantId || !apiClientId || !settings.NODE_EXTRA_CA_CERTS) {
    throw new Error("local.settings.json is not the sandbox's: run npm run sandbox first");
  }
  const tls = new Agent({ connect: { ca: readFileSync(settings.NODE_EXTRA_CA_CERTS, "utf8") } });
  try {
    const automation = Object.fromEntries(OPERATOR_ROLES.map((r) => [r, defaultAutomation(tenantId, r)])) as Record<Role, { clientId: string; clientSecret: string }>;
    const token = await automationToken(entra, { tenantId, apiClientId, automation }, role, (url, init) =>
      undiciFetch(url, { ...init, dispatcher: tls }),
    );
    process.stdout.write(`${token}\n`);
  } finally {
    await tls.close();
  }
}

main().catch((err: unknown) => {
  console.error(`operator-token: ${err instanceof Error ? err.message : String(err)} (is npm run sandbox running?)`);
  process.exit(1);
});
