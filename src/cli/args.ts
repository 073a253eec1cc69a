/**
 * The command line's words: the options of every command, the help texts built from the command
 * table, and the parsing helpers around node:util's parseArgs (its errors made into one clear line).
 */
import { parseArgs } from "node:util";
import type { JsonObject } from "@bufbuild/protobuf";

export const DEFAULT_URL = "http://127.0.0.1:8585";

/** A mistake in the command line: exit code 2, with a pointer to the command's help. */
export class UsageError extends Error {}

export type OptionSpec = { type: "string" | "boolean"; short?: string; value?: string; help: string };

/** What the help says of a command (commands.ts adds how it runs). */
export interface CommandSpec {
  args: string;
  summary: string;
  description?: string;
  options: Record<string, OptionSpec>;
  /** Number of positional arguments (names for the usage errors). */
  positionals: string[];
  /** Positional arguments that may follow them (the command checks which it needs). */
  optionalPositionals?: string[];
}

export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  url: { type: "string", value: "URL", help: `server address (env BAICHUAN_URL; default ${DEFAULT_URL})` },
  token: { type: "string", value: "TOKEN", help: "bearer token (env BAICHUAN_TOKEN)" },
  protocol: {
    type: "string",
    value: "P",
    help: "connect (Connect over HTTP/1.1, the default), grpc (HTTP/2) or grpc-web",
  },
  json: { type: "boolean", help: "print one JSON document (protobuf JSON) instead of text" },
  help: { type: "boolean", short: "h", help: "show this help" },
};

// ---------------------------------------------------------------------------------------------
// Help

function optionLines(options: Record<string, OptionSpec>): string[] {
  const left = Object.entries(options).map(
    ([name, o]) => `${o.short ? `-${o.short}, ` : ""}--${name}${o.value ? ` ${o.value}` : ""}`,
  );
  const width = Math.max(0, ...left.map((l) => l.length));
  return Object.values(options).map((o, i) => `  ${left[i]!.padEnd(width)}  ${o.help}`);
}

export function topHelp(commands: Record<string, CommandSpec>): string {
  const names = Object.entries(commands).map(([name, c]) => `${name}${c.args ? ` ${c.args}` : ""}`);
  const width = Math.max(...names.map((n) => n.length));
  return [
    "baichuan: the command line of a BaiChuan task service",
    "",
    "Usage: baichuan <command> [arguments] [options]",
    "",
    "Commands:",
    ...Object.values(commands).map((c, i) => `  ${names[i]!.padEnd(width)}  ${c.summary}`),
    `  ${"help [COMMAND]".padEnd(width)}  show the help of a command (or: baichuan COMMAND --help)`,
    "",
    "Options of every command:",
    ...optionLines(GLOBAL_OPTIONS),
    "",
    "Exit codes:",
    "  0    success",
    "  1    the task ended FAILED or CANCELED (watch, create --watch)",
    "  2    usage error: unknown command or option, bad option value, bad JSON in --params",
    "  3    not found: no such task, or no process has the handler",
    "  4    the server refused the request: invalid argument, unauthenticated, permission denied,",
    "       failed precondition (cancel a finished task...), queue full, or another server error",
    "  5    the server is unreachable or unavailable (connection refused, timed out, Redis down)",
    "  130  interrupted (Ctrl-C)",
    "",
  ].join("\n");
}

export function commandHelp(name: string, c: CommandSpec): string {
  return [
    `Usage: baichuan ${name}${c.args ? ` ${c.args}` : ""}${Object.keys(c.options).length > 0 ? " [options]" : ""}`,
    "",
    `${c.summary[0]!.toUpperCase()}${c.summary.slice(1)}.`,
    ...(c.description ? [c.description] : []),
    "",
    ...(Object.keys(c.options).length > 0 ? ["Options:", ...optionLines(c.options), ""] : []),
    "Options of every command:",
    ...optionLines(GLOBAL_OPTIONS),
    "",
    "Exit codes: 0 ok, 1 task FAILED/CANCELED, 2 usage, 3 not found, 4 refused, 5 unreachable (see baichuan --help).",
    "",
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Parsing

/** The first positional argument (the command) and its index; global options may come before it. */
export function findCommand(argv: string[]): { name: string; index: number } | undefined {
  const { tokens } = parseArgs({ args: argv, options: toParseOptions(GLOBAL_OPTIONS), strict: false, tokens: true });
  const first = tokens.find((t) => t.kind === "positional");
  return first ? { name: first.value, index: first.index } : undefined;
}

/** `-h` or `--help` anywhere before a `--`. */
export function wantsHelp(argv: string[]): boolean {
  return argv.slice(0, argv.includes("--") ? argv.indexOf("--") : undefined).some((a) => a === "-h" || a === "--help");
}

/** The options and positionals of a command line without its command word; throws on any mistake. */
export function parseCommandArgs(
  args: string[],
  command: CommandSpec,
): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  const { values, positionals } = parseArgs({
    args: joinNegativeValues(args, command.options),
    options: toParseOptions({ ...GLOBAL_OPTIONS, ...command.options }),
    strict: true,
    allowPositionals: true,
  });
  if (positionals.length < command.positionals.length) {
    throw new UsageError(`missing ${command.positionals[positionals.length]}`);
  }
  const most = command.positionals.length + (command.optionalPositionals?.length ?? 0);
  if (positionals.length > most) {
    throw new UsageError(`unexpected argument '${positionals[most]}'`);
  }
  return { values, positionals };
}

function toParseOptions(options: Record<string, OptionSpec>) {
  const out: Record<string, { type: "string" | "boolean"; short?: string }> = {};
  for (const [name, o] of Object.entries(options)) out[name] = o.short ? { type: o.type, short: o.short } : { type: o.type };
  return out;
}

/** `--priority -1` reads as an option value, not as an option `-1`: rewrite it as `--priority=-1`. */
function joinNegativeValues(args: string[], options: Record<string, OptionSpec>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = args[i + 1];
    if (a === "--") {
      out.push(...args.slice(i));
      break;
    }
    if (a.startsWith("--") && options[a.slice(2)]?.type === "string" && next !== undefined && /^-\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/** One clear line out of parseArgs' errors and ours. */
export function usageMessage(err: unknown): string {
  if (err instanceof UsageError) return err.message;
  const e = err as { code?: string; message?: string };
  const quoted = /'([^']+)'/.exec(e.message ?? "")?.[1];
  if (e.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return `unknown option '${quoted}'`;
  if (e.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    const option = /'(-[^' ]+)/.exec(e.message ?? "")?.[1] ?? quoted;
    return /ambiguous/.test(e.message ?? "")
      ? `option '${option}' needs a value (for a value starting with '-', write ${option}=VALUE)`
      : `option '${option}' ${/does not take/.test(e.message ?? "") ? "takes no value" : "needs a value"}`;
  }
  return (e.message ?? String(err)).split("\n")[0]!;
}

/** A JSON object option's value (`--params`); {} when the option is not given. */
export function parseJsonObject(option: string, raw: string | undefined): JsonObject {
  if (raw === undefined) return {};
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new UsageError(`--${option} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UsageError(
      `--${option} must be a JSON object like '{"name":"x"}', not ${value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`}`,
    );
  }
  return value as JsonObject;
}

/** A number option's value, checked; undefined when the option is not given. */
export function parseNumber(
  option: string,
  raw: string | undefined,
  check: (n: number) => boolean,
  expected: string,
): number | undefined {
  if (raw === undefined) return undefined;
  const n = raw.trim() === "" ? Number.NaN : Number(raw);
  if (!Number.isFinite(n) || !check(n)) throw new UsageError(`--${option}: '${raw}' is not ${expected}`);
  return n;
}
