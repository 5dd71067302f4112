/** Finds Azure Functions Core Tools (`func`) on PATH, as a shell would. */
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, join } from "node:path";

/** The executable `command` on PATH, if any (func.cmd / func.exe on Windows). */
export function findOnPath(command: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const windows = process.platform === "win32";
  const exts = windows ? (env.PATHEXT ?? ".EXE;.CMD;.BAT").split(";").filter(Boolean) : [""];
  for (const dir of (env.PATH ?? env.Path ?? "").split(delimiter)) {
    if (!dir) continue;
    for (const ext of exts) {
      const candidate = join(dir, command + ext.toLowerCase());
      try {
        if (!statSync(candidate).isFile()) continue;
        if (!windows) accessSync(candidate, constants.X_OK);
        return candidate;
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

/** The one line `npm start` and `npm run sandbox` print when they run the app on the dev host. */
export const NO_FUNC_LINE =
  'Azure Functions Core Tools ("func") is not on PATH: running the app on the dev host (dev/host) instead; see docs/sandbox.md#the-dev-host.';
