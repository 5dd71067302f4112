import { type AzuriteProcess, launchAzurite } from "../../dev/sandbox-servers.js";

/** Real Azurite, from the devDependency, in memory, on free loopback ports. */
export type Azurite = AzuriteProcess;

/** The sandbox's own Azurite launcher, with every port left to the system. */
export function startAzurite(): Promise<Azurite> {
  return launchAzurite({ blob: 0, queue: 0, table: 0 });
}
