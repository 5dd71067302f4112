/**
 * Builds the operator console (console/) into dist/console, as part of `npm run build`:
 * esbuild bundles console/src/main.tsx (Preact, @azure/msal-browser) into one minified
 * script and one style sheet with content hashes in their names (cached for a year), and
 * index.html gets those names. Nothing inline, so the page's Content-Security-Policy needs
 * no 'unsafe-inline'. It prints the sizes (raw and gzip'd); docs/operator.md states them.
 *
 * The console's types are checked by `tsc -p console/tsconfig.json` (in the same script).
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CONSOLE_SOURCE = join(ROOT, "console");
export const CONSOLE_OUT = join(ROOT, "dist", "console");

export interface ConsoleBuild {
  /** Output files relative to dist/console, with raw and gzip'd bytes. */
  files: { name: string; bytes: number; gzipBytes: number }[];
}

export async function buildConsole(): Promise<ConsoleBuild> {
  rmSync(CONSOLE_OUT, { recursive: true, force: true });
  const result = await build({
    entryPoints: { app: join(CONSOLE_SOURCE, "src", "main.tsx") },
    bundle: true,
    minify: true,
    format: "esm",
    target: ["es2022", "chrome111", "firefox111", "safari16"],
    platform: "browser",
    outdir: join(CONSOLE_OUT, "assets"),
    entryNames: "[name]-[hash]",
    jsx: "automatic",
    jsxImportSource: "preact",
    legalComments: "linked",
    metafile: true,
    logLevel: "warning",
    define: { "process.env.NODE_ENV": '"production"' },
  });
  const outputs = Object.keys(result.metafile.outputs).map((p) => relative(CONSOLE_OUT, join(ROOT, p)).split("\\").join("/"));
  const js = outputs.find((p) => /^assets\/app-[A-Z0-9]+\.js$/.test(p));
  const css = outputs.find((p) => /^assets\/app-[A-Z0-9]+\.css$/.test(p));
  if (!js || !css) throw new Error(`the console build made no app script or style sheet (${outputs.join(", ")})`);
  const html = readFileSync(join(CONSOLE_SOURCE, "index.html"), "utf8").replace("%APP_JS%", js).replace("%APP_CSS%", css);
  writeFileSync(join(CONSOLE_OUT, "index.html"), html);
  for (const file of readdirSync(join(CONSOLE_SOURCE, "public"))) copyFileSync(join(CONSOLE_SOURCE, "public", file), join(CONSOLE_OUT, file));
  const files = readdirSync(CONSOLE_OUT, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => {
      const path = join(e.parentPath, e.name);
      return { name: relative(CONSOLE_OUT, path).split("\\").join("/"), bytes: statSync(path).size, gzipBytes: gzipSync(readFileSync(path)).length };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
  return { files };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  mkdirSync(CONSOLE_OUT, { recursive: true });
  buildConsole().then(
    ({ files }) => {
      const kb = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
      const total = files.reduce((s, f) => ({ bytes: s.bytes + f.bytes, gzip: s.gzip + f.gzipBytes }), { bytes: 0, gzip: 0 });
      console.log(`console: ${files.map((f) => `${basename(f.name)} ${kb(f.bytes)} (${kb(f.gzipBytes)} gzip'd)`).join(", ")}; total ${kb(total.bytes)} (${kb(total.gzip)} gzip'd)`);
    },
    (err: unknown) => {
      console.error(`console build failed: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    },
  );
}
