/**
 * The Bicep CLI for the tests. `.ci/run` restores it from NuGet (package
 * Azure.Bicep.CommandLine.<rid>) into .tools/nuget and exports BICEP_PATH; on a
 * contributor's machine it is also found on PATH or where `az bicep install` puts it.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";
import type { ArmTemplate } from "./arm.js";

export const BICEP_INSTRUCTIONS =
  "no Bicep CLI found: run .ci/run once (it restores Azure.Bicep.CommandLine from NuGet into .tools/nuget), " +
  "or install it (az bicep install, https://aka.ms/bicep-install) and put it on PATH or in BICEP_PATH";

const exe = process.platform === "win32" ? "bicep.exe" : "bicep";

/** Path of a usable bicep binary, or undefined. */
export function findBicep(root: string): string | undefined {
  const candidates: string[] = [];
  if (process.env.BICEP_PATH) candidates.push(process.env.BICEP_PATH);
  const nuget = join(root, ".tools", "nuget");
  if (existsSync(nuget)) {
    for (const pkg of readdirSync(nuget).filter((d) => d.startsWith("azure.bicep.commandline."))) {
      for (const version of readdirSync(join(nuget, pkg)).sort().reverse()) candidates.push(join(nuget, pkg, version, "tools", exe));
    }
  }
  for (const dir of (process.env.PATH ?? "").split(delimiter)) if (dir) candidates.push(join(dir, exe));
  candidates.push(join(homedir(), ".azure", "bin", exe));
  for (const candidate of candidates) {
    if (!existsSync(candidate)) continue;
    const probe = spawnSync(candidate, ["--version"], { encoding: "utf8" });
    if (probe.status === 0) return candidate;
  }
  return undefined;
}

export interface Diagnostic {
  file: string;
  line: number;
  column: number;
  level: "Error" | "Warning" | "Info";
  code: string;
  message: string;
}

/** Diagnostics in Bicep's default text format: `path(line,col) : Level code: message`. */
export function parseDiagnostics(output: string): Diagnostic[] {
  const found: Diagnostic[] = [];
  for (const line of output.split(/\r?\n/)) {
    const m = /^(.*)\((\d+),(\d+)\) : (Error|Warning|Info) ([^:]+): (.*)$/.exec(line.trim());
    if (m) {
      found.push({
        file: m[1] ?? "",
        line: Number(m[2]),
        column: Number(m[3]),
        level: m[4] as Diagnostic["level"],
        code: m[5] ?? "",
        message: m[6] ?? "",
      });
    }
  }
  return found;
}

export interface BicepRun {
  status: number | null;
  stdout: string;
  stderr: string;
  diagnostics: Diagnostic[];
}

export function runBicep(bicep: string, args: string[], cwd: string): BicepRun {
  const result = spawnSync(bicep, args, {
    cwd,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, DOTNET_CLI_TELEMETRY_OPTOUT: "1", DOTNET_NOLOGO: "1" },
  });
  return {
    status: result.status,
    stdout: result.stdout ?? "",
    stderr: result.stderr ?? "",
    diagnostics: parseDiagnostics(`${result.stdout ?? ""}\n${result.stderr ?? ""}`),
  };
}

/** A key for the compiled template: every .bicep file, bicepconfig.json and the CLI binary. */
function buildKey(bicep: string, root: string): string {
  const hash = createHash("sha256");
  const { size, mtimeMs } = statSync(bicep);
  hash.update(`${bicep}|${size}|${mtimeMs}\n`);
  const infra = join(root, "infra");
  const files = readdirSync(infra, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(".bicep"))
    .map((e) => join(e.parentPath, e.name))
    .sort();
  for (const file of [...files, join(root, "bicepconfig.json")]) {
    hash.update(`${file}\n`);
    if (existsSync(file)) hash.update(readFileSync(file));
  }
  return hash.digest("hex").slice(0, 32);
}

const compiled = new Map<string, { run: BicepRun; template?: ArmTemplate }>();

/**
 * `bicep build <file> --stdout`, once per process, and cached in .cache/bicep by the
 * content of infra/ and the CLI (test files run in separate processes; the cache spares
 * a second compile when nothing changed). `fresh` always compiles (and refreshes the cache).
 */
export function buildTemplate(
  bicep: string,
  root: string,
  options: { file?: string; fresh?: boolean } = {},
): { run: BicepRun; template?: ArmTemplate } {
  const file = options.file ?? "infra/main.bicep";
  const key = `${buildKey(bicep, root)}-${file.replace(/[^\w.-]/g, "_")}`;
  let entry = options.fresh ? undefined : compiled.get(key);
  if (entry) return entry;
  const cacheDir = join(root, ".cache", "bicep");
  const cacheFile = join(cacheDir, `${key}.json`);
  if (!options.fresh && existsSync(cacheFile)) {
    entry = JSON.parse(readFileSync(cacheFile, "utf8")) as { run: BicepRun; template?: ArmTemplate };
  } else {
    const run = runBicep(bicep, ["build", file, "--stdout", "--no-restore"], root);
    entry = { run, ...(run.status === 0 ? { template: JSON.parse(run.stdout) as ArmTemplate } : {}) };
    if (entry.template) {
      mkdirSync(cacheDir, { recursive: true });
      const partial = `${cacheFile}.${process.pid}`;
      writeFileSync(partial, JSON.stringify(entry));
      renameSync(partial, cacheFile);
    }
  }
  compiled.set(key, entry);
  return entry;
}
