/**
 * The commands of `baichuan`: the table the help is built from (arguments, options, summaries) and
 * what each command does: its calls to the server and what it prints, as text or, with --json, as
 * one protobuf JSON document.
 */
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ListQueuesResponseSchema, ListTasksResponseSchema, ListWorkersResponseSchema } from "../../gen/baichuan/v1/admin_pb.js";
import {
  CreateTaskResponseSchema,
  DeleteTaskResponseSchema,
  type TaskOptionsSchema,
  TaskSchema,
  TaskStatus,
} from "../../gen/baichuan/v1/task_pb.js";
import { type CommandSpec, parseJsonObject, parseNumber, UsageError } from "./args.js";
import { type Context, callOptions, EXIT, note, out, printJson } from "./context.js";
import {
  ageText,
  attemptsText,
  describeTask,
  durationText,
  formatDuration,
  isEnded,
  jsonOf,
  limitsText,
  statusName,
  table,
  taskDetail,
  taskJson,
} from "./format.js";
import { QUEUE_COMMANDS } from "./queue-commands.js";
import { SCHEDULES_COMMAND } from "./schedule-commands.js";
import { follow } from "./watch-view.js";

export interface Command extends CommandSpec {
  run(ctx: Context): Promise<number>;
}

/** Most ListTasks calls made to fill one page of `tasks`. */
const MAX_PAGE_CALLS = 1000;

const STATES: Record<string, TaskStatus> = {
  queued: TaskStatus.QUEUED,
  scheduled: TaskStatus.SCHEDULED,
  started: TaskStatus.STARTED,
  finished: TaskStatus.FINISHED,
  failed: TaskStatus.FAILED,
  canceled: TaskStatus.CANCELED,
};

export const COMMANDS: Record<string, Command> = {
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
      "concurrency-key": {
        type: "string",
        value: "KEY",
        help: "concurrency group, for example a customer id: keys take turns, each at most the handler's max_running_per_key at once",
      },
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
    summary: "list queues: tasks queued, running, waiting a retry; runs ended; oldest wait; limits and held tasks",
    positionals: [],
    options: {},
    run: runLs,
  },
  ...QUEUE_COMMANDS,
  workers: {
    args: "",
    summary: "list the live workers",
    positionals: [],
    options: {},
    run: runWorkers,
  },
  schedules: SCHEDULES_COMMAND,
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
// Commands

async function runCreate(ctx: Context): Promise<number> {
  const handler = ctx.positionals[0]!;
  const params = parseJsonObject("params", ctx.values.params as string | undefined);
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
  const concurrencyKey = ctx.values["concurrency-key"] as string | undefined;
  if (concurrencyKey !== undefined) options.concurrencyKey = concurrencyKey; // the server checks it

  const res = await ctx.tasks.createTask(
    { handler, params, options, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) },
    callOptions(ctx),
  );
  if (ctx.values.watch !== true) {
    if (ctx.json) printJson(ctx, CreateTaskResponseSchema, res);
    else {
      out(ctx, res.taskId);
      if (res.deduplicated) note(ctx.io, "an identical task was already queued or running: that is its id");
      else if (res.replayed) note(ctx.io, "this idempotency key was used before: that is the task it created");
    }
    return EXIT.OK;
  }
  if (!ctx.json) {
    out(ctx, res.deduplicated ? `${res.taskId} (an identical task was already queued or running)` : res.taskId);
  }
  const { task, code } = await follow(ctx, res.taskId);
  if (ctx.json) {
    const doc = { ...(jsonOf(CreateTaskResponseSchema, res) as JsonObject), task: taskJson(task) };
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
  if (ctx.json) printJson(ctx, TaskSchema, task);
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
    note(ctx.io, `task ${id} does not exist: nothing deleted`);
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
      ["HANDLER", "QUEUED", "STARTED", "SCHEDULED", "FINISHED", "FAILED", "RETRIED", "CANCELED", "OLDEST WAIT", "LIMITS", "HELD"],
      res.queues.map((q) => [
        q.handler,
        String(q.queued),
        String(q.started),
        String(q.scheduled),
        String(q.finishedTotal),
        String(q.failedTotal),
        String(q.retriedTotal),
        String(q.canceledTotal),
        durationText(q.oldestQueuedAge) ?? "-",
        limitsText(q),
        String(q.held),
      ]),
      [false, true, true, true, true, true, true, true, true, false, true],
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
        ageText(w.startedAt, now) ?? "-",
        w.heartbeatAge ? `${durationText(w.heartbeatAge)} ago` : "-",
        String(w.finishedTotal),
        String(w.failedTotal),
        durationText(w.busyTime) ?? "-",
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
          ageText(t.createdAt, now) ?? "-",
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
