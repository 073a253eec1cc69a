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
 */
import { parseArgs } from "node:util";
import { create, type DescMessage, type JsonObject, type MessageInitShape, type MessageShape, toJson } from "@bufbuild/protobuf";
import { type Duration, durationFromMs, durationMs, type Timestamp, timestampMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import {
  AdminService,
  ListQueuesResponseSchema,
  ListTasksResponseSchema,
  ListWorkersResponseSchema,
} from "../../gen/baichuan/v1/admin_pb.js";
import {
  CreateTaskResponseSchema,
  DeleteTaskResponseSchema,
  type Task,
  type TaskOptionsSchema,
  TaskSchema,
  TaskService,
  TaskStatus,
} from "../../gen/baichuan/v1/task_pb.js";
import { retryIdempotentCreates } from "../client.js";

/** Exit codes; documented in the top-level help. */
export const EXIT = {
  OK: 0,
  /** The watched task ended FAILED or CANCELED. */
  TASK_FAILED: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  REFUSED: 4,
  UNAVAILABLE: 5,
  INTERRUPTED: 130,
} as const;

/** Where the program reads and writes; the process's streams by default. */
export interface CliIO {
  stdout: { write(chunk: string): unknown; isTTY?: boolean; columns?: number };
  stderr: { write(chunk: string): unknown };
  env: Record<string, string | undefined>;
  /** Aborts the command in flight (Ctrl-C): it ends with exit code 130. */
  signal?: AbortSignal;
}

const DEFAULT_URL = "http://127.0.0.1:8585";
/** Most ListTasks calls made to fill one page of `tasks`. */
const MAX_PAGE_CALLS = 1000;
/** Longest wait for the answer of a unary call. */
const CALL_TIMEOUT_MS = 30_000;

class UsageError extends Error {}

// ---------------------------------------------------------------------------------------------
// Commands and their options

type OptionSpec = { type: "string" | "boolean"; short?: string; value?: string; help: string };

const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
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

interface Command {
  args: string;
  summary: string;
  description?: string;
  options: Record<string, OptionSpec>;
  /** Number of positional arguments (names for the usage errors). */
  positionals: string[];
  run(ctx: Context): Promise<number>;
}

interface Context {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  json: boolean;
  url: string;
  io: CliIO;
  tasks: Client<typeof TaskService>;
  admin: Client<typeof AdminService>;
  signal: AbortSignal;
}

const STATES: Record<string, TaskStatus> = {
  queued: TaskStatus.QUEUED,
  scheduled: TaskStatus.SCHEDULED,
  started: TaskStatus.STARTED,
  finished: TaskStatus.FINISHED,
  failed: TaskStatus.FAILED,
  canceled: TaskStatus.CANCELED,
};

const COMMANDS: Record<string, Command> = {
  create: {
    args: "HANDLER",
    summary: "create a task for HANDLER (for example /demo_api/hello)",
    description: "Prints the new task's id; with --watch, follows it until it ends (exit 1 if it ends FAILED or CANCELED).",
    positionals: ["HANDLER"],
    options: {
      params: { type: "string", value: "JSON", help: 'params, a JSON object (default {}), for example \'{"name":"x"}\'' },
      unique: { type: "boolean", help: "return the queued or running task with the same handler and params, if any" },
      "idempotency-key": {
        type: "string",
        value: "KEY",
        help: "the same KEY answers the same task for a day: safe to run again (retried when the server is unavailable)",
      },
      "max-attempts": { type: "string", value: "N", help: "most runs: failures are retried with backoff (default 1)" },
      timeout: { type: "string", value: "SECONDS", help: "longest run before the task fails with ERR_TIMEOUT (default 180)" },
      delay: { type: "string", value: "SECONDS", help: "run no sooner than this after creation (SCHEDULED until then)" },
      priority: { type: "string", value: "P", help: "-1 (low), 0 (normal, the default) or 1 (high); also low|normal|high" },
      watch: { type: "boolean", help: "follow the task until it ends, as `watch` does" },
    },
    run: runCreate,
  },
  get: {
    args: "ID",
    summary: "show a task",
    positionals: ["ID"],
    options: {},
    run: runGet,
  },
  watch: {
    args: "ID",
    summary: "follow a task live until it ends",
    description:
      "Prints each change of state, and the progress the handler reports (a bar redrawn in place on a terminal,\n" +
      "one line per report otherwise). Exits when the task ends: 0 FINISHED, 1 FAILED or CANCELED.\n" +
      "With --json, prints the task once, when it ends. Ctrl-C stops watching (the task goes on).",
    positionals: ["ID"],
    options: {},
    run: runWatch,
  },
  cancel: {
    args: "ID",
    summary: "cancel a queued or running task",
    description: "A queued task ends CANCELED at once; a running one when its handler stops.",
    positionals: ["ID"],
    options: {},
    run: runCancel,
  },
  retry: {
    args: "ID",
    summary: "queue a FAILED or CANCELED task again",
    positionals: ["ID"],
    options: {},
    run: runRetry,
  },
  delete: {
    args: "ID",
    summary: "delete a task, in any state (exit 3 if there was none)",
    positionals: ["ID"],
    options: {},
    run: runDelete,
  },
  ls: {
    args: "",
    summary: "list queues: tasks queued, running, waiting a retry; runs ended; oldest wait",
    positionals: [],
    options: {},
    run: runLs,
  },
  workers: {
    args: "",
    summary: "list the live workers",
    positionals: [],
    options: {},
    run: runWorkers,
  },
  tasks: {
    args: "HANDLER",
    summary: "list a handler's tasks in one state, a page at a time",
    description: "Ended tasks (finished, failed, canceled) are found by a scan: a page may hold fewer than --limit.",
    positionals: ["HANDLER"],
    options: {
      state: { type: "string", value: "S", help: "queued (the default), scheduled, started, finished, failed or canceled" },
      limit: { type: "string", value: "N", help: "most tasks in the page (default 50, at most 1000)" },
      "page-token": { type: "string", value: "T", help: "the token printed after the previous page" },
    },
    run: runTasks,
  },
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

function topHelp(): string {
  const names = Object.entries(COMMANDS).map(([name, c]) => `${name}${c.args ? ` ${c.args}` : ""}`);
  const width = Math.max(...names.map((n) => n.length));
  return [
    "baichuan: the command line of a BaiChuan task service",
    "",
    "Usage: baichuan <command> [arguments] [options]",
    "",
    "Commands:",
    ...Object.values(COMMANDS).map((c, i) => `  ${names[i]!.padEnd(width)}  ${c.summary}`),
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

function commandHelp(name: string): string {
  const c = COMMANDS[name]!;
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
// Entry

function defaultIO(): CliIO {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/** Run one command line (without the `node` and script arguments); resolves with the exit code. */
export async function main(argv: string[], io: CliIO = defaultIO()): Promise<number> {
  const fail = (code: number, message: string) => {
    io.stderr.write(`baichuan: ${oneLine(message)}\n`);
    return code;
  };
  // The command is the first positional; global options may come before it.
  let found: { name: string; index: number } | undefined;
  try {
    const { tokens } = parseArgs({ args: argv, options: toParseOptions(GLOBAL_OPTIONS), strict: false, tokens: true });
    const first = tokens.find((t) => t.kind === "positional");
    if (first) found = { name: first.value, index: first.index };
  } catch (err) {
    return fail(EXIT.USAGE, `${usageMessage(err)} (see baichuan --help)`);
  }
  const wantsHelp = argv.slice(0, argv.includes("--") ? argv.indexOf("--") : undefined).some((a) => a === "-h" || a === "--help");
  if (!found) {
    if (wantsHelp) {
      io.stdout.write(topHelp());
      return EXIT.OK;
    }
    io.stderr.write(topHelp());
    return fail(EXIT.USAGE, "no command given");
  }
  if (found.name === "help") {
    const topic = argv.slice(found.index + 1).find((a) => !a.startsWith("-"));
    if (topic === undefined) {
      io.stdout.write(topHelp());
      return EXIT.OK;
    }
    if (!Object.hasOwn(COMMANDS, topic)) return fail(EXIT.USAGE, `unknown command '${topic}' (see baichuan --help)`);
    io.stdout.write(commandHelp(topic));
    return EXIT.OK;
  }
  if (!Object.hasOwn(COMMANDS, found.name)) return fail(EXIT.USAGE, `unknown command '${found.name}' (see baichuan --help)`);
  const name = found.name;
  const command = COMMANDS[name]!;
  if (wantsHelp) {
    io.stdout.write(commandHelp(name));
    return EXIT.OK;
  }

  let ctx: Context;
  try {
    const rest = joinNegativeValues([...argv.slice(0, found.index), ...argv.slice(found.index + 1)], command.options);
    const { values, positionals } = parseArgs({
      args: rest,
      options: toParseOptions({ ...GLOBAL_OPTIONS, ...command.options }),
      strict: true,
      allowPositionals: true,
    });
    if (positionals.length < command.positionals.length) {
      throw new UsageError(`missing ${command.positionals[positionals.length]}`);
    }
    if (positionals.length > command.positionals.length) {
      throw new UsageError(`unexpected argument '${positionals[command.positionals.length]}'`);
    }
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
function usageMessage(err: unknown): string {
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

function makeContext(values: Record<string, string | boolean | undefined>, positionals: string[], io: CliIO): Context {
  const url = (values.url as string | undefined) ?? (io.env.BAICHUAN_URL || DEFAULT_URL);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--url: '${url}' is not a URL (for example ${DEFAULT_URL})`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new UsageError(`--url: '${url}' must start with http:// or https://`);
  }
  const token = (values.token as string | undefined) ?? (io.env.BAICHUAN_TOKEN || undefined);
  const protocol = (values.protocol as string | undefined) ?? "connect";
  // Creates with an idempotency key are retried while the server answers UNAVAILABLE (client.ts).
  const interceptors: Interceptor[] = [retryIdempotentCreates(4)];
  if (token) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const baseUrl = url.replace(/\/+$/, "");
  let transport: Transport;
  if (protocol === "connect") transport = createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors });
  else if (protocol === "grpc") transport = createGrpcTransport({ baseUrl, interceptors });
  else if (protocol === "grpc-web") transport = createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors });
  else throw new UsageError(`--protocol: '${protocol}' is not one of connect, grpc, grpc-web`);
  return {
    values,
    positionals,
    json: values.json === true,
    url: baseUrl,
    io,
    tasks: createClient(TaskService, transport),
    admin: createClient(AdminService, transport),
    signal: io.signal ?? new AbortController().signal,
  };
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

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}

// ---------------------------------------------------------------------------------------------
// Commands

const callOptions = (ctx: Context) => ({ signal: ctx.signal, timeoutMs: CALL_TIMEOUT_MS });

function printJson<Desc extends DescMessage>(ctx: Context, schema: Desc, message: MessageShape<Desc>): void {
  ctx.io.stdout.write(`${JSON.stringify(toJson(schema, message, { alwaysEmitImplicit: true }), null, 2)}\n`);
}

function out(ctx: Context, text: string): void {
  ctx.io.stdout.write(text.endsWith("\n") || text === "" ? text : `${text}\n`);
}

function parseNumber(
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

async function runCreate(ctx: Context): Promise<number> {
  const handler = ctx.positionals[0]!;
  const rawParams = ctx.values.params as string | undefined;
  let params: JsonObject = {};
  if (rawParams !== undefined) {
    let value: unknown;
    try {
      value = JSON.parse(rawParams);
    } catch (err) {
      throw new UsageError(`--params is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new UsageError(
        `--params must be a JSON object like '{"name":"x"}', not ${value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`}`,
      );
    }
    params = value as JsonObject;
  }
  const options: MessageInitShape<typeof TaskOptionsSchema> = {};
  if (ctx.values.unique === true) options.unique = true;
  const idempotencyKey = ctx.values["idempotency-key"] as string | undefined;
  const maxAttempts = parseNumber(
    "max-attempts",
    ctx.values["max-attempts"] as string | undefined,
    (n) => Number.isInteger(n) && n >= 1,
    "a whole number from 1",
  );
  if (maxAttempts !== undefined) options.maxAttempts = maxAttempts;
  const timeout = parseNumber("timeout", ctx.values.timeout as string | undefined, (n) => n > 0, "a number of seconds above 0");
  if (timeout !== undefined) options.timeout = durationFromMs(Math.round(timeout * 1000));
  const delay = parseNumber("delay", ctx.values.delay as string | undefined, (n) => n >= 0, "a number of seconds, 0 or more");
  if (delay !== undefined) options.delay = durationFromMs(Math.round(delay * 1000));
  const rawPriority = ctx.values.priority as string | undefined;
  if (rawPriority !== undefined) {
    const named: Record<string, number> = { low: -1, normal: 0, high: 1, "-1": -1, "0": 0, "1": 1, "+1": 1 };
    const key = rawPriority.trim().toLowerCase();
    const p = Object.hasOwn(named, key) ? named[key] : undefined;
    if (p === undefined) throw new UsageError(`--priority: '${rawPriority}' is not -1, 0 or 1 (low, normal, high)`);
    options.priority = p;
  }

  const res = await ctx.tasks.createTask(
    { handler, params, options, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) },
    callOptions(ctx),
  );
  if (ctx.values.watch !== true) {
    if (ctx.json) printJson(ctx, CreateTaskResponseSchema, res);
    else {
      out(ctx, res.taskId);
      if (res.deduplicated) ctx.io.stderr.write("baichuan: an identical task was already queued or running: that is its id\n");
      else if (res.replayed) ctx.io.stderr.write("baichuan: this idempotency key was used before: that is the task it created\n");
    }
    return EXIT.OK;
  }
  if (!ctx.json) {
    out(ctx, res.deduplicated ? `${res.taskId} (an identical task was already queued or running)` : res.taskId);
  }
  const { task, code } = await follow(ctx, res.taskId);
  if (ctx.json) {
    const doc = { ...(toJson(CreateTaskResponseSchema, res, { alwaysEmitImplicit: true }) as object), task: taskJson(task) };
    out(ctx, JSON.stringify(doc, null, 2));
  }
  return code;
}

async function runGet(ctx: Context): Promise<number> {
  const { task } = await ctx.tasks.getTask({ taskId: ctx.positionals[0]! }, callOptions(ctx));
  if (ctx.json) printJson(ctx, TaskSchema, task!);
  else out(ctx, describeTask(task!));
  return EXIT.OK;
}

async function runWatch(ctx: Context): Promise<number> {
  const { task, code } = await follow(ctx, ctx.positionals[0]!);
  if (ctx.json) out(ctx, JSON.stringify(taskJson(task), null, 2));
  return code;
}

async function runCancel(ctx: Context): Promise<number> {
  const { task } = await ctx.tasks.cancelTask({ taskId: ctx.positionals[0]! }, callOptions(ctx));
  if (ctx.json) printJson(ctx, TaskSchema, task!);
  else if (task!.status === TaskStatus.CANCELED) out(ctx, `${task!.id} CANCELED`);
  else out(ctx, `${task!.id} ${statusName(task!.status)}: cancel requested; it ends CANCELED when its handler stops`);
  return EXIT.OK;
}

async function runRetry(ctx: Context): Promise<number> {
  const { task } = await ctx.tasks.retryTask({ taskId: ctx.positionals[0]! }, callOptions(ctx));
  if (ctx.json) printJson(ctx, TaskSchema, task!);
  else out(ctx, `${task!.id} ${statusName(task!.status)} again (${attemptsText(task!)})`);
  return EXIT.OK;
}

async function runDelete(ctx: Context): Promise<number> {
  const id = ctx.positionals[0]!;
  const res = await ctx.tasks.deleteTask({ taskId: id }, callOptions(ctx));
  if (ctx.json) printJson(ctx, DeleteTaskResponseSchema, res);
  else if (res.deleted) out(ctx, `${id} deleted`);
  if (!res.deleted) {
    ctx.io.stderr.write(`baichuan: task ${id} does not exist: nothing deleted\n`);
    return EXIT.NOT_FOUND;
  }
  return EXIT.OK;
}

async function runLs(ctx: Context): Promise<number> {
  const res = await ctx.admin.listQueues({}, callOptions(ctx));
  if (ctx.json) {
    printJson(ctx, ListQueuesResponseSchema, res);
    return EXIT.OK;
  }
  if (res.queues.length === 0) {
    out(ctx, "no queues");
    return EXIT.OK;
  }
  out(
    ctx,
    table(
      ["HANDLER", "QUEUED", "STARTED", "SCHEDULED", "FINISHED", "FAILED", "RETRIED", "CANCELED", "OLDEST WAIT"],
      res.queues.map((q) => [
        q.handler,
        String(q.queued),
        String(q.started),
        String(q.scheduled),
        String(q.finishedTotal),
        String(q.failedTotal),
        String(q.retriedTotal),
        String(q.canceledTotal),
        q.oldestQueuedAge ? formatDuration(durationMs(q.oldestQueuedAge) / 1000) : "-",
      ]),
      [false, true, true, true, true, true, true, true, true],
    ),
  );
  return EXIT.OK;
}

async function runWorkers(ctx: Context): Promise<number> {
  const res = await ctx.admin.listWorkers({}, callOptions(ctx));
  if (ctx.json) {
    printJson(ctx, ListWorkersResponseSchema, res);
    return EXIT.OK;
  }
  if (res.workers.length === 0) {
    out(ctx, "no live workers");
    return EXIT.OK;
  }
  const now = Date.now();
  out(
    ctx,
    table(
      ["NAME", "STATE", "UP", "HEARTBEAT", "FINISHED", "FAILED", "BUSY TIME", "HANDLERS"],
      res.workers.map((w) => [
        w.name,
        w.state || "-",
        w.startedAt ? formatDuration((now - timestampMs(w.startedAt)) / 1000) : "-",
        w.heartbeatAge ? `${formatDuration(durationMs(w.heartbeatAge) / 1000)} ago` : "-",
        String(w.finishedTotal),
        String(w.failedTotal),
        w.busyTime ? formatDuration(durationMs(w.busyTime) / 1000) : "-",
        w.handlers.join(","),
      ]),
      [false, false, true, true, true, true, true, false],
    ),
  );
  return EXIT.OK;
}

async function runTasks(ctx: Context): Promise<number> {
  const handler = ctx.positionals[0]!;
  const rawState = ((ctx.values.state as string | undefined) ?? "queued").trim().toLowerCase();
  const status = Object.hasOwn(STATES, rawState) ? STATES[rawState] : undefined;
  if (status === undefined) {
    throw new UsageError(`--state: '${ctx.values.state}' is not one of ${Object.keys(STATES).join(", ")}`);
  }
  const limit = parseNumber(
    "limit",
    ctx.values.limit as string | undefined,
    (n) => Number.isInteger(n) && n >= 1 && n <= 1000,
    "a whole number from 1 to 1000",
  );
  // Ended tasks are found by a bounded scan per call, so a page may come back short, even empty,
  // with more to scan: ask again until the page is full or the scan is done.
  const pageSize = limit ?? 50;
  const res = create(ListTasksResponseSchema, { nextPageToken: (ctx.values["page-token"] as string | undefined) ?? "" });
  for (let calls = 0; calls === 0 || (res.nextPageToken && res.tasks.length < pageSize && calls < MAX_PAGE_CALLS); calls++) {
    const page = await ctx.admin.listTasks(
      { handler, status, pageSize: pageSize - res.tasks.length, pageToken: res.nextPageToken },
      callOptions(ctx),
    );
    res.tasks.push(...page.tasks);
    res.nextPageToken = page.nextPageToken;
  }
  if (ctx.json) {
    printJson(ctx, ListTasksResponseSchema, res);
    return EXIT.OK;
  }
  const now = Date.now();
  if (res.tasks.length === 0) out(ctx, `no ${rawState} tasks of ${handler}${res.nextPageToken ? " in this page" : ""}`);
  else {
    out(
      ctx,
      table(
        ["ID", "STATUS", "AGE", "ATTEMPTS", "COST", "DETAIL"],
        res.tasks.map((t) => [
          t.id,
          statusName(t.status),
          t.createdAt ? formatDuration((now - timestampMs(t.createdAt)) / 1000) : "-",
          `${t.attempts}/${t.maxAttempts || 1}`,
          isEnded(t.status) ? formatDuration(t.cost) : "-",
          taskDetail(t, now),
        ]),
        [false, false, true, true, true, false],
      ),
    );
  }
  if (res.nextPageToken) {
    out(
      ctx,
      `\nmore: baichuan tasks ${handler} --state ${rawState}${limit ? ` --limit ${limit}` : ""} --page-token ${res.nextPageToken}`,
    );
  }
  return EXIT.OK;
}

// ---------------------------------------------------------------------------------------------
// Watching

/** Follow a task to its end, printing as it goes (unless --json); the exit code says how it ended. */
async function follow(ctx: Context, taskId: string): Promise<{ task: Task; code: number }> {
  const view = ctx.json ? undefined : new WatchView(ctx.io.stdout);
  let last: Task | undefined;
  try {
    for await (const { task } of ctx.tasks.watchTask({ taskId }, { signal: ctx.signal })) {
      if (!task) continue;
      last = task;
      view?.update(task);
    }
  } catch (err) {
    view?.stop();
    if (ctx.signal.aborted) ctx.io.stderr.write(`baichuan: stopped watching ${taskId} (the task goes on)\n`);
    throw err;
  }
  view?.stop();
  if (!last || !isEnded(last.status)) {
    throw new ConnectError(`the watch of ${taskId} ended before the task did: watch it again`, Code.Unavailable);
  }
  return { task: last, code: last.status === TaskStatus.FINISHED ? EXIT.OK : EXIT.TASK_FAILED };
}

/**
 * Prints a watched task: one line per change of state; while it runs, its progress, as a bar redrawn
 * in place on a terminal (with the time it has run), or one line per report otherwise.
 */
export class WatchView {
  private status: TaskStatus | undefined;
  private progress = -1;
  private progressMessage = "";
  private live = false;
  private running: Task | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly tty: boolean;

  constructor(private readonly stdout: CliIO["stdout"]) {
    this.tty = stdout.isTTY === true;
  }

  update(task: Task): void {
    if (task.status !== this.status) {
      this.status = task.status;
      this.progress = -1;
      this.progressMessage = "";
      this.line(stateLine(task));
      if (task.status === TaskStatus.FINISHED) this.line(`${"result".padEnd(10)} ${resultText(task)}`);
    }
    this.running = task.status === TaskStatus.STARTED ? task : undefined;
    if (!this.running) {
      this.stopTimer();
      return;
    }
    const changed = task.progress !== this.progress || task.progressMessage !== this.progressMessage;
    this.progress = task.progress;
    this.progressMessage = task.progressMessage;
    if (this.tty) {
      this.draw();
      this.timer ??= setInterval(() => this.draw(), 500);
      this.timer.unref?.();
    } else if (changed && (task.progress > 0 || task.progressMessage)) {
      this.line(progressLine(task));
    }
  }

  /** Leave the terminal with the cursor on a fresh line. */
  stop(): void {
    this.stopTimer();
    this.clearLive();
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private draw(): void {
    if (!this.running) return;
    const started = this.running.startedAt ? timestampMs(this.running.startedAt) : Date.now();
    const text = `${progressLine(this.running)}  (${formatDuration(Math.max(0, Date.now() - started) / 1000)})`;
    const width = (this.stdout.columns || 80) - 1;
    this.stdout.write(`\r\x1b[2K${text.length > width ? text.slice(0, Math.max(0, width)) : text}`);
    this.live = true;
  }

  private clearLive(): void {
    if (!this.live) return;
    this.stdout.write("\r\x1b[2K");
    this.live = false;
  }

  private line(text: string): void {
    this.clearLive();
    this.stdout.write(`${text}\n`);
  }
}

function progressLine(task: Task): string {
  const pct = Math.max(0, Math.min(100, task.progress));
  const width = 20;
  const filled = Math.round((pct / 100) * width);
  const bar = `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
  return `${"progress".padEnd(10)} ${bar} ${`${Math.floor(pct)}%`.padStart(4)}${task.progressMessage ? `  ${oneLine(task.progressMessage)}` : ""}`;
}

function stateLine(task: Task): string {
  const name = statusName(task.status).padEnd(10);
  switch (task.status) {
    case TaskStatus.SCHEDULED:
      return `${name} ${task.scheduledFor ? `due in ${formatDuration(Math.max(0, timestampMs(task.scheduledFor) - Date.now()) / 1000)}` : ""}`.trimEnd();
    case TaskStatus.QUEUED:
      return `${name} ${task.handler}${task.lastError ? `  (waiting to retry, ${attemptsText(task)}; last error: ${oneLine(task.lastError)})` : ""}`;
    case TaskStatus.STARTED:
      return `${name} on ${task.worker || "?"}  (${attemptsText(task)})`;
    case TaskStatus.FINISHED:
      return `${name} in ${formatDuration(task.cost)}`;
    case TaskStatus.FAILED:
      return `${name} ${task.errorCode ? `${task.errorCode}: ` : ""}${oneLine(task.error)}`;
    default:
      return name.trimEnd();
  }
}

// ---------------------------------------------------------------------------------------------
// Formatting

function statusName(status: TaskStatus): string {
  return TaskStatus[status] ?? String(status);
}

function isEnded(status: TaskStatus): boolean {
  return status === TaskStatus.FINISHED || status === TaskStatus.FAILED || status === TaskStatus.CANCELED;
}

function attemptsText(task: Task): string {
  return `attempt ${task.attempts} of ${task.maxAttempts || 1}`;
}

/** What the handler returned, as compact JSON. */
function resultText(task: Task): string {
  return JSON.stringify(task.result ? toJson(ValueSchema, task.result) : null);
}

function taskJson(task: Task): unknown {
  return toJson(TaskSchema, task, { alwaysEmitImplicit: true });
}

/** Seconds, for a person: `<1ms`, `340ms`, `1.2s`, `42s`, `3m4s`, `2h5m`, `3d4h`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "-";
  if (seconds < 0.001) return seconds === 0 ? "0s" : "<1ms";
  if (seconds < 1) return `${Math.floor(seconds * 1000)}ms`;
  if (seconds < 10) return `${(Math.floor(seconds * 10) / 10).toFixed(1)}s`;
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600)}h`;
}

function formatTime(ts: Timestamp | undefined, now: number): string | undefined {
  if (!ts) return undefined;
  const ms = timestampMs(ts);
  const delta = now - ms;
  const rel = delta >= 0 ? `${formatDuration(delta / 1000)} ago` : `in ${formatDuration(-delta / 1000)}`;
  return `${new Date(ms).toISOString()} (${rel})`;
}

function formatSeconds(d: Duration | undefined): string | undefined {
  return d ? formatDuration(durationMs(d) / 1000) : undefined;
}

function taskDetail(t: Task, now: number): string {
  switch (t.status) {
    case TaskStatus.FAILED:
      return `${t.errorCode ? `${t.errorCode}: ` : ""}${oneLine(t.error)}`;
    case TaskStatus.STARTED:
      return `${t.worker}${t.progress > 0 || t.progressMessage ? `  ${Math.floor(t.progress)}% ${oneLine(t.progressMessage)}`.trimEnd() : ""}`;
    case TaskStatus.SCHEDULED:
      return t.scheduledFor ? `due in ${formatDuration(Math.max(0, timestampMs(t.scheduledFor) - now) / 1000)}` : "";
    case TaskStatus.QUEUED:
      return [t.priority ? `priority ${t.priority}` : "", t.lastError ? `last error: ${oneLine(t.lastError)}` : ""]
        .filter(Boolean)
        .join("  ");
    default:
      return "";
  }
}

/** A task as `field  value` lines; unset fields are left out. */
function describeTask(t: Task): string {
  const now = Date.now();
  const rows: [string, string | undefined][] = [
    ["id", t.id],
    ["handler", t.handler],
    ["status", statusName(t.status)],
    ["params", JSON.stringify(t.params ?? {})],
    ["result", t.status === TaskStatus.FINISHED ? resultText(t) : undefined],
    ["error", t.error ? `${t.errorCode ? `${t.errorCode}: ` : ""}${oneLine(t.error)}` : undefined],
    ["last error", t.lastError && t.lastError !== t.error ? oneLine(t.lastError) : undefined],
    [
      "progress",
      t.progress > 0 || t.progressMessage
        ? `${Math.floor(t.progress)}%${t.progressMessage ? `  ${oneLine(t.progressMessage)}` : ""}`
        : undefined,
    ],
    ["priority", t.priority ? `${t.priority} (${t.priority > 0 ? "high" : "low"})` : undefined],
    ["created", formatTime(t.createdAt, now)],
    ["scheduled", formatTime(t.scheduledFor, now)],
    ["started", formatTime(t.startedAt, now)],
    ["ended", formatTime(t.endedAt, now)],
    ["cost", isEnded(t.status) ? formatDuration(t.cost) : undefined],
    ["worker", t.worker || undefined],
    ["attempts", `${t.attempts} of ${t.maxAttempts || 1}`],
    ["timeout", formatSeconds(t.timeout)],
    ["queue ttl", formatSeconds(t.ttl)],
    ["creator", t.creatorIp || undefined],
  ];
  const shown = rows.filter((r): r is [string, string] => r[1] !== undefined);
  const width = Math.max(...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}

/** Aligned columns; `right` marks the columns aligned right (numbers). The last column is not padded. */
function table(headers: string[], rows: string[][], right: boolean[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const render = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 && !right[i] ? c : right[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [render(headers), ...rows.map(render)].join("\n");
}
