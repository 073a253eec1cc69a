#!/usr/bin/env node
// Build the dashboard: type-check ui/ (its own tsconfig: DOM types), then bundle ui/app.ts and what
// it imports into one minified file, ui/dist/app.js. Deterministic (no timestamps, no source map,
// no comments), so CI can rebuild it and compare with the committed file.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", join(root, "ui/tsconfig.json")], {
  stdio: "inherit",
});

const result = await build({
  absWorkingDir: root,
  entryPoints: ["ui/app.ts"],
  outfile: "ui/dist/app.js",
  tsconfig: "ui/tsconfig.json",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  sourcemap: false,
  legalComments: "none",
  charset: "utf8",
  metafile: true,
  logLevel: "warning",
});
const bytes = Object.values(result.metafile.outputs).reduce((sum, out) => sum + out.bytes, 0);
console.log(`ui/dist/app.js: ${(bytes / 1024).toFixed(1)} KiB`);
