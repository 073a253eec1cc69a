/**
 * The original's admin API ("canghai") as JSON URLs under `/canghai/`, with the original's `stat`
 * convention (`{"stat":"OK","data":...}` or `{"stat":"ERR_...","error":"..."}`). Each takes a JSON
 * body (POST) or query parameters (GET); all of it is served by Admin (admin.ts), like
 * AdminService.
 *
 *   list_queues                          every queue with its counts, limits and pause
 *   list_workers                         live workers
 *   worker_info   name                   one worker
 *   list_msgs     queue, state, size?, cursor?   a page of tasks; `next_cursor` continues ("" at the end)
 *   msg_info      task_id                one task's fields
 *   delete_msg    task_id                delete a task
 *   empty_queue   queue, state           delete a queue's tasks in one state
 *   set_queue_limits  queue, rate_per_second?, burst?, max_running?, max_running_per_key?
 *                                        replace a queue's limits (absent or 0: none); answers the queue
 *   pause_queue   queue                  no task of the queue starts until resumed; answers the queue
 *   resume_queue  queue                  its tasks start again; answers the queue
 *
 * `queue` is a handler path; `state` is scheduled, queued, started, finished, failed or canceled.
 */

import { type Grant, taskNotFound } from "../core/auth.js";
import { isTaskStatus, type JsonObject, type JsonValue, TASK_STATUSES, type Task } from "../core/domain.js";
import { InvalidArgumentError } from "../core/errors.js";
import { legacyTaskId } from "../core/validate.js";
import type { Admin, QueueStats, WorkerView } from "../engine/admin.js";
import type { BaiChuan } from "../engine/baichuan.js";

export const CANGHAI_PREFIX = "/canghai/";

/** Hash fields that are BaiChuan's bookkeeping, not part of the original's task_info. */
const INTERNAL_FIELDS = new Set(["ver", "unique", "drop_at", "group_seq"]);

/** A task as the original's `task_info`: its hash fields but the bookkeeping ones, with `enqueued_at`. */
export function taskInfo(task: Task): JsonObject {
  const out: JsonObject = { task_id: task.id };
  for (const [k, v] of Object.entries(task.fields)) if (!INTERNAL_FIELDS.has(k)) out[k] = v;
  out.enqueued_at = task.enqueuedAt; // the original always had it; stored only when it differs from created_at
  return out;
}

/** Answer one canghai call; `name` is the part of the path after the prefix. */
export async function canghai(
  bc: BaiChuan,
  admin: Admin,
  name: string,
  input: JsonObject,
  grant: Grant,
): Promise<JsonObject | undefined> {
  switch (name) {
    case "list_queues":
      return ok((await admin.queues(grant)).map(queueJson));
    case "list_workers":
      return ok((await admin.workers(grant)).map(workerJson));
    case "worker_info": {
      const wanted = text(input, "name");
      const worker = (await admin.workers(grant)).find((w) => w.name === wanted);
      if (!worker) return { stat: "ERR_WORKER_NOT_EXIST", error: `no live worker named ${wanted}` };
      return ok(workerJson(worker));
    }
    case "list_msgs": {
      const size = count(input, "size");
      const page = await admin.tasks(text(input, "queue"), state(input), size, optionalText(input, "cursor"), grant);
      return ok({ msgs: page.tasks.map(taskInfo), next_cursor: page.nextPageToken });
    }
    case "msg_info": {
      // As task_get: an id no task has is ERR_MSG_NOT_EXIST whatever its form, and so is, for a
      // token limited to some handlers, a task of another handler (see checkTaskGrant).
      const taskId = legacyTaskId(input.task_id);
      if (taskId === undefined) throw taskNotFound(String(input.task_id), grant);
      return ok(taskInfo(await bc.getTask(taskId, grant)));
    }
    case "delete_msg": {
      const taskId = legacyTaskId(input.task_id);
      return ok({ deleted: taskId === undefined ? false : await bc.delete(taskId, grant) });
    }
    case "empty_queue":
      return ok({ deleted: await admin.empty(text(input, "queue"), state(input), grant) });
    case "set_queue_limits": {
      // Every limit is replaced: a misspelt one must be refused, not read as "no limit".
      const unknown = Object.keys(input).find((field) => !LIMIT_FIELDS.has(field));
      if (unknown !== undefined) throw new InvalidArgumentError(unknown, "is not a field of set_queue_limits");
      const limits = {
        ratePerSecond: limit(input, "rate_per_second"),
        burst: limit(input, "burst"),
        maxRunning: limit(input, "max_running"),
        maxRunningPerKey: limit(input, "max_running_per_key"),
      };
      return ok(queueJson(await admin.setLimits(text(input, "queue"), limits, grant)));
    }
    case "pause_queue":
      return ok(queueJson(await admin.setPaused(text(input, "queue"), true, grant)));
    case "resume_queue":
      return ok(queueJson(await admin.setPaused(text(input, "queue"), false, grant)));
    default:
      return undefined;
  }
}

function ok(data: JsonValue): JsonObject {
  return { stat: "OK", data };
}

function queueJson(q: QueueStats): JsonObject {
  return {
    queue: q.handler,
    queued: q.queued,
    started: q.started,
    scheduled: q.scheduled,
    oldest_queued_age: q.oldestQueuedAgeMs === undefined ? null : round(q.oldestQueuedAgeMs / 1000),
    finished_total: q.finished,
    failed_total: q.failed,
    retried_total: q.retried,
    canceled_total: q.canceled,
    rate_per_second: q.limits.ratePerSecond,
    burst: q.limits.burst,
    max_running: q.limits.maxRunning,
    max_running_per_key: q.limits.maxRunningPerKey,
    paused: q.paused,
    held: q.held,
    queued_in_groups: q.queuedInGroups,
    groups: q.groups,
  };
}

function workerJson(w: WorkerView): JsonObject {
  return {
    name: w.name,
    hostname: w.hostname,
    pid: w.pid,
    queues: w.handlers,
    state: w.state,
    birth: w.startedAt,
    heartbeat_age: w.heartbeatAgeMs === undefined ? null : round(w.heartbeatAgeMs / 1000),
    successful_msg_count: w.finished,
    failed_msg_count: w.failed,
    total_working_time: round(w.busySeconds),
  };
}

const round = (seconds: number) => Math.round(seconds * 1e6) / 1e6;

function text(input: JsonObject, field: string): string {
  const value = input[field];
  if (typeof value !== "string" || value === "") throw new InvalidArgumentError(field, "is required (a string)");
  return value;
}

/** A whole number given as a JSON number or a decimal string; 0 when absent. */
function count(input: JsonObject, field: string): number {
  const value = input[field];
  if (value === undefined || value === null) return 0;
  if (typeof value === "number") return value;
  if (typeof value === "string" && /^\d{1,9}$/.test(value)) return Number(value);
  throw new InvalidArgumentError(field, "must be a whole number");
}

/**
 * A limit given as a JSON number or a decimal string (query parameters are strings); 0 when absent.
 * Its range is checked with the others (checkQueueLimits).
 */
/** The fields set_queue_limits takes. */
const LIMIT_FIELDS = new Set(["queue", "rate_per_second", "burst", "max_running", "max_running_per_key"]);

function limit(input: JsonObject, field: string): number {
  const value = input[field];
  if (value === undefined || value === null) return 0;
  if (typeof value === "number") return value;
  if (typeof value === "string" && /^\d{1,9}(\.\d{1,9})?$/.test(value)) return Number(value);
  throw new InvalidArgumentError(field, "must be a number, 0 (no limit) or more");
}

function optionalText(input: JsonObject, field: string): string {
  const value = input[field];
  if (value === undefined || value === null) return "";
  if (typeof value !== "string") throw new InvalidArgumentError(field, "must be a string");
  return value;
}

function state(input: JsonObject): string {
  const value = text(input, "state");
  if (!isTaskStatus(value)) throw new InvalidArgumentError("state", `must be one of ${TASK_STATUSES.join(", ")}`);
  return value;
}
