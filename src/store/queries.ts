/**
 * What Redis holds, read for the people who run BaiChuan and for the engine: the handlers with a
 * queue, live workers (and their heartbeats), queue counts, and a handler's tasks by index or by
 * a SCAN of the keyspace. Keys come from keys.ts only.
 */
import { hostname } from "node:os";
import { decodeTask, microsFromIso, type Task } from "../core/domain.js";
import type { Connection } from "./connection.js";
import type { Flow, QueueFlow } from "./flow.js";
import * as keys from "./keys.js";
import { pointOf, type SeriesPoint } from "./run-times.js";

/** How long a worker hash lives without a heartbeat. */
export const WORKER_TTL_SECONDS = 30;

/** A worker's counters, as its hash shows them. */
export interface WorkerStats {
  successful: number;
  failed: number;
  /** Seconds spent running handlers. */
  workingTime: number;
  state: "busy" | "idle";
}

/** The fields of a worker hash (the original's names), but `last_heartbeat`. */
export function workerFields(info: WorkerInfo, stats: WorkerStats): Record<string, string> {
  return {
    birth: info.birth,
    queues: info.handlers.join(","),
    pid: String(info.pid),
    hostname: hostname(),
    version: "1",
    state: stats.state,
    successful_msg_count: String(stats.successful),
    failed_msg_count: String(stats.failed),
    total_working_time: stats.workingTime.toFixed(6),
  };
}

/** What a worker advertises. */
export interface WorkerInfo {
  name: string;
  handlers: readonly string[];
  pid: number;
  birth: string;
}

/**
 * A handler's lists and sets of task ids: its queues by priority, its queued tasks that have a
 * concurrency key (every key, by place in line), running set, scheduled set.
 */
export type TaskIndex = "queue:high" | "queue" | "queue:low" | "grouped" | "running" | "scheduled";

/**
 * Where a listing of a live state reads, in order: QUEUED is the queue, then the tasks queued under
 * a concurrency key, then the waiting retries.
 */
export const STATUS_INDEXES = {
  queued: ["queue:high", "queue", "queue:low", "grouped", "scheduled"],
  scheduled: ["scheduled"],
  started: ["running"],
} as const satisfies Record<string, readonly TaskIndex[]>;

/** One handler's counts, limits and pause, for the admin listing. */
export interface QueueStats extends QueueFlow {
  handler: string;
  queued: number;
  started: number;
  scheduled: number;
  /** Undefined when nothing is queued. */
  oldestQueuedAgeMs: number | undefined;
  /** Queued tasks that have a concurrency key (counted in `queued`). */
  queuedInGroups: number;
  /** Concurrency keys with tasks queued or running. */
  groups: number;
  /** Queued tasks whose key runs as many as max_running_per_key allows (counted in `queued`). */
  heldByKeyCaps: number;
  finished: number;
  failed: number;
  retried: number;
  canceled: number;
}

export class Queries {
  constructor(
    private readonly connection: Connection,
    private readonly flow: Flow,
  ) {}

  /** Handlers that have a queue (members of `mq:queues`). */
  async queuedHandlers(): Promise<string[]> {
    const queueKeys = await this.connection.call(() => this.connection.redis.smembers(keys.QUEUES_KEY));
    return queueKeys.map(keys.handlerOfQueueKey).filter((h): h is string => h !== undefined);
  }

  /**
   * Write (or refresh) a worker's hash (last_heartbeat by Redis's clock), add it to `mq:workers`
   * and its handlers' queues to `mq:queues` (separate commands: different slots on a cluster).
   * The lease keeper thread does the same every heartbeat (worker/lease-keeper.ts).
   */
  async heartbeat(info: WorkerInfo, stats: WorkerStats): Promise<void> {
    const fields = Object.entries(workerFields(info, stats)).flat();
    await this.connection.call(() =>
      Promise.all([
        this.connection.script("heartbeat", [keys.workerKey(info.name)], [String(WORKER_TTL_SECONDS), ...fields]),
        this.connection.redis.sadd(keys.WORKERS_KEY, info.name),
        ...(info.handlers.length > 0 ? [this.connection.redis.sadd(keys.QUEUES_KEY, ...info.handlers.map(keys.queueKey))] : []),
      ]),
    );
  }

  /** Remove a worker's hash (clean shutdown). */
  async removeWorker(name: string): Promise<void> {
    await this.connection.call(() =>
      Promise.all([this.connection.redis.del(keys.workerKey(name)), this.connection.redis.srem(keys.WORKERS_KEY, name)]),
    );
  }

  /** Handlers advertised by live workers; prunes workers whose hash expired. */
  async liveHandlers(): Promise<Set<string>> {
    const names = await this.connection.call(() => this.connection.redis.smembers(keys.WORKERS_KEY));
    const handlers = new Set<string>();
    if (names.length === 0) return handlers;
    const queues = await this.connection.call(() =>
      Promise.all(names.map((n) => this.connection.redis.hget(keys.workerKey(n), "queues"))),
    );
    const dead: string[] = [];
    queues.forEach((q, i) => {
      if (q === null) dead.push(names[i]!);
      else for (const h of q.split(",")) if (h) handlers.add(h);
    });
    if (dead.length > 0) await this.connection.call(() => this.connection.redis.srem(keys.WORKERS_KEY, ...dead));
    return handlers;
  }

  /**
   * Counts of each handler's queue for the admin listing: queued, running, waiting retries, the age
   * of the oldest queued task (by Redis's clock, as the stored times), and the counters of ended
   * runs, and its limits with the queued tasks they hold back (flow.ts). Several commands per
   * handler, sent at once (not one atomic snapshot).
   */
  async queueStats(handlers: string[]): Promise<QueueStats[]> {
    if (handlers.length === 0) return [];
    const nowMs = await this.connection.timeMs();
    return this.connection.call(() =>
      Promise.all(
        handlers.map(async (handler) => {
          const lists = keys.queueKeys(handler);
          const [lengths, started, scheduled, heads, counters, groups, flow] = await Promise.all([
            Promise.all(lists.map((l) => this.connection.redis.llen(l))),
            this.connection.redis.zcard(keys.wipKey(handler)),
            this.connection.redis.zcard(keys.scheduledKey(handler)),
            Promise.all(lists.map((l) => this.connection.redis.lindex(l, 0))),
            this.connection.redis.hgetall(keys.statsKey(handler)),
            this.groupStats(handler),
            this.flow.read(handler),
          ]);
          heads.push(groups.head);
          const queued = lengths.reduce((a, b) => a + b, 0) + groups.queued;
          // The oldest wait: the earliest enqueued of the three lists' heads and the first grouped task in line.
          const times = await Promise.all(
            heads.map(async (id) => (id ? await this.connection.redis.hmget(keys.taskKey(id), "enqueued_at", "created_at") : [])),
          );
          const at = times
            .map((t) => t[0] ?? t[1])
            .filter((t): t is string => typeof t === "string")
            .sort()[0];
          const counter = (name: string) => Number(counters[name] ?? 0) || 0;
          return {
            handler,
            queued,
            started,
            scheduled,
            oldestQueuedAgeMs: at ? Math.max(0, nowMs - microsFromIso(at) / 1000) : undefined,
            queuedInGroups: groups.queued,
            groups: groups.keys,
            heldByKeyCaps: groups.held,
            finished: counter("finished"),
            failed: counter("failed"),
            retried: counter("retried"),
            canceled: counter("canceled"),
            ...flow,
            // Held by a limit or the pause (flow.held, grouped tasks counted), or by their key's cap.
            held: Math.max(flow.held, groups.held),
          };
        }),
      ),
    );
  }

  /**
   * A handler's runs per minute over the last `minutes` (1 to SERIES_MINUTES), ending with the
   * current minute by Redis's clock, oldest first; minutes without runs are zeros. One script call.
   */
  async series(handler: string, minutes: number): Promise<SeriesPoint[]> {
    const [current, ...hashes] = await this.connection.call(() =>
      this.connection.script<[number, ...string[][]]>("series", [keys.statsKey(handler)], [String(minutes)]),
    );
    const first = current - hashes.length + 1;
    return hashes.map((pairs, i) => {
      const fields: Record<string, string> = {};
      for (let k = 0; k + 1 < pairs.length; k += 2) fields[pairs[k]!] = pairs[k + 1]!;
      return pointOf(first + i, fields);
    });
  }

  /**
   * A handler's concurrency keys (lua/lib/groups.lua): grouped tasks queued, the first in line, keys
   * with tasks queued or running (those in the ring, plus running ones out of it), and the queued
   * tasks of keys out of the ring (held by their cap). Commands per key only for the running keys.
   */
  private async groupStats(handler: string): Promise<{ queued: number; head: string | null; keys: number; held: number }> {
    const redis = this.connection.redis;
    const [ring, running, grouped] = keys.groupKeys(handler);
    const [queued, first, turns, runningKeys] = await Promise.all([
      redis.zcard(grouped),
      redis.zrange(grouped, 0, 0),
      redis.zcard(ring),
      redis.hkeys(running),
    ]);
    let held = 0;
    let outOfRing = 0;
    if (runningKeys.length > 0) {
      const scores = await redis.zmscore(ring, ...runningKeys);
      const waiting = runningKeys.filter((_, i) => scores[i] === null);
      outOfRing = waiting.length;
      const counts = await Promise.all(waiting.map((key) => redis.zcard(keys.groupQueueKey(handler, key))));
      held = counts.reduce((a, b) => a + b, 0);
    }
    return { queued, head: first[0] ?? null, keys: turns + outOfRing, held };
  }

  /** The live workers' hashes, with their names; prunes workers whose hash expired. */
  async workers(): Promise<Array<{ name: string; fields: Record<string, string> }>> {
    const names = (await this.connection.call(() => this.connection.redis.smembers(keys.WORKERS_KEY))).sort();
    const all = await this.connection.call(() => Promise.all(names.map((n) => this.connection.redis.hgetall(keys.workerKey(n)))));
    const dead = names.filter((_, i) => Object.keys(all[i]!).length === 0);
    if (dead.length > 0) await this.connection.call(() => this.connection.redis.srem(keys.WORKERS_KEY, ...dead));
    return names.map((name, i) => ({ name, fields: all[i]! })).filter((w) => Object.keys(w.fields).length > 0);
  }

  /**
   * Ids from one of a handler's indexes, from `offset`: its queue (oldest first), its running set
   * or its scheduled set (by due time).
   */
  async taskIds(handler: string, index: TaskIndex, offset: number, count: number): Promise<string[]> {
    const end = offset + count - 1;
    const [high, normal, low] = keys.queueKeys(handler);
    const list = { "queue:high": high, queue: normal, "queue:low": low }[index as string];
    if (list !== undefined) return this.connection.call(() => this.connection.redis.lrange(list, offset, end));
    const key =
      { running: keys.wipKey(handler), grouped: keys.groupKeys(handler)[2] }[index as string] ?? keys.scheduledKey(handler);
    return this.connection.call(() => this.connection.redis.zrange(key, offset, end));
  }

  /**
   * Scan the keyspace for a handler's tasks in one status (ended tasks have no index): SCAN from
   * `position` until `want` tasks are found, the scan ends, or `maxSteps` SCAN calls were made.
   * A position is a SCAN cursor and how many matches of that cursor's step were already returned,
   * so a page never holds more than `want`. Returns the tasks and the position to continue from
   * (undefined when the scan is done).
   */
  async scanTasks(
    handler: string,
    status: string,
    position: { cursor: string; skip: number },
    want: number,
    maxSteps = 20,
  ): Promise<{ tasks: Task[]; next: { cursor: string; skip: number } | undefined }> {
    const pattern = `${keys.taskKeyPrefix(keys.handlerTag(handler))}*`;
    // On a cluster, the handler's tasks all live on the master of its tag's slot: scan that one.
    const node = this.connection.nodeOf(keys.queueKey(handler));
    const tasks: Task[] = [];
    let { cursor, skip } = position;
    for (let step = 0; step < maxSteps; step++) {
      const [after, found] = await this.connection.call(() => node.scan(cursor, "MATCH", pattern, "COUNT", 1000));
      const heads = await this.connection.call(() =>
        Promise.all(found.map((k) => this.connection.redis.hmget(k, "origin", "status"))),
      );
      const ids = found.filter((_, i) => heads[i]![0] === handler && heads[i]![1] === status).map(keys.taskIdOfKey);
      const take = ids.slice(skip, skip + want - tasks.length);
      tasks.push(...(await this.getTasks(take)));
      if (skip + take.length < ids.length) return { tasks, next: { cursor, skip: skip + take.length } };
      if (after === "0") return { tasks, next: undefined };
      cursor = after;
      skip = 0;
      if (tasks.length >= want) break;
    }
    return { tasks, next: { cursor, skip } };
  }

  /** Read tasks; those that no longer exist are left out. */
  async getTasks(ids: string[]): Promise<Task[]> {
    const all = await this.connection.call(() => Promise.all(ids.map((id) => this.connection.redis.hgetall(keys.taskKey(id)))));
    return ids.flatMap((id, i) => (Object.keys(all[i]!).length > 0 ? [decodeTask(id, all[i]!)] : []));
  }
}
