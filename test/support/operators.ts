import { FakeEntra } from "../../simulators/entra.js";
import { testCerts } from "../../simulators/https.js";
import { automationToken, type OperatorSetup, type Role, setupOperators } from "../../simulators/operators.js";
import { unensuredServices } from "../../shared/platform/services.js";
import { type OperatorTokenSource, useOperatorTokens } from "./functions.js";

/**
 * Operator identity for the tests: the MSSP tenant with its two registrations, one user
 * and one automation application per role (simulators/operators.ts), and the source of the
 * tokens test/support/functions.ts sends to operator routes: by default an Admin
 * automation token from the client-credentials grant, as real automation gets one.
 */

export const OPERATOR_TENANT_ID = "3c9f1e52-7a41-4d2b-9e0f-5b6a7c8d9e01";
export const OPERATOR_API_CLIENT_ID = "b8e4a2d1-0c3f-4e5a-8b7c-6d9e0f1a2b3c";
export const OPERATOR_CONSOLE_CLIENT_ID = "d2c1b0a9-8f7e-4d6c-9b5a-4e3f2a1b0c9d";

export function setupTestOperators(entra: FakeEntra, publicBaseUrl: string): OperatorSetup {
  return setupOperators(entra, {
    tenantId: OPERATOR_TENANT_ID,
    apiClientId: OPERATOR_API_CLIENT_ID,
    consoleClientId: OPERATOR_CONSOLE_CLIENT_ID,
    publicBaseUrl,
  });
}

/** The app's clock (tests move it), or the real one before the app has settings. */
function appNow(): number {
  try {
    return unensuredServices().now().getTime();
  } catch {
    return Date.now();
  }
}

/**
 * Automation tokens per role, minted at the app's current time (so a test that moves the
 * app's clock still sends a token that is valid then), and reused while they stay valid.
 */
export function operatorTokenSource(entra: FakeEntra, setup: OperatorSetup): OperatorTokenSource {
  const cache = new Map<Role, { token: string; at: number }>();
  return async (role) => {
    const now = appNow();
    const cached = cache.get(role);
    if (cached && now >= cached.at - 120_000 && now <= cached.at + 50 * 60_000) return cached.token;
    const realNow = entra.now;
    entra.now = () => now;
    try {
      const token = await automationToken(entra.url, setup, role);
      cache.set(role, { token, at: now });
      return token;
    } finally {
      entra.now = realNow;
    }
  };
}

/** A fake Entra with the MSSP tenant only, for tests that run the app without the harness. */
export async function startOperatorIdentity(publicBaseUrl = "https://collector.localhost"): Promise<{
  entra: FakeEntra;
  setup: OperatorSetup;
  settings: Record<string, string>;
  stop(): Promise<void>;
}> {
  const entra = new FakeEntra({ certs: testCerts() });
  await entra.start();
  const setup = setupTestOperators(entra, publicBaseUrl);
  useOperatorTokens(operatorTokenSource(entra, setup));
  return {
    entra,
    setup,
    settings: { ...setup.settings, ENTRA_AUTHORITY_HOST: entra.url },
    async stop() {
      useOperatorTokens(undefined);
      await entra.stop();
    },
  };
}
