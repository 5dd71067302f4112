import type { DestinationConfig } from "../config.js";
import type { Destination, DestinationDeps } from "../destination.js";
import { createWebhookDestination } from "./webhook.js";

/** One module per destination type, behind the one Destination interface. */
export function createDestination(config: DestinationConfig, deps: DestinationDeps): Destination {
  switch (config.type) {
    case "webhook":
      return createWebhookDestination(config, deps);
    default:
      throw new Error(`Destination type ${config.type} is not available in this build`);
  }
}
