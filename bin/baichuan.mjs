#!/usr/bin/env node
// The `baichuan` command line (src/cli/main.ts). In the source tree it runs through tsx (no build
// needed); an installed package, which ships dist/ and not src/, runs the built dist/src/cli/main.js.
import { existsSync } from "node:fs";

const source = new URL("../src/cli/main.ts", import.meta.url);
let main;
if (existsSync(source)) {
  const { register } = await import("tsx/esm/api");
  register();
  ({ main } = await import(source.href));
} else {
  ({ main } = await import(new URL("../dist/src/cli/main.js", import.meta.url).href));
}

// Ctrl-C: the command in flight is aborted and ends cleanly (exit 130); a second Ctrl-C exits at once.
const interrupt = new AbortController();
process.once("SIGINT", () => {
  interrupt.abort();
  process.once("SIGINT", () => process.exit(130));
});

const code = await main(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  signal: interrupt.signal,
});
// Exit once the output is flushed, without waiting for idle connections to close.
process.stdout.write("", () => process.stderr.write("", () => process.exit(code)));
