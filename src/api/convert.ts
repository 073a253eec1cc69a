/**
 * Conversions between BaiChuan's own values (core/domain.ts) and their protobuf messages: tasks,
 * statuses, task options, durations and timestamps. One place, for every service.
 */
import { create, fromJson } from "@bufbuild/protobuf";
import {
  type Duration,
  DurationSchema,
  durationMs,
  type Timestamp,
  TimestampSchema,
  timestampFromMs,
  ValueSchema,
} from "@bufbuild/protobuf/wkt";
import { type Schedule as ScheduleMessage, ScheduleSchema } from "../../gen/baichuan/v1/schedule_pb.js";
import {
  type Task as TaskMessage,
  type TaskOptions as TaskOptionsMessage,
  TaskOptionsSchema,
  TaskSchema,
  TaskStatus,
} from "../../gen/baichuan/v1/task_pb.js";
import { microsFromIso, type TaskStatus as StoredStatus, TASK_STATUSES, type Task, type TaskOptions } from "../core/domain.js";
import { InvalidArgumentError } from "../core/errors.js";
import type { Schedule, ScheduleSpec } from "../core/schedule.js";

function seconds(d: Duration | undefined): number | undefined {
  return d === undefined ? undefined : durationMs(d) / 1000;
}

/** Task options from their message, with the request's idempotency key ("" for none). */
export function optionsFromMessage(options: TaskOptionsMessage | undefined, idempotencyKey: string): TaskOptions {
  if (!options) return idempotencyKey ? { idempotencyKey } : {};
  const out: TaskOptions = { unique: options.unique };
  if (idempotencyKey) out.idempotencyKey = idempotencyKey;
  if (options.maxAttempts !== 0) out.maxAttempts = options.maxAttempts;
  if (options.priority !== 0) out.priority = options.priority;
  if (options.concurrencyKey !== "") out.concurrencyKey = options.concurrencyKey; // "" is none
  const delay = seconds(options.delay);
  if (delay !== undefined) out.delay = delay;
  if (options.startAt) out.startAt = timestampMs(options.startAt);
  const timeout = seconds(options.timeout);
  const resultTtl = seconds(options.resultTtl);
  const failureTtl = seconds(options.failureTtl);
  const ttl = seconds(options.ttl);
  if (timeout !== undefined) out.timeout = timeout;
  if (resultTtl !== undefined) out.resultTtl = resultTtl;
  if (failureTtl !== undefined) out.failureTtl = failureTtl;
  if (ttl !== undefined) out.ttl = ttl;
  return out;
}

/** Each stored status as its message enum, and back (statusFromMessage). */
const STATUS: Record<StoredStatus, TaskStatus> = {
  scheduled: TaskStatus.SCHEDULED,
  queued: TaskStatus.QUEUED,
  started: TaskStatus.STARTED,
  finished: TaskStatus.FINISHED,
  failed: TaskStatus.FAILED,
  canceled: TaskStatus.CANCELED,
};

/** A Duration from seconds (fractions kept to the nanosecond, as protobuf requires whole nanos). */
export function duration(seconds: number): Duration {
  const whole = Math.floor(seconds);
  const nanos = Math.min(999_999_999, Math.round((seconds - whole) * 1e9));
  return create(DurationSchema, { seconds: BigInt(whole), nanos });
}

export function timestampMs(t: Timestamp): number {
  return Number(t.seconds) * 1000 + t.nanos / 1e6;
}

export function timestamp(iso: string | undefined): Timestamp | undefined {
  if (!iso) return undefined;
  const micros = microsFromIso(iso);
  if (!Number.isFinite(micros)) return undefined;
  return create(TimestampSchema, { seconds: BigInt(Math.floor(micros / 1e6)), nanos: (micros % 1e6) * 1000 });
}

export function taskToMessage(task: Task): TaskMessage {
  const msg = create(TaskSchema, {
    id: task.id,
    handler: task.handler,
    status: STATUS[task.status] ?? TaskStatus.UNSPECIFIED,
    params: task.params,
    error: task.error ?? "",
    errorCode: task.errorCode ?? "",
    cost: task.cost,
    worker: task.worker,
    creatorIp: task.ip,
    timeout: duration(task.timeout),
    resultTtl: duration(task.resultTtl),
    failureTtl: duration(task.failureTtl),
    attempts: task.attempts,
    maxAttempts: task.maxAttempts,
    lastError: task.lastError ?? "",
    progress: task.progress ?? 0,
    progressMessage: task.progressMessage ?? "",
    priority: task.priority ?? 0,
    scheduleId: task.scheduleId ?? "",
    concurrencyKey: task.concurrencyKey ?? "",
  });
  if (task.scheduledFor) msg.scheduledFor = timestamp(task.scheduledFor);
  if (task.status === "finished") msg.result = fromJson(ValueSchema, task.result ?? null);
  if (task.ttl !== undefined) msg.ttl = duration(task.ttl);
  msg.createdAt = timestamp(task.createdAt);
  msg.enqueuedAt = timestamp(task.enqueuedAt);
  msg.startedAt = timestamp(task.startedAt);
  msg.endedAt = timestamp(task.endedAt);
  return msg;
}

/** A status from a request (ListTasks, EmptyQueue) as stored; UNSPECIFIED is refused. */
export function statusFromMessage(status: TaskStatus): StoredStatus {
  const name = TASK_STATUSES.find((s) => STATUS[s] === status);
  if (!name) throw new InvalidArgumentError("status", "must be set: SCHEDULED, QUEUED, STARTED, FINISHED, FAILED or CANCELED");
  return name;
}

/** Stored task options as their message (a schedule's). */
export function optionsToMessage(options: TaskOptions): TaskOptionsMessage {
  const msg = create(TaskOptionsSchema, {
    unique: options.unique ?? false,
    maxAttempts: options.maxAttempts ?? 0,
    priority: options.priority ?? 0,
  });
  if (options.timeout !== undefined) msg.timeout = duration(options.timeout);
  if (options.resultTtl !== undefined) msg.resultTtl = duration(options.resultTtl);
  if (options.failureTtl !== undefined) msg.failureTtl = duration(options.failureTtl);
  if (options.ttl !== undefined) msg.ttl = duration(options.ttl);
  return msg;
}

/** A schedule's definition from its message (checked by the engine); its state fields are ignored but `paused`. */
export function scheduleSpecFromMessage(msg: ScheduleMessage | undefined): ScheduleSpec {
  if (!msg) throw new InvalidArgumentError("schedule", "is required");
  const spec: ScheduleSpec = {
    id: msg.scheduleId,
    handler: msg.handler,
    params: msg.params ?? {},
    options: optionsFromMessage(msg.options, ""),
    cron: msg.cron,
    timeZone: msg.timeZone,
    skipMissed: msg.skipMissed,
    paused: msg.paused,
  };
  if (msg.every) spec.every = seconds(msg.every)!;
  if (msg.startAt) spec.startAt = timestampMs(msg.startAt);
  if (msg.endAt) spec.endAt = timestampMs(msg.endAt);
  return spec;
}

const tsOf = (ms: number | undefined): Timestamp | undefined => (ms === undefined ? undefined : timestampFromMs(ms));

export function scheduleToMessage(s: Schedule): ScheduleMessage {
  const msg = create(ScheduleSchema, {
    scheduleId: s.id,
    handler: s.handler,
    params: s.params,
    options: optionsToMessage(s.options),
    cron: s.cron ?? "",
    timeZone: s.cron === undefined ? "" : s.timeZone,
    skipMissed: s.skipMissed,
    paused: s.paused,
    lastTaskId: s.lastTaskId ?? "",
    lastTaskStatus: s.lastTaskStatus === undefined ? TaskStatus.UNSPECIFIED : STATUS[s.lastTaskStatus],
    lastError: s.lastError ?? "",
  });
  if (s.everyMs !== undefined) msg.every = duration(s.everyMs / 1000);
  msg.startAt = tsOf(s.startAtMs);
  msg.endAt = tsOf(s.endAtMs);
  msg.nextRunAt = tsOf(s.nextRunMs);
  msg.lastRunAt = tsOf(s.lastRunMs);
  msg.createdAt = tsOf(s.createdMs);
  msg.updatedAt = tsOf(s.updatedMs);
  return msg;
}
