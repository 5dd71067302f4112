import type { DestinationConfig } from "../config.js";
import type { Destination, DestinationDeps } from "../destination.js";
import { createSentinelDestination } from "./sentinel.js";
import { createSplunkDestination } from "./splunk.js";
import { createWebhookDestination } from "./webhook.js";

/** One module per destination type, behind the one Destination interface. */
export function createDestination(config: DestinationConfig, deps: DestinationDeps): Destination {
  switch (config.type) {
    case "sentinel":
      return createSentinelDestination(config, deps);
    case "splunk":
      return createSplunkDestination(config, deps);
    case "webhook":
      return createWebhookDestination(config, deps);
  }
}
