/**
 * The words BaiChuan uses, and the shape of a task.
 *
 * - handler: a function of a service, named by its path `/module/function` (`/demo_api/ping`).
 * - task: one request to run a handler with some params; stored in Redis as a hash (the original
 *   called it a message, "msg", and its keys keep that name: `mq:msg:...`).
 * - queue: a handler's list of queued task ids. One queue per handler; its name is the handler path.
 * - worker: the part of a BaiChuan process that takes tasks from the queues of the handlers that
 *   process has and runs them. Named `host:port:pid`.
 */
import { createHash } from "node:crypto";

/** Characters of a handler's tag: the start of its task ids, and the hash tag of its keys. */
export const TAG_LENGTH = 4;

/** A task id: its handler's 4-hex tag followed by 16 random hex characters. */
export const TASK_ID_LENGTH = TAG_LENGTH + 16;

/** Where a task is in its life, spelled as stored in Redis (`status` field): the one list of them. */
export const TASK_STATUSES = ["scheduled", "queued", "started", "finished", "failed", "canceled"] as const;

export type TaskStatus = (typeof TASK_STATUSES)[number];

/** The statuses a task does not leave (until it is retried). */
export const TERMINAL_STATUSES: ReadonlySet<TaskStatus> = new Set(["finished", "failed", "canceled"]);

export function isTaskStatus(text: string): text is TaskStatus {
  return (TASK_STATUSES as readonly string[]).includes(text);
}

/** Why a task failed; stored as the `stat` of its `result` JSON, as the original framework did. */
export type FailureCode =
  | "ERR_BAD_PARAMS"
  | "ERR_SERVER_EXCEPTION"
  | "ERR_TIMEOUT"
  | "ERR_MSG_EXPIRED"
  | "ERR_WORKER_LOST"
  | "ERR_POISON_TASK"
  | "ERR_CANCELED";

/** A JSON value, as params and results are. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/** Options of one task; every one optional. Times are in seconds. */
export interface TaskOptions {
  /** Longest run time before the handler's signal aborts and the task fails (default: 180 s). */
  timeout?: number;
  /** How long a finished task is kept (default: 86,400 s = 1 day). */
  resultTtl?: number;
  /** How long a failed task is kept (default: 604,800 s = 7 days). */
  failureTtl?: number;
  /** Longest wait in the queue before the task is dropped as failed (default: none). */
  ttl?: number;
  /** Return the QUEUED or STARTED task with the same handler and params instead of a new one (default: false). */
  unique?: boolean;
  /**
   * Runs at most this many times: a handler error (not ERR_BAD_PARAMS) or a lost worker retries it
   * with exponential backoff and jitter while attempts are left (default: 1, no retry; at most 100).
   */
  maxAttempts?: number;
  /** Run no sooner than this many seconds from now: SCHEDULED until then (at most 1 year). */
  delay?: number;
  /** Run no sooner than this time (epoch ms or a Date; at most 1 year ahead; a past time queues at once). */
  startAt?: number | Date;
  /** 1 (high), 0 (normal, the default) or -1 (low): higher is taken first; FIFO within a priority. */
  priority?: number;
  /**
   * The caller's key for this create (1 to 128 printable ASCII characters, no space at either end):
   * a create with a key used before (within the idempotency TTL, 1 day by default) with the same
   * handler and params answers the same task id instead of creating another, so a create that timed
   * out or answered UNAVAILABLE can be retried safely. The same key with another handler or other
   * params is refused (IdempotencyKeyReusedError).
   */
  idempotencyKey?: string;
  /**
   * The task's concurrency key, for example a customer id (1 to 128 printable ASCII characters, no
   * space at either end): tasks of one handler that share a key run at most the handler's
   * `max_running_per_key` at once across every process, and keys take turns, so one key's many
   * tasks do not hold back another key's few (default: none).
   */
  concurrencyKey?: string;
}

export const DEFAULTS = {
  maxAttempts: 1,
  timeout: 180,
  resultTtl: 86_400,
  failureTtl: 604_800,
  /** A task whose worker was lost this many times fails with ERR_POISON_TASK instead of being recovered again. */
  maxWorkerLosses: 3,
} as const;

/** Bounds on options, in seconds. */
export const LIMITS = {
  maxAttempts: 100,
  maxTimeout: 7 * 86_400,
  maxTtl: 365 * 86_400,
} as const;

/**
 * A handler's flow limits, obeyed by every process (0: no limit). Set at run time by
 * AdminService.SetQueueLimits, or in code when a handler is registered (see HandlerRegistry).
 */
export interface QueueLimits {
  /** Most task starts per second, across every process; fractions allowed (0.5: one every 2 s). */
  ratePerSecond: number;
  /** Most starts in a burst after an idle time, the token bucket's size (0: ratePerSecond, at least 1). */
  burst: number;
  /** Most tasks running at once, across every process. */
  maxRunning: number;
  /** Most tasks of one concurrency key running at once, across every process. */
  maxRunningPerKey: number;
}

/** No limit at all. */
export const NO_QUEUE_LIMITS: QueueLimits = { ratePerSecond: 0, burst: 0, maxRunning: 0, maxRunningPerKey: 0 };

/** Largest value of any limit: starts per second, burst, tasks running. */
export const MAX_QUEUE_LIMIT = 1_000_000;

/** A task as read from Redis, decoded. */
export interface Task {
  id: string;
  handler: string;
  status: TaskStatus;
  params: JsonObject;
  /** What the handler returned (`data` of the stored result); undefined unless finished. */
  result?: JsonValue;
  /** Failure text and code; undefined unless failed. */
  error?: string;
  errorCode?: string;
  /** Creator's IP address; empty when created from code. */
  ip: string;
  createdAt: string;
  enqueuedAt: string;
  startedAt?: string;
  endedAt?: string;
  /** Seconds the handler ran; 0 until the task ends. */
  cost: number;
  /** `host:port:pid` of the worker that runs or ran it; empty while queued. */
  worker: string;
  timeout: number;
  resultTtl: number;
  failureTtl: number;
  ttl?: number;
  /** Runs started so far (a retry or a recovery after a lost worker starts another). */
  attempts: number;
  maxAttempts: number;
  /** Error of the latest failed run, also while a retry waits; undefined if none failed. */
  lastError?: string;
  /** Priority within the handler's queue (1, -1); undefined for the default 0. */
  priority?: number;
  /** When a scheduled task is due (ISO time); undefined for a task created without delay. */
  scheduledFor?: string;
  /** Progress of the latest run, 0 to 100, and its message; undefined until the handler reports. */
  progress?: number;
  progressMessage?: string;
  /** Raw `result` field (JSON text `{"stat": ..., "data": ...}`), kept for the legacy bridge. */
  rawResult?: string;
  /** Id of the request that created it (`x-request-id`), when there was one. */
  requestId?: string;
  /** Id of the schedule that created it, and the tick (ISO time) it was created for; undefined otherwise. */
  scheduleId?: string;
  scheduleTick?: string;
  /** Its concurrency key (field `concurrency_key`); undefined for none. */
  concurrencyKey?: string;
  /** Bumped by every change of the stored task (field `ver`): orders the snapshots a watch sees. */
  version: number;
  /** Raw hash fields, as stored (the legacy `task_info`). */
  fields: Record<string, string>;
}

/** The result a handler returns, as stored: `{"stat":"OK","data":...}`. */
export function okResultJson(data: JsonValue | undefined): string {
  return JSON.stringify({ stat: "OK", data: data ?? null });
}

/** The result of a failure, as stored: `{"stat":"ERR_...","error":"..."}`. */
export function failureResultJson(code: FailureCode, message: string): string {
  return JSON.stringify({ stat: code, error: message });
}

/**
 * Decode a task hash. Fields written by another program may be missing or odd: decoding never
 * throws, it keeps what it can read.
 */
export function decodeTask(id: string, fields: Record<string, string>): Task {
  const status = (fields.status ?? "queued") as TaskStatus;
  const task: Task = {
    id,
    handler: fields.origin ?? "",
    status,
    params: parseParams(fields.data),
    ip: fields.ip ?? "",
    createdAt: fields.created_at ?? "",
    // Stored only when it differs from created_at (see docs/architecture.md).
    enqueuedAt: fields.enqueued_at ?? fields.created_at ?? "",
    cost: numberOr(fields.cost, 0),
    worker: fields.handle_worker ?? "",
    timeout: numberOr(fields.timeout, DEFAULTS.timeout),
    resultTtl: numberOr(fields.result_ttl, DEFAULTS.resultTtl),
    failureTtl: numberOr(fields.failure_ttl, DEFAULTS.failureTtl),
    attempts: numberOr(fields.attempts, 0),
    maxAttempts: numberOr(fields.max_attempts, DEFAULTS.maxAttempts),
    version: numberOr(fields.ver, 0),
    fields,
  };
  if (fields.last_error) task.lastError = fields.last_error;
  if (fields.priority) task.priority = numberOr(fields.priority, 0);
  if (fields.request_id) task.requestId = fields.request_id;
  if (fields.schedule_id) task.scheduleId = fields.schedule_id;
  if (fields.schedule_tick) task.scheduleTick = fields.schedule_tick;
  if (fields.concurrency_key) task.concurrencyKey = fields.concurrency_key;
  if (fields.scheduled_for) task.scheduledFor = fields.scheduled_for;
  if (fields.progress) {
    task.progress = Math.min(100, Math.max(0, numberOr(fields.progress, 0)));
    task.progressMessage = fields.progress_message ?? "";
  }
  if (fields.started_at) task.startedAt = fields.started_at;
  if (fields.ended_at) task.endedAt = fields.ended_at;
  if (fields.ttl) task.ttl = numberOr(fields.ttl, 0);
  if (fields.result !== undefined) {
    task.rawResult = fields.result;
    const parsed = parseJson(fields.result);
    if (isObject(parsed)) {
      if (status === "finished") task.result = parsed.data ?? null;
      if (status === "failed" || status === "canceled") {
        task.errorCode = typeof parsed.stat === "string" ? parsed.stat : "ERR_SERVER_EXCEPTION";
        task.error = typeof parsed.error === "string" ? parsed.error : "task failed";
      }
    } else if (status === "failed") {
      task.errorCode = "ERR_SERVER_EXCEPTION";
      task.error = "task failed";
    }
  }
  return task;
}

export function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function parseParams(text: string | undefined): JsonObject {
  const parsed = text === undefined ? undefined : parseJson(text);
  return isObject(parsed) ? parsed : {};
}

function numberOr(text: string | undefined, fallback: number): number {
  const n = text === undefined || text === "" ? NaN : Number(text);
  return Number.isFinite(n) ? n : fallback;
}

/**
 * Now by this process's clock, as the original wrote times: `2025-05-25T05:25:01.375784Z`
 * (microseconds, UTC). Only for times nobody compares (a worker's `birth`): every time stored on a
 * task, and every deadline, is Redis's (the scripts read TIME; see lib.lua).
 */
export function isoNow(): string {
  const micros = Date.now() * 1000 + Math.floor((performance.now() % 1) * 1000);
  // The two clocks are not aligned: never go back in time within this process.
  lastMicros = Math.max(micros, lastMicros + 1);
  return isoFromMicros(lastMicros);
}

let lastMicros = 0;

export function isoFromMicros(micros: number): string {
  const ms = Math.floor(micros / 1000);
  const iso = new Date(ms).toISOString(); // 2025-05-25T05:25:01.375Z
  return `${iso.slice(0, 23)}${String(micros % 1000).padStart(3, "0")}Z`;
}

/** Parse a stored time into epoch microseconds; NaN when it is not a time. */
export function microsFromIso(iso: string): number {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/.exec(iso);
  if (!m) return NaN;
  const seconds = Date.parse(`${m[1]}Z`);
  const fraction = (m[2] ?? "").padEnd(6, "0");
  return seconds * 1000 + Number(fraction);
}

/** SHA-1 of params as canonical JSON (object keys sorted), for `unique` and idempotency keys. */
export function paramsDigest(params: JsonValue): string {
  return createHash("sha1").update(canonicalJson(params)).digest("hex");
}

function canonicalJson(value: JsonValue): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k]!)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
