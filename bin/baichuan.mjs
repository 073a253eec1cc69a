#!/usr/bin/env node
// The `baichuan` command line (src/cli.ts), run from the source tree through tsx: no build needed.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli.ts");

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
