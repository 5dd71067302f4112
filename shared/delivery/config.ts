import type { DestinationType } from "./destination.js";

/**
 * Destination settings, as shared/platform/config.ts parses them from one prefix scheme,
 * `DESTINATIONS__<name>__<FIELD>`:
 * - every type: `TYPE` (sentinel | splunk | webhook), `ENABLED` (true | false, default true);
 * - sentinel: `DCR_ENDPOINT` (https), `DCR_IMMUTABLE_ID`, `STREAM` (Custom-…);
 * - splunk: `URL` (https, the HEC base), `INDEX`, `SOURCETYPE`, `USE_ACK` (true | false),
 *   `TOKEN_SECRET_NAME` (a secret in KEY_VAULT_URL holding the HEC token);
 * - webhook: `URL` (https), `SECRET_NAME` (a secret in KEY_VAULT_URL holding `whsec_…`; a
 *   second secret `<name>-previous` is signed with too while it exists, for rotation).
 * Secrets never sit in app settings: only Key Vault secret names do. Every bad field is
 * named (never its value).
 */

export interface DestinationBase {
  name: string;
  type: DestinationType;
  enabled: boolean;
}

export interface SentinelConfig extends DestinationBase {
  type: "sentinel";
  dcrEndpoint: string;
  dcrImmutableId: string;
  stream: string;
}

export interface SplunkConfig extends DestinationBase {
  type: "splunk";
  url: string;
  index?: string;
  sourcetype?: string;
  useAck: boolean;
  tokenSecretName: string;
}

export interface WebhookConfig extends DestinationBase {
  type: "webhook";
  url: string;
  secretName: string;
}

export type DestinationConfig = SentinelConfig | SplunkConfig | WebhookConfig;

