/** local.settings.json and the worker environment, read the way Core Tools reads them. */
import { existsSync, readFileSync } from "node:fs";

export interface LocalSettings {
  values: Record<string, string>;
  port?: number;
}

/** Reads local.settings.json as Core Tools does; a missing file is no settings. */
export function readLocalSettings(path: string): LocalSettings {
  if (!existsSync(path)) return { values: {} };
  let parsed: { IsEncrypted?: unknown; Values?: unknown; Host?: { LocalHttpPort?: unknown } };
  try {
    parsed = JSON.parse(readFileSync(path, "utf8")) as typeof parsed;
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (parsed.IsEncrypted === true) throw new Error(`${path} is encrypted; the dev host reads only unencrypted settings.`);
  const values: Record<string, string> = {};
  for (const [name, value] of Object.entries((parsed.Values ?? {}) as Record<string, unknown>)) {
    if (value === null || value === undefined) continue;
    values[name] = typeof value === "string" ? value : String(value);
  }
  const port = Number(parsed.Host?.LocalHttpPort);
  return { values, ...(Number.isInteger(port) && port > 0 ? { port } : {}) };
}

/**
 * The worker's environment: the settings that the environment does not already define
 * (Core Tools keeps environment variables over local.settings.json), and the names skipped.
 */
export function workerEnv(env: NodeJS.ProcessEnv, values: Record<string, string>): { env: NodeJS.ProcessEnv; skipped: string[] } {
  const out: NodeJS.ProcessEnv = { ...env };
  const skipped: string[] = [];
  const present = new Set(Object.keys(env).map((n) => (process.platform === "win32" ? n.toUpperCase() : n)));
  for (const [name, value] of Object.entries(values)) {
    if (present.has(process.platform === "win32" ? name.toUpperCase() : name)) skipped.push(name);
    else out[name] = value;
  }
  return { env: out, skipped };
}

/** Splits `languageWorkers__node__arguments` into arguments (double quotes group). */
export function splitArgs(text: string | undefined): string[] {
  if (!text) return [];
  return [...text.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}
