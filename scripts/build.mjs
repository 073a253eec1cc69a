#!/usr/bin/env node
// `npm run build`: dist/ from scratch. The TypeScript of src/, gen/ and handlers/ compiled by tsc
// (tsconfig.build.json: JavaScript, declarations, source maps), then the files tsc does not copy:
// the Lua scripts of src/store/lua/ (read at run time next to the compiled store).
//
//   node scripts/build.mjs               build; fails when TypeScript is not installed
//   node scripts/build.mjs --if-possible  the `prepare` step: without TypeScript (this package installed
//                                        from a directory whose dependencies are not installed), say
//                                        so and leave dist/ as it is instead of failing the install
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const require = createRequire(import.meta.url);

/** Non-TypeScript files dist/ needs, copied as they are: [from, to], relative to the root. */
const ASSETS = [["src/store/lua", "dist/src/store/lua"]];

let tsc;
try {
  tsc = require.resolve("typescript/bin/tsc");
} catch {
  if (!process.argv.includes("--if-possible")) {
    console.error("build: TypeScript is not installed here: run `npm ci` (or `npm install`) first");
    process.exit(1);
  }
  const state = existsSync(join(dist, "src/index.js")) ? "dist/ is left as it is" : "dist/ is NOT built";
  console.error(
    `baichuan: not built (TypeScript, a devDependency, is not installed in ${root}); ${state}.\n` +
      `baichuan: run \`npm ci\` there (it builds dist/), or install a packed or git copy instead (see the README).`,
  );
  process.exit(0);
}

rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], { stdio: "inherit" });
for (const [from, to] of ASSETS) cpSync(join(root, from), join(root, to), { recursive: true });
console.log("dist/: built");
