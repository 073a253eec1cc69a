/**
 * `baichuan schedules`: recurring tasks (ScheduleService). Without an action, lists the schedules
 * with their next run and last task; with one, creates, shows, pauses, resumes or deletes one.
 *
 *   baichuan schedules create nightly /reports/build --cron "0 2 * * *" --tz Europe/Berlin
 *   baichuan schedules create ping /demo_api/ping --every 30s --params '{"n":1}'
 *   baichuan schedules pause nightly
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  DeleteScheduleResponseSchema,
  ListSchedulesResponseSchema,
  type Schedule,
  ScheduleSchema,
} from "../../gen/baichuan/v1/schedule_pb.js";
import { TaskStatus } from "../../gen/baichuan/v1/task_pb.js";
import { type CommandSpec, type OptionSpec, parseJsonObject, parseNumber, UsageError } from "./args.js";
import { type Context, callOptions, EXIT, note, out, printJson } from "./context.js";
import { durationText, formatDuration, formatTime, statusName, table } from "./format.js";

const ACTIONS = ["create", "get", "pause", "resume", "delete"] as const;
type Action = (typeof ACTIONS)[number];

/** The options of `schedules create` (the other actions take none). */
const CREATE_OPTIONS: Record<string, OptionSpec> = {
  every: { type: "string", value: "DURATION", help: "run every DURATION: seconds, or 30s, 5m, 2h, 1d (at least 1s)" },
  cron: {
    type: "string",
    value: "EXPR",
    help: 'run at the times of a cron expression: 5 fields, or 6 with seconds ("0 2 * * *")',
  },
  tz: { type: "string", value: "ZONE", help: "the IANA time zone of --cron (default UTC), for example Europe/Berlin" },
  params: { type: "string", value: "JSON", help: "params of each task, a JSON object (default {})" },
  "start-at": { type: "string", value: "TIME", help: "no run before TIME (ISO 8601); --every counts from it" },
  "end-at": { type: "string", value: "TIME", help: "no run after TIME (ISO 8601)" },
  "skip-missed": { type: "boolean", help: "after downtime, drop the missed runs (default: one run for them)" },
  paused: { type: "boolean", help: "create it paused (resume starts it)" },
  "max-attempts": { type: "string", value: "N", help: "most runs of each task (default 1)" },
  timeout: { type: "string", value: "SECONDS", help: "longest run of each task (default 180)" },
};

export const SCHEDULES_COMMAND: CommandSpec & { run(ctx: Context): Promise<number> } = {
  args: "[create|get|pause|resume|delete] [ID] [HANDLER]",
  summary: "list schedules (recurring tasks) with their next run, or create, show, pause, resume, delete one",
  description:
    "  baichuan schedules                            list: id, handler, when, next run, last run and its task\n" +
    "  baichuan schedules create ID HANDLER --every 30s | --cron EXPR [--tz ZONE] [options]\n" +
    "  baichuan schedules get|pause|resume|delete ID\n" +
    "Ids are 1-128 letters, digits, '_', '-', '.', ':'. delete exits 3 when there was no such schedule.",
  positionals: [],
  optionalPositionals: ["ACTION", "ID", "HANDLER"],
  options: CREATE_OPTIONS,
  run: runSchedules,
};

async function runSchedules(ctx: Context): Promise<number> {
  const [action, id, handler] = ctx.positionals;
  if (action === undefined) return runList(ctx);
  if (!(ACTIONS as readonly string[]).includes(action)) {
    throw new UsageError(`'${action}' is not one of ${ACTIONS.join(", ")} (or nothing, to list)`);
  }
  if (id === undefined) throw new UsageError(`${action} needs a schedule ID`);
  if (action !== "create") {
    if (handler !== undefined) throw new UsageError(`unexpected argument '${handler}'`);
    const given = Object.keys(CREATE_OPTIONS).find((o) => ctx.values[o] !== undefined);
    if (given) throw new UsageError(`--${given} is an option of 'schedules create'`);
  }
  return ACTION_RUNS[action as Action](ctx, id, handler);
}

const ACTION_RUNS: Record<Action, (ctx: Context, id: string, handler: string | undefined) => Promise<number>> = {
  async create(ctx, id, handler) {
    if (handler === undefined) throw new UsageError("create needs a HANDLER after the ID (for example /demo_api/ping)");
    const { schedule } = await ctx.schedules.createSchedule(
      { schedule: scheduleFromOptions(ctx, id, handler) },
      callOptions(ctx),
    );
    return show(ctx, schedule!);
  },
  async get(ctx, id) {
    return show(ctx, (await ctx.schedules.getSchedule({ scheduleId: id }, callOptions(ctx))).schedule!);
  },
  async pause(ctx, id) {
    return show(ctx, (await ctx.schedules.pauseSchedule({ scheduleId: id }, callOptions(ctx))).schedule!);
  },
  async resume(ctx, id) {
    return show(ctx, (await ctx.schedules.resumeSchedule({ scheduleId: id }, callOptions(ctx))).schedule!);
  },
  async delete(ctx, id) {
    const res = await ctx.schedules.deleteSchedule({ scheduleId: id }, callOptions(ctx));
    if (ctx.json) printJson(ctx, DeleteScheduleResponseSchema, res);
    else if (res.deleted) out(ctx, `${id} deleted (its tasks are kept)`);
    if (!res.deleted) {
      note(ctx.io, `schedule ${id} does not exist: nothing deleted`);
      return EXIT.NOT_FOUND;
    }
    return EXIT.OK;
  },
};

function scheduleFromOptions(ctx: Context, id: string, handler: string): MessageInitShape<typeof ScheduleSchema> {
  const v = ctx.values as Record<string, string | boolean | undefined>;
  const schedule: MessageInitShape<typeof ScheduleSchema> = {
    scheduleId: id,
    handler,
    params: parseJsonObject("params", v.params as string | undefined),
    skipMissed: v["skip-missed"] === true,
    paused: v.paused === true,
    options: {},
  };
  if (v.every === undefined && v.cron === undefined) throw new UsageError("give --every DURATION or --cron EXPR");
  if (v.every !== undefined && v.cron !== undefined) throw new UsageError("give --every or --cron, not both");
  if (v.tz !== undefined && v.cron === undefined) throw new UsageError("--tz is for --cron");
  if (v.every !== undefined) schedule.every = durationFromMs(parseEvery(v.every as string));
  if (v.cron !== undefined) schedule.cron = v.cron as string;
  if (v.tz !== undefined) schedule.timeZone = v.tz as string;
  if (v["start-at"] !== undefined) schedule.startAt = timestampFromMs(parseTime("start-at", v["start-at"] as string));
  if (v["end-at"] !== undefined) schedule.endAt = timestampFromMs(parseTime("end-at", v["end-at"] as string));
  const maxAttempts = parseNumber(
    "max-attempts",
    v["max-attempts"] as string | undefined,
    (n) => Number.isInteger(n) && n >= 1,
    "a whole number from 1",
  );
  if (maxAttempts !== undefined) schedule.options!.maxAttempts = maxAttempts;
  const timeout = parseNumber("timeout", v.timeout as string | undefined, (n) => n > 0, "a number of seconds above 0");
  if (timeout !== undefined) schedule.options!.timeout = durationFromMs(Math.round(timeout * 1000));
  return schedule;
}

const UNITS: Record<string, number> = { "": 1000, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `30`, `30s`, `5m`, `1.5h`, `1d` as milliseconds. */
function parseEvery(raw: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$/i.exec(raw);
  if (!m) throw new UsageError(`--every: '${raw}' is not a duration such as 30, 30s, 5m, 2h or 1d`);
  return Math.round(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!);
}

function parseTime(option: string, raw: string): number {
  const ms = /^\d{4}-\d\d-\d\d/.test(raw.trim()) ? Date.parse(raw) : Number.NaN;
  if (!Number.isFinite(ms)) throw new UsageError(`--${option}: '${raw}' is not an ISO 8601 time such as 2030-01-01T09:00:00Z`);
  return ms;
}

/** How a schedule ticks: `every 30s` or `cron 0 2 * * * Europe/Berlin`. */
function whenText(s: Schedule): string {
  if (s.cron) return `cron ${s.cron}${s.timeZone && s.timeZone !== "UTC" ? ` ${s.timeZone}` : ""}`;
  return `every ${durationText(s.every) ?? "?"}`;
}

function nextText(s: Schedule, now: number): string {
  if (s.paused) return "paused";
  if (!s.nextRunAt) return "none (ended)";
  const ms = timestampMs(s.nextRunAt);
  return ms > now ? `in ${formatDuration((ms - now) / 1000)}` : "due";
}

function lastText(s: Schedule): string {
  if (!s.lastTaskId) return "-";
  return `${s.lastTaskId} ${s.lastTaskStatus === TaskStatus.UNSPECIFIED ? "(expired)" : statusName(s.lastTaskStatus)}`;
}

async function runList(ctx: Context): Promise<number> {
  const res = await ctx.schedules.listSchedules({}, callOptions(ctx));
  if (ctx.json) {
    printJson(ctx, ListSchedulesResponseSchema, res);
    return EXIT.OK;
  }
  if (res.schedules.length === 0) {
    out(ctx, "no schedules");
    return EXIT.OK;
  }
  const now = Date.now();
  out(
    ctx,
    table(
      ["ID", "HANDLER", "WHEN", "NEXT RUN", "LAST RUN", "LAST TASK"],
      res.schedules.map((s) => [
        s.scheduleId,
        s.handler,
        whenText(s),
        nextText(s, now),
        s.lastRunAt ? `${formatDuration((now - timestampMs(s.lastRunAt)) / 1000)} ago` : "-",
        lastText(s),
      ]),
      [false, false, false, false, true, false],
    ),
  );
  return EXIT.OK;
}

/** One schedule as `field  value` lines (or its JSON). */
function show(ctx: Context, s: Schedule): number {
  if (ctx.json) {
    printJson(ctx, ScheduleSchema, s);
    return EXIT.OK;
  }
  const now = Date.now();
  const rows: Array<[string, string | undefined]> = [
    ["id", s.scheduleId],
    ["handler", s.handler],
    ["params", JSON.stringify(s.params ?? {})],
    ["when", whenText(s)],
    ["state", s.paused ? "paused" : "active"],
    ["next run", s.paused ? undefined : s.nextRunAt ? formatTime(s.nextRunAt, now) : "none (ended)"],
    ["last run", formatTime(s.lastRunAt, now)],
    ["last task", s.lastTaskId ? lastText(s) : undefined],
    ["last error", s.lastError || undefined],
    ["start at", formatTime(s.startAt, now)],
    ["end at", formatTime(s.endAt, now)],
    ["missed runs", s.skipMissed ? "skipped" : "one run after downtime"],
    ["created", formatTime(s.createdAt, now)],
  ];
  const shown = rows.filter((r): r is [string, string] => r[1] !== undefined);
  const width = Math.max(...shown.map(([k]) => k.length));
  out(ctx, shown.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n"));
  return EXIT.OK;
}
