import {
  type AccountInfo,
  BrowserCacheLocation,
  InteractionRequiredAuthError,
  PublicClientApplication,
} from "@azure/msal-browser";

/**
 * Sign-in with MSAL (authorization code + PKCE, a redirect to Entra ID and back). MSAL keeps
 * its tokens in session storage (gone when the tab closes); the console keeps none of its
 * own anywhere. The authority is known in advance (knownAuthorities and its metadata from
 * config.json), so MSAL makes no instance-discovery or metadata request.
 */

export interface ConsoleConfig {
  configured: boolean;
  clientId: string;
  authority: string;
  knownAuthorities: string[];
  authorityMetadata: Record<string, unknown>;
  scopes: string[];
  redirectUri: string;
}

export type Role = "Reader" | "Operator" | "Admin";
const RANK: Record<Role, number> = { Reader: 1, Operator: 2, Admin: 3 };

export interface Session {
  account: AccountInfo;
  /** The highest operator role in the access token (the API checks it again on every call). */
  role: Role | undefined;
  token(): Promise<string>;
  can(role: Role): boolean;
  signOut(): Promise<void>;
}

export async function loadConfig(): Promise<ConsoleConfig> {
  const response = await fetch("config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`config.json answered ${response.status}`);
  return (await response.json()) as ConsoleConfig;
}

function rolesOf(accessToken: string): Role[] {
  try {
    const payload = accessToken.split(".")[1] ?? "";
    const json = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))) as { roles?: unknown };
    return Array.isArray(json.roles) ? (json.roles.filter((r) => r === "Reader" || r === "Operator" || r === "Admin") as Role[]) : [];
  } catch {
    return [];
  }
}

function highest(roles: Role[]): Role | undefined {
  return roles.sort((a, b) => RANK[b] - RANK[a])[0];
}

/** Completes a sign-in that just came back, or returns the session already open, or undefined. */
export async function startSession(config: ConsoleConfig): Promise<{ session?: Session; signIn: () => Promise<void> }> {
  const msal = new PublicClientApplication({
    auth: {
      clientId: config.clientId,
      authority: config.authority,
      knownAuthorities: config.knownAuthorities,
      authorityMetadata: JSON.stringify(config.authorityMetadata),
      redirectUri: config.redirectUri,
      postLogoutRedirectUri: config.redirectUri,
    },
    cache: { cacheLocation: BrowserCacheLocation.SessionStorage },
  });
  await msal.initialize();
  const result = await msal.handleRedirectPromise();
  const account = result?.account ?? msal.getActiveAccount() ?? msal.getAllAccounts()[0];
  const signIn = () => msal.loginRedirect({ scopes: config.scopes, prompt: "select_account" });
  if (!account) return { signIn };
  msal.setActiveAccount(account);
  const token = async (): Promise<string> => {
    try {
      return (await msal.acquireTokenSilent({ scopes: config.scopes, account })).accessToken;
    } catch (err) {
      if (err instanceof InteractionRequiredAuthError) {
        await msal.acquireTokenRedirect({ scopes: config.scopes, account });
        return new Promise<string>(() => {}); // the page navigates away
      }
      throw err;
    }
  };
  // The role decides which buttons show; every call is authorized by the API anyway.
  const role = highest(rolesOf(result?.accessToken || (await token())));
  return {
    signIn,
    session: {
      account,
      role,
      token,
      can: (needed) => role !== undefined && RANK[role] >= RANK[needed],
      signOut: () => msal.logoutRedirect({ account }),
    },
  };
}
