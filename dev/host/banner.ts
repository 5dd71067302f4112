/** What the dev host prints about itself at start. */
import type { Host } from "./host.js";

/** Printed once the host listens; dev/sandbox.ts waits for it. */
export const READY_LINE = "Dev host ready at";

/** The list of functions, like the one `func start` prints. */
export function describeFunctions(host: Host, base: string): string[] {
  const lines: string[] = [];
  for (const fn of host.app.functions) {
    const route = host.routes.find((r) => r.functionName === fn.name);
    if (route) {
      const methods = route.methods ? route.methods.join(",") : "ALL";
      lines.push(`  ${fn.name}: [${methods}] ${base}${route.path}${route.authLevel === "anonymous" ? "" : "  (key)"}`);
    } else if (fn.kind === "timer" && !host.errors.has(fn.name)) {
      lines.push(`  ${fn.name}: timerTrigger, next run ${host.nextRun(fn.name)?.toISOString() ?? "?"}`);
    } else if (fn.kind === "queue" && !host.errors.has(fn.name)) {
      lines.push(`  ${fn.name}: queueTrigger on queue '${host.queueListener(fn.name).queueName}'`);
    } else {
      lines.push(`  ${fn.name}: in error (see above)`);
    }
  }
  return lines;
}
