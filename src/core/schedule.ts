/**
 * Schedules: recurring tasks. A schedule creates a task of its handler at each of its ticks: the
 * times of a cron expression in a time zone, or every fixed interval from an anchor (its start_at,
 * or its creation time). This file holds the words, the checks of what a caller defines, and the
 * one function that says when the next tick is (`nextTick`); the store keeps schedules, the
 * engine's scheduler creates their tasks.
 *
 * - tick: one time at which a schedule creates a task.
 * - missed tick: a tick the scheduler comes to more than MISSED_AFTER_MS after it (every process
 *   was down, or Redis was): missed ticks create one task together, or none with `skipMissed`.
 */
import { Cron } from "croner";
import { isObject, type JsonObject, type TaskOptions, type TaskStatus } from "./domain.js";
import { InvalidArgumentError } from "./errors.js";
import { checkHandlerName, checkOptions, checkParams, DEFAULT_LIMITS, describeValue, type Limits } from "./validate.js";

/**
 * A tick the scheduler comes to more than this late is missed (after downtime): ticks late by
 * less (a busy process, a short Redis outage) each still get their own task.
 */
export const MISSED_AFTER_MS = 5000;

/** Shortest interval of an `every` schedule. */
export const MIN_EVERY_MS = 1000;
/** Longest interval of an `every` schedule: 1 year. */
export const MAX_EVERY_MS = 365 * 86_400_000;

/** Longest schedule id. */
export const MAX_SCHEDULE_ID_LENGTH = 128;
const SCHEDULE_ID_RE = /^[A-Za-z0-9_.:-]+$/;

/** A schedule as a caller defines it (the library's form; the RPC converts to it). */
export interface ScheduleSpec {
  /** 1 to 128 letters, digits, `_`, `-`, `.` or `:`. */
  id: string;
  handler: string;
  params?: unknown;
  /** Options of each task (not delay, start_at or an idempotency key: the schedule says when). */
  options?: TaskOptions;
  /** A cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first). */
  cron?: string;
  /** IANA time zone of the cron expression (default: UTC). */
  timeZone?: string;
  /** A fixed interval in seconds, at least 1 (exactly one of cron and every). */
  every?: number;
  /** No tick before this time (epoch ms or a Date); the anchor of `every` ticks. */
  startAt?: number | Date;
  /** No tick after this time (epoch ms or a Date). */
  endAt?: number | Date;
  /** Drop missed ticks instead of creating one task for them (default: false). */
  skipMissed?: boolean;
  /** Create it paused (CreateSchedule only; default: false). */
  paused?: boolean;
}

/** A checked definition, as stored. */
export interface ScheduleDefinition {
  id: string;
  handler: string;
  /** Params as JSON text. */
  paramsJson: string;
  options: TaskOptions;
  cron?: string;
  /** IANA name; "UTC" unless set. */
  timeZone: string;
  everyMs?: number;
  startAtMs?: number;
  endAtMs?: number;
  skipMissed: boolean;
}

/** A schedule as read: its definition and its state. Times are epoch ms. */
export interface Schedule extends ScheduleDefinition {
  params: JsonObject;
  paused: boolean;
  /** The next tick; undefined while paused or when none is left (end_at passed). */
  nextRunMs?: number;
  /** The last tick that created a task, and that task. */
  lastRunMs?: number;
  lastTaskId?: string;
  /** That task's status now; undefined once it expired (or before any). */
  lastTaskStatus?: TaskStatus;
  /** The last tick's create failed (its queue was full, for example): why. Cleared by the next task. */
  lastError?: string;
  createdMs: number;
  updatedMs: number;
}

/** A schedule id: 1 to 128 letters, digits, `_`, `-`, `.` or `:`. */
export function checkScheduleId(value: unknown, field = "schedule_id"): string {
  if (typeof value !== "string" || value === "") {
    throw new InvalidArgumentError(field, "is required: 1 to 128 letters, digits, '_', '-', '.' or ':'");
  }
  if (value.length > MAX_SCHEDULE_ID_LENGTH) {
    throw new InvalidArgumentError(field, `is ${value.length} characters long; the limit is ${MAX_SCHEDULE_ID_LENGTH}`);
  }
  if (!SCHEDULE_ID_RE.test(value)) {
    throw new InvalidArgumentError(
      field,
      `${describeValue(value)} is not a schedule id: use letters, digits, '_', '-', '.' or ':'`,
    );
  }
  return value;
}

/**
 * Check a definition and turn it into what is stored. Throws InvalidArgumentError naming the
 * field: the id, handler, params and options as CreateTask checks them (options without delay,
 * start_at or an idempotency key), exactly one of cron and every, a cron expression that parses
 * and matches some time, a known time zone (for cron only), every from 1 s to 1 year, and end_at
 * after start_at.
 */
export function checkScheduleSpec(spec: ScheduleSpec, limits: Limits = DEFAULT_LIMITS): ScheduleDefinition {
  if (!isObject(spec as unknown)) throw new InvalidArgumentError("schedule", "is required");
  const id = checkScheduleId(spec.id);
  const handler = checkHandlerName(spec.handler, limits.maxHandlerLength);
  const { json } = checkParams(spec.params ?? {}, limits);
  const options = checkOptions(spec.options);
  for (const [name, field] of [
    ["delay", "delay"],
    ["startAt", "start_at"],
    ["idempotencyKey", "idempotency_key"],
  ] as const) {
    if (options[name] !== undefined) {
      throw new InvalidArgumentError(
        `options.${field}`,
        "is not allowed in a schedule: the schedule says when its tasks run (and makes each tick's create idempotent)",
      );
    }
  }
  const cron = spec.cron === undefined || spec.cron === "" ? undefined : spec.cron;
  if (cron !== undefined && typeof cron !== "string") {
    throw new InvalidArgumentError("cron", `must be a cron expression (a string), got ${describeValue(cron)}`);
  }
  if (spec.timeZone !== undefined && typeof spec.timeZone !== "string") {
    throw new InvalidArgumentError("time_zone", `must be an IANA time zone name (a string), got ${describeValue(spec.timeZone)}`);
  }
  const every = spec.every === undefined || spec.every === 0 ? undefined : spec.every;
  if (cron === undefined && every === undefined) {
    throw new InvalidArgumentError("cron", "give cron (a cron expression) or every (an interval): one is required");
  }
  if (cron !== undefined && every !== undefined) {
    throw new InvalidArgumentError("every", "give cron or every, not both");
  }
  const def: ScheduleDefinition = { id, handler, paramsJson: json, options, timeZone: "UTC", skipMissed: false };
  const zone = spec.timeZone === undefined || spec.timeZone === "" ? undefined : spec.timeZone;
  if (cron !== undefined) {
    def.timeZone = zone === undefined ? "UTC" : checkTimeZone(zone);
    def.cron = checkCron(cron, def.timeZone);
  } else {
    if (zone !== undefined) throw new InvalidArgumentError("time_zone", "is for cron schedules only: every counts real time");
    def.everyMs = checkEvery(every);
  }
  const startAtMs = checkTime(spec.startAt, "start_at");
  const endAtMs = checkTime(spec.endAt, "end_at");
  if (startAtMs !== undefined) def.startAtMs = startAtMs;
  if (endAtMs !== undefined) def.endAtMs = endAtMs;
  if (startAtMs !== undefined && endAtMs !== undefined && endAtMs < startAtMs) {
    throw new InvalidArgumentError("end_at", "is before start_at: no tick could ever run");
  }
  if (spec.skipMissed !== undefined && typeof spec.skipMissed !== "boolean") {
    throw new InvalidArgumentError("skip_missed", "must be true or false");
  }
  def.skipMissed = spec.skipMissed === true;
  if (spec.paused !== undefined && typeof spec.paused !== "boolean")
    throw new InvalidArgumentError("paused", "must be true or false");
  return def;
}

function checkEvery(value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new InvalidArgumentError("every", `must be a number of seconds, got ${describeValue(value)}`);
  }
  const ms = Math.round(value * 1000);
  if (ms < MIN_EVERY_MS) throw new InvalidArgumentError("every", `must be at least 1 second, got ${value} s`);
  if (ms > MAX_EVERY_MS)
    throw new InvalidArgumentError("every", `must be at most 1 year (${MAX_EVERY_MS / 1000} s), got ${value} s`);
  return ms;
}

function checkTime(value: unknown, field: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  const ms = value instanceof Date ? value.getTime() : value;
  // Year 1 to 9999: what a protobuf Timestamp can hold.
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < -62_135_596_800_000 || ms > 253_402_300_799_999) {
    throw new InvalidArgumentError(field, `must be a time (epoch ms or a Date), got ${describeValue(value)}`);
  }
  return Math.round(ms);
}

/**
 * An IANA time zone name that the runtime's time zone database knows; returned as given (the
 * database's canonical spelling differs between runtimes: Asia/Kolkata or Asia/Calcutta).
 */
export function checkTimeZone(value: string, field = "time_zone"): string {
  // Names only (Europe/Berlin, UTC, Etc/GMT+5): not offsets such as +01:00, which some runtimes accept.
  if (value.length > 64 || !/^[A-Za-z][A-Za-z0-9_+\-/]*$/.test(value)) {
    throw new InvalidArgumentError(field, `${describeValue(value)} is not an IANA time zone name such as Europe/Berlin or UTC`);
  }
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: value });
    return value;
  } catch {
    throw new InvalidArgumentError(field, `${describeValue(value)} is not a known IANA time zone (such as Europe/Berlin or UTC)`);
  }
}

/** A cron expression of 5 or 6 fields that croner parses and that matches some time; returned trimmed. */
export function checkCron(value: string, timeZone = "UTC", field = "cron"): string {
  const text = value.trim().replace(/\s+/g, " ");
  if (text.length > 256) throw new InvalidArgumentError(field, `is ${text.length} characters long; the limit is 256`);
  let cron: Cron;
  try {
    cron = cronOf(text, timeZone);
  } catch (err) {
    const reason = (err instanceof Error ? err.message : String(err)).replace(/^CronPattern: /, "");
    throw new InvalidArgumentError(
      field,
      `${describeValue(value)} is not a cron expression (${reason}): expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first)`,
    );
  }
  if (cron.nextRun(new Date()) === null) throw new InvalidArgumentError(field, `${describeValue(value)} never matches a time`);
  return text;
}

const crons = new Map<string, Cron>();

/** A parsed cron expression (cached: the scheduler asks for the same few again and again). */
function cronOf(pattern: string, timeZone: string): Cron {
  const key = `${timeZone} ${pattern}`;
  let cron = crons.get(key);
  if (!cron) {
    // No function: croner only computes times, it never arms a timer.
    cron = new Cron(pattern, { timezone: timeZone, mode: "5-or-6-parts" });
    if (crons.size >= 1000) crons.clear();
    crons.set(key, cron);
  }
  return cron;
}

/**
 * The first tick strictly after `afterMs` (epoch ms), or undefined when none is left (past
 * end_at, or a cron expression that matches no later time). `anchorMs` is where `every` ticks
 * count from when there is no start_at: the schedule's creation time.
 *
 * Cron times are civil times in the schedule's time zone, through croner: across a daylight-saving
 * change, a fixed-time expression (single second, minute and hour, such as `30 2 * * *`) whose time
 * falls in the hour that is skipped runs at the first valid time after the gap (03:00), and runs
 * once (at the first of the two) on the day its time occurs twice; an expression with a wildcard,
 * range or step in those fields skips the times that do not exist and runs at both instants of a
 * time that occurs twice. `every` counts real time: daylight saving does not move it.
 */
export function nextTick(def: ScheduleDefinition, anchorMs: number, afterMs: number): number | undefined {
  let next: number | undefined;
  const start = def.startAtMs;
  if (def.everyMs !== undefined) {
    const anchor = start ?? anchorMs;
    next = afterMs < anchor ? anchor : anchor + (Math.floor((afterMs - anchor) / def.everyMs) + 1) * def.everyMs;
  } else if (def.cron !== undefined) {
    // Ticks are at or after start_at: look from just before it.
    const from = start !== undefined && start - 1 > afterMs ? start - 1 : afterMs;
    next = cronOf(def.cron, def.timeZone).nextRun(new Date(from))?.getTime();
  }
  if (next === undefined || (def.endAtMs !== undefined && next > def.endAtMs)) return undefined;
  return next;
}

/** What a scheduler does with a schedule's due tick (see planTick). */
export interface TickPlan {
  /** The tick handled: the schedule's next run. */
  tickMs: number;
  /** The tick is missed: handled more than MISSED_AFTER_MS after its time. */
  missed: boolean;
  /** Create the tick's task (false: a missed tick of a schedule with skipMissed). */
  create: boolean;
  /** The schedule's next tick after this one; undefined when none is left. */
  nextMs: number | undefined;
}

/**
 * The plan for a schedule's due tick T at `nowMs` (Redis's clock). On time or late by at most
 * MISSED_AFTER_MS: T gets its task and the schedule moves to the tick after T (a late scheduler
 * catches up tick by tick). Later than that, T is missed, and so is every tick before now minus
 * MISSED_AFTER_MS: they get one task together (keyed on T), or none with skipMissed, and the
 * schedule moves to its first tick that is not missed.
 */
export function planTick(schedule: ScheduleDefinition & { nextRunMs: number; createdMs: number }, nowMs: number): TickPlan {
  const tickMs = schedule.nextRunMs;
  const missed = tickMs < nowMs - MISSED_AFTER_MS;
  const nextMs = missed
    ? nextTick(schedule, schedule.createdMs, nowMs - MISSED_AFTER_MS - 1)
    : nextTick(schedule, schedule.createdMs, tickMs);
  return { tickMs, missed, create: !missed || !schedule.skipMissed, nextMs };
}
