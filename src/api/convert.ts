/**
 * Conversions between BaiChuan's own values (core/domain.ts) and their protobuf messages: tasks,
 * statuses, task options, durations and timestamps. One place, for every service.
 */
import { create, fromJson } from "@bufbuild/protobuf";
import { type Duration, DurationSchema, durationMs, type Timestamp, TimestampSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  type Task as TaskMessage,
  type TaskOptions as TaskOptionsMessage,
  TaskSchema,
  TaskStatus,
} from "../../gen/baichuan/v1/task_pb.js";
import { microsFromIso, type TaskStatus as StoredStatus, TASK_STATUSES, type Task, type TaskOptions } from "../core/domain.js";
import { InvalidArgumentError } from "../core/errors.js";

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

function timestampMs(t: Timestamp): number {
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
