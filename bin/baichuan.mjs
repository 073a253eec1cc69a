#!/usr/bin/env node
// The `baichuan` command line: the built dist/src/cli/bin.js (src/cli/bin.ts), plain JavaScript.
// In a clone, `npm ci` builds dist/ (prepare) and `npm run build` rebuilds it after a change.
import { fileURLToPath } from "node:url";

const bin = fileURLToPath(new URL("../dist/src/cli/bin.js", import.meta.url));
try {
  await import(new URL("../dist/src/cli/bin.js", import.meta.url).href);
} catch (err) {
  if (err?.code !== "ERR_MODULE_NOT_FOUND" || !String(err.message).includes(bin)) throw err;
  process.stderr.write(`baichuan: ${bin} is not built: run \`npm run build\` (or \`npm ci\`) in the package\n`);
  process.exit(1);
}
