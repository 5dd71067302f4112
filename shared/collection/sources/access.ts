import type { CloudEndpoints } from "../../platform/config.js";
import type { SourceName } from "../source.js";

/**
 * What a tenant must grant for each source: the token scope (`{resource}/.default`), the
 * delegated permissions that let a user's token read alerts, and the application
 * permission of app-only access. Consent asks for the scope of the tenant's chosen source.
 */
export interface SourceAccess {
  source: SourceName;
  /** `{resource}/.default` */
  scope: string;
  resource: string;
  /** Delegated permissions any one of which grants reading alerts. */
  delegated: readonly string[];
  /** The application permission (app role) of app-only access. */
  application: string;
}

export const SOURCE_NAMES = ["defender", "graph"] as const;

export function sourceAccess(source: SourceName, endpoints: CloudEndpoints): SourceAccess {
  const scope = source === "graph" ? endpoints.graphScope : endpoints.apiScope;
  const resource = scope.replace(/\/\.default$/i, "");
  return source === "graph"
    ? { source, scope, resource, delegated: ["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"], application: "SecurityAlert.Read.All" }
    : { source, scope, resource, delegated: ["Alert.Read", "Alert.ReadWrite"], application: "Alert.Read.All" };
}

/**
 * Whether a token response's `scope` grants reading alerts of the source: one of its
 * delegated permissions, short (`Alert.Read`) or resource-qualified
 * (`https://api.securitycenter.microsoft.com/Alert.Read`).
 */
export function grantsRead(scope: string | undefined, access: SourceAccess): boolean {
  const resource = access.resource.toLowerCase();
  const wanted = access.delegated.map((p) => p.toLowerCase());
  return (scope ?? "")
    .split(/\s+/)
    .map((s) => s.toLowerCase())
    .some((s) => wanted.includes(s) || wanted.some((p) => s === `${resource}/${p}`));
}
