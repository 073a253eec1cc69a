/**
 * The `baichuan` process: runs one command (main.ts) with this process's streams, environment and
 * arguments, and exits with its code. bin/baichuan.mjs imports it built (dist/src/cli/bin.js); from
 * the sources: `node --import tsx src/cli/bin.ts ...`.
 */
import { main } from "./main.js";

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
