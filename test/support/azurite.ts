import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Real Azurite, from the devDependency, in memory, on free loopback ports. */
export interface Azurite {
  blobPort: number;
  queuePort: number;
  tablePort: number;
  connectionString: string;
  stop(): Promise<void>;
}

const ACCOUNT = "devstoreaccount1";
// Azurite's well-known development key (public, documented, only valid for the emulator).
const KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export async function startAzurite(): Promise<Azurite> {
  const require = createRequire(import.meta.url);
  const entry = join(require.resolve("azurite/package.json"), "..", "dist", "src", "azurite.js");
  const cwd = mkdtempSync(join(tmpdir(), "azurite-"));
  const child: ChildProcess = spawn(
    process.execPath,
    [
      entry,
      "--inMemoryPersistence",
      "--blobHost=127.0.0.1",
      "--queueHost=127.0.0.1",
      "--tableHost=127.0.0.1",
      "--blobPort=0",
      "--queuePort=0",
      "--tablePort=0",
      "--skipApiVersionCheck",
      "--disableTelemetry",
    ],
    { cwd, stdio: ["ignore", "pipe", "pipe"] },
  );
  const ports: Record<string, number> = {};
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      for (const m of output.matchAll(/Azurite (Blob|Queue|Table) service is successfully listening at http:\/\/[^:]+:(\d+)/g)) {
        ports[m[1]!] = Number(m[2]);
      }
      if (ports.Blob && ports.Queue && ports.Table) {
        child.stdout?.off("data", onData);
        child.stdout?.resume();
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once("exit", (code) => reject(new Error(`Azurite exited with ${code}: ${output}`)));
    child.once("error", reject);
  });
  child.removeAllListeners("exit");
  const host = "http://127.0.0.1";
  return {
    blobPort: ports.Blob!,
    queuePort: ports.Queue!,
    tablePort: ports.Table!,
    connectionString:
      `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${KEY};` +
      `BlobEndpoint=${host}:${ports.Blob}/${ACCOUNT};QueueEndpoint=${host}:${ports.Queue}/${ACCOUNT};` +
      `TableEndpoint=${host}:${ports.Table}/${ACCOUNT};`,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(cwd, { recursive: true, force: true });
    },
  };
}
