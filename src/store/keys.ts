/**
 * Every Redis key and channel name BaiChuan uses is built here, and nowhere else.
 *
 * Layout (kept from the original, see docs/architecture.md):
 * - a handler's keys and its tasks share one hash tag, `{TAG}`, where TAG is 4 upper-case hex
 *   characters derived from the handler name, so every script touches a single Redis Cluster slot;
 * - a task id starts with its handler's tag, so the task's key is known from the id alone.
 */
import { createHash, randomBytes, randomFillSync } from "node:crypto";
import { TAG_LENGTH, TASK_ID_LENGTH } from "../core/domain.js";

/** Prefix of every key, as in the original. */
const PREFIX = "mq:";

export { TAG_LENGTH, TASK_ID_LENGTH };

const tagCache = new Map<string, string>();

/** The hash tag of a handler: the first 4 hex characters of SHA-1 of its name, upper case. */
export function handlerTag(handler: string): string {
  let tag = tagCache.get(handler);
  if (tag === undefined) {
    tag = createHash("sha1").update(handler).digest("hex").slice(0, TAG_LENGTH).toUpperCase();
    if (tagCache.size < 10_000) tagCache.set(handler, tag);
  }
  return tag;
}

/** Random bytes for task ids, drawn a block at a time: a draw per task cost more than the rest of its id. */
const ID_POOL = Buffer.alloc(8 * 1024);
let poolOffset = ID_POOL.length;

/** `bytes` random bytes as upper-case hex: from the pool when they fit in a block, else drawn at once. */
function randomHex(bytes: number): string {
  if (bytes > ID_POOL.length) return randomBytes(bytes).toString("hex").toUpperCase();
  if (poolOffset + bytes > ID_POOL.length) {
    randomFillSync(ID_POOL);
    poolOffset = 0;
  }
  const hex = ID_POOL.toString("hex", poolOffset, poolOffset + bytes).toUpperCase();
  poolOffset += bytes;
  return hex;
}

/** New task ids for a handler (one random draw for all); the create script refuses an id that exists. */
export function newTaskIds(handler: string, count: number): string[] {
  const tag = handlerTag(handler);
  const hex = randomHex(8 * count);
  return Array.from({ length: count }, (_, i) => tag + hex.slice(16 * i, 16 * i + 16));
}

/** The tag part of a (validated) task id. */
export function taskTag(taskId: string): string {
  return taskId.slice(0, TAG_LENGTH);
}

/** Hash: one task, with the original's field names. `mq:msg:{TAG}<rest of id>` */
export function taskKey(taskId: string): string {
  return taskKeyPrefix(taskTag(taskId)) + taskId.slice(TAG_LENGTH);
}

/** The task id in a task key (`mq:msg:{TAG}rest` -> `TAGrest`). */
export function taskIdOfKey(key: string): string {
  const m = /\{([0-9A-F]+)\}(.*)$/.exec(key);
  return m ? m[1]! + m[2]! : "";
}

/** `mq:msg:{TAG}`: scripts append the rest of an id (the id minus its 4-character tag). */
export function taskKeyPrefix(tag: string): string {
  return `${PREFIX}msg:{${tag}}`;
}

/** List: ids of a handler's queued tasks, oldest first (RPUSH / LPOP). `mq:queue:{TAG}/m/f` */
export function queueKey(handler: string): string {
  return `${PREFIX}queue:{${handlerTag(handler)}}${handler}`;
}

/**
 * Lists: a handler's three queues by priority, in the order workers take from them: `:high`
 * (priority 1), the original's list (0), `:low` (-1). `mq:queue:{TAG}/m/f[:high|:low]`
 */
export function queueKeys(handler: string): [high: string, normal: string, low: string] {
  const normal = queueKey(handler);
  return [`${normal}:high`, normal, `${normal}:low`];
}

/** Sorted set: ids of a handler's running tasks, score = deadline in epoch ms. `mq:wip:{TAG}/m/f` */
export function wipKey(handler: string): string {
  return `${PREFIX}wip:{${handlerTag(handler)}}${handler}`;
}

/** Sorted set: ids of a handler's tasks waiting to be retried, score = due time in epoch ms. */
export function scheduledKey(handler: string): string {
  return `${PREFIX}scheduled:{${handlerTag(handler)}}${handler}`;
}

/** Sorted set: ids of a handler's queued tasks that have a queue ttl, score = deadline in epoch ms. */
export function expiryKey(handler: string): string {
  return `${PREFIX}expiry:{${handlerTag(handler)}}${handler}`;
}

/** Hash of a handler's counters of ended runs: `finished`, `failed`, `retried`, `canceled`. */
export function statsKey(handler: string): string {
  return `${PREFIX}stats:{${handlerTag(handler)}}${handler}`;
}

/**
 * Hash of a handler's ended runs in one minute (`finished`, `failed`, and the run time histogram's
 * buckets `t<k>`, see run-times.ts), written by the scripts that end runs (lua/lib/minutes.lua
 * appends `:<minute>` to the counters key), expiring when the minute leaves the kept window.
 * `mq:stats:{TAG}/m/f:<epoch minute>`
 */
export function statsMinuteKey(handler: string, minute: number): string {
  return `${statsKey(handler)}:${minute}`;
}

/**
 * Sorted set: the queued ids of one concurrency key of a handler (TaskOptions.concurrency_key),
 * score = priority band * 2^50 + the task's place in line (see lua/lib/groups.lua), so a key's
 * tasks are taken high priority first, first in first out within a priority.
 * `mq:group:{TAG}/m/f:<key>` (a handler path has no ':', so the key is all after the first one).
 */
export function groupQueueKey(handler: string, key: string): string {
  return groupQueuePrefix(handler) + key;
}

/** `mq:group:{TAG}/m/f:`: scripts append a concurrency key. */
export function groupQueuePrefix(handler: string): string {
  return `${PREFIX}group:{${handlerTag(handler)}}${handler}:`;
}

/**
 * A handler's concurrency keys' bookkeeping, in the order the scripts take them (lua/lib/groups.lua):
 * - ring: sorted set of the keys whose turn comes (they have queued tasks and are under their
 *   cap), score = turn number; taken lowest first, added back behind the others.
 *   `mq:groupring:{TAG}/m/f`
 * - running: hash, key -> tasks of that key running now (a field is removed at 0).
 *   `mq:grouprun:{TAG}/m/f`
 * - grouped: sorted set of every queued task that has a key, score = its place in line (listings,
 *   counts, the oldest wait). `mq:grouped:{TAG}/m/f`
 * - info: hash, `seq` (the last place in line handed out) and `turn` ("1": the next fetch takes a
 *   grouped task first, so grouped and ungrouped tasks alternate across fetches too).
 *   `mq:groupinfo:{TAG}/m/f`
 * Scripts take the handler's limits hash (limitsKey, field `max_running_per_key`) just before them.
 */
export function groupKeys(handler: string): [ring: string, running: string, grouped: string, info: string] {
  const tag = handlerTag(handler);
  return [
    `${PREFIX}groupring:{${tag}}${handler}`,
    `${PREFIX}grouprun:{${tag}}${handler}`,
    `${PREFIX}grouped:{${tag}}${handler}`,
    `${PREFIX}groupinfo:{${tag}}${handler}`,
  ];
}

/**
 * Hash of a handler's flow limits, read by every fetch (fields absent or "0" mean no limit):
 * `rate` (task starts per second, a decimal), `burst` (token bucket size), `max_running`,
 * `max_running_per_key`, and `paused` ("1" while paused). `mq:limits:{TAG}/m/f`
 */
export function limitsKey(handler: string): string {
  return `${PREFIX}limits:{${handlerTag(handler)}}${handler}`;
}

/**
 * Hash: the token bucket of a handler's rate limit, by Redis's clock: `tokens` (a decimal) and `at`
 * (epoch ms of that count). Absent means full; it expires once it would be full again.
 * `mq:bucket:{TAG}/m/f`
 */
export function bucketKey(handler: string): string {
  return `${PREFIX}bucket:{${handlerTag(handler)}}${handler}`;
}

const QUEUE_KEY_RE = new RegExp(`^${PREFIX}queue:\\{[0-9A-F]{${TAG_LENGTH}}\\}(/.+)$`);

/** The handler a queue key names (the inverse of queueKey); undefined for another key. */
export function handlerOfQueueKey(key: string): string | undefined {
  return QUEUE_KEY_RE.exec(key)?.[1];
}

/**
 * String: id of the QUEUED or STARTED task holding a (handler, params) pair for `unique` creates.
 * `mq:unique:{TAG}/m/f:<sha1 of canonical params>`
 */
export function uniqueKey(handler: string, paramsDigest: string): string {
  return `${PREFIX}unique:{${handlerTag(handler)}}${handler}:${paramsDigest}`;
}

/**
 * String: `<task id> <params digest> <code>` for a create made with an idempotency key, written by
 * create.lua in the handler's slot with the task (code 0: the task was created, 1: a unique create
 * answered a live twin). Expires after the idempotency TTL. `mq:idem:{TAG}/m/f:<key>`
 */
export function idempotencyRecordKey(handler: string, key: string): string {
  return `${PREFIX}idem:{${handlerTag(handler)}}${handler}:${key}`;
}

/**
 * String: the handler an idempotency key was first used with, in a slot of the key's own (its tag is
 * the first 4 hex characters of SHA-1 of the key, upper case), so a key used with two handlers is
 * noticed on a Redis Cluster too. Expires after the idempotency TTL. `mq:idemkey:{KTAG}<key>`
 */
export function idempotencyClaimKey(key: string): string {
  // Not through handlerTag: its cache is for the few handler names, not for every key seen.
  const tag = createHash("sha1").update(key).digest("hex").slice(0, TAG_LENGTH).toUpperCase();
  return `${PREFIX}idemkey:{${tag}}${key}`;
}

/** Set: every queue key ever used (global, never touched by a script). */
export const QUEUES_KEY = `${PREFIX}queues`;

/** String: held (SET NX PX) by the process running the recovery sweep. Global, never in a script. */
export const SWEEP_LOCK_KEY = `${PREFIX}lock:sweep`;

/** Set: names of workers that registered (global, never touched by a script). */
export const WORKERS_KEY = `${PREFIX}workers`;

/** Hash: one worker (birth, last_heartbeat, queues, pid, hostname, ...), expires unless renewed. */
export function workerKey(workerName: string): string {
  return `${PREFIX}worker:${workerName}`;
}

/** Sharded pub/sub channel: every change of state of one task. Same slot as the task. */
export function taskChannel(taskId: string): string {
  return taskChannelPrefix(taskTag(taskId)) + taskId.slice(TAG_LENGTH);
}

/** `mq:events:{TAG}`: scripts append the rest of an id. */
export function taskChannelPrefix(tag: string): string {
  return `${PREFIX}events:{${tag}}`;
}

/** Sharded pub/sub channel: "a handler's queue got work". Same slot as the queue. */
export function wakeChannel(handler: string): string {
  return `${PREFIX}wake:{${handlerTag(handler)}}${handler}`;
}

/**
 * Schedules (ScheduleService) all live under one hash tag, `{sched}`, so every schedule script
 * touches one Redis Cluster slot whatever the schedule ids (a tag of handlers is 4 hex characters:
 * never this one). A tick's task lives in its handler's slot: creating it is a separate step.
 */
const SCHEDULE_TAG = "{sched}";

/** Hash: one schedule's definition and state (see store/schedules.ts). `mq:schedule:{sched}<id>` */
export function scheduleKey(scheduleId: string): string {
  return SCHEDULE_KEY_PREFIX + scheduleId;
}

/** `mq:schedule:{sched}`: scripts append a schedule id. */
export const SCHEDULE_KEY_PREFIX = `${PREFIX}schedule:${SCHEDULE_TAG}`;

/** Set: the id of every schedule. `mq:schedules:{sched}` */
export const SCHEDULES_KEY = `${PREFIX}schedules:${SCHEDULE_TAG}`;

/**
 * Sorted set: the ids of schedules that have a next tick (not paused, end_at not passed), score =
 * that tick in epoch ms: what the schedulers sleep on. `mq:schedules:{sched}due`
 */
export const SCHEDULES_DUE_KEY = `${PREFIX}schedules:${SCHEDULE_TAG}due`;

/**
 * Sharded pub/sub channel: "a schedule was created, changed or deleted" (the message is its id),
 * so every scheduler re-reads its next wake-up at once. Same slot as the schedules.
 */
export const SCHEDULE_CHANNEL = `${PREFIX}schedule-changes:${SCHEDULE_TAG}`;

/** CRC-16/XMODEM, the checksum Redis Cluster maps keys to slots with. */
export function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The Redis Cluster slot of a key: only the part inside the first non-empty `{...}` counts. */
export function keySlot(key: string): number {
  const open = key.indexOf("{");
  if (open !== -1) {
    const close = key.indexOf("}", open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  return crc16(Buffer.from(key)) % 16384;
}
