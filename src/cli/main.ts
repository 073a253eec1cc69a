/**
 * `baichuan`: the command-line client of a BaiChuan server, built on the generated TaskService and
 * AdminService clients, so it talks to any BaiChuan server over Connect (HTTP/1.1, the default: it
 * goes through proxies), gRPC or gRPC-Web.
 *
 *   baichuan create /demo_api/hello --params '{"name":"you"}' --watch
 *   baichuan ls
 *
 * `main(argv, io)` runs one command and resolves with its exit code; it never exits the process and
 * never throws (bin.ts, the process, exits with the code). Errors are one line on stderr.
 *
 * This file: the entry, finding the command, help, and the errors turned into exit codes and messages.
 * args.ts: options, help texts, parsing; context.ts: I/O, exit codes, the server's clients;
 * commands.ts: the command table and each command (queue.ts: `queue stats`); format.ts: text and JSON output;
 * watch-view.ts: following a task live.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { commandHelp, findCommand, parseCommandArgs, topHelp, UsageError, usageMessage, wantsHelp } from "./args.js";
import { COMMANDS } from "./commands.js";
import { CALL_TIMEOUT_MS, type CliIO, type Context, EXIT, makeContext, note } from "./context.js";
import { oneLine } from "./format.js";

export { type CliIO, EXIT } from "./context.js";

function defaultIO(): CliIO {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/** Run one command line (without the `node` and script arguments); resolves with the exit code. */
export async function main(argv: string[], io: CliIO = defaultIO()): Promise<number> {
  const fail = (code: number, message: string) => {
    note(io, oneLine(message));
    return code;
  };
  // The command is the first positional; global options may come before it.
  let found: { name: string; index: number } | undefined;
  try {
    found = findCommand(argv);
  } catch (err) {
    return fail(EXIT.USAGE, `${usageMessage(err)} (see baichuan --help)`);
  }
  const help = wantsHelp(argv);
  if (!found) {
    if (help) {
      io.stdout.write(topHelp(COMMANDS));
      return EXIT.OK;
    }
    io.stderr.write(topHelp(COMMANDS));
    return fail(EXIT.USAGE, "no command given");
  }
  if (found.name === "help") {
    const topic = argv.slice(found.index + 1).find((a) => !a.startsWith("-"));
    if (topic === undefined) {
      io.stdout.write(topHelp(COMMANDS));
      return EXIT.OK;
    }
    if (!Object.hasOwn(COMMANDS, topic)) return fail(EXIT.USAGE, `unknown command '${topic}' (see baichuan --help)`);
    io.stdout.write(commandHelp(topic, COMMANDS[topic]!));
    return EXIT.OK;
  }
  if (!Object.hasOwn(COMMANDS, found.name)) return fail(EXIT.USAGE, `unknown command '${found.name}' (see baichuan --help)`);
  const name = found.name;
  const command = COMMANDS[name]!;
  if (help) {
    io.stdout.write(commandHelp(name, command));
    return EXIT.OK;
  }

  let ctx: Context;
  try {
    const { values, positionals } = parseCommandArgs([...argv.slice(0, found.index), ...argv.slice(found.index + 1)], command);
    ctx = makeContext(values, positionals, io);
  } catch (err) {
    return fail(EXIT.USAGE, `${name}: ${usageMessage(err)} (see baichuan ${name} --help)`);
  }

  try {
    return await command.run(ctx);
  } catch (err) {
    if (err instanceof UsageError) return fail(EXIT.USAGE, `${name}: ${err.message} (see baichuan ${name} --help)`);
    if (ctx.signal.aborted) return EXIT.INTERRUPTED;
    const e = ConnectError.from(err);
    return fail(exitCodeOf(e), describeError(e, ctx));
  }
}

function exitCodeOf(e: ConnectError): number {
  switch (e.code) {
    case Code.NotFound:
      return EXIT.NOT_FOUND;
    case Code.Unavailable:
    case Code.DeadlineExceeded:
    case Code.Canceled:
      return EXIT.UNAVAILABLE;
    default:
      return EXIT.REFUSED;
  }
}

const NETWORK_ERROR = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ECONNRESET|ETIMEDOUT|socket hang up/;

function describeError(e: ConnectError, ctx: Context): string {
  const code = Code[e.code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
  const message = e.rawMessage || code;
  if (e.code === Code.Unavailable && NETWORK_ERROR.test(message)) {
    return `cannot reach the server at ${ctx.url}: ${message} (set --url or BAICHUAN_URL)`;
  }
  if (e.code === Code.DeadlineExceeded) return `no answer from ${ctx.url} within ${CALL_TIMEOUT_MS / 1000}s (${code})`;
  if (e.code === Code.Unauthenticated) return `${message} (${code}: pass --token or set BAICHUAN_TOKEN)`;
  if (e.code === Code.Unimplemented) return `${message} (${code}: is ${ctx.url} a BaiChuan server?)`;
  return `${message} (${code})`;
}
