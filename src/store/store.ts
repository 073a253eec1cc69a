/**
 * BaiChuan's operations on tasks in Redis, each one script call or a batch of them: create (with
 * unique and idempotency keys), fetch, finish, progress, cancel, delete, retry, the recovery
 * sweep, and the subscriptions that follow a task or wake a worker. The connections live in
 * connection.ts, the listings and the worker registry in queries.ts, every key in keys.ts.
 */
import type { Cluster, Redis } from "ioredis";
import { DEFAULTS, decodeTask, failureResultJson, type Task } from "../core/domain.js";
import { Connection, type ConnectionOptions } from "./connection.js";
import { type CreateResult, Creator, type NewTask } from "./create.js";
import { Flow } from "./flow.js";

export type { CreateResult, NewTask } from "./create.js";
export type { QueueFlow } from "./flow.js";

import * as keys from "./keys.js";
import { Queries } from "./queries.js";

export {
  type QueueStats,
  STATUS_INDEXES,
  type TaskIndex,
  WORKER_TTL_SECONDS,
  type WorkerInfo,
  type WorkerStats,
  workerFields,
} from "./queries.js";

export { RUN_TIME_RESOLUTION, SERIES_MINUTES, type SeriesPoint } from "./run-times.js";

import type { RedisSettings } from "./redis-url.js";
import { ScheduleStore } from "./schedules.js";

export type { AdvanceResult, DueSchedules, SaveResult, ScheduleRecord, ScheduleState } from "./schedules.js";

import { CODES, HOLD, SCRIPTS, type ScriptName } from "./scripts.js";
import type { Subscriptions } from "./subscriptions.js";

const LOST_RESULT = failureResultJson("ERR_WORKER_LOST", "the worker running the task was lost (its lease was not renewed)");

const CANCELED_RESULT = failureResultJson("ERR_CANCELED", "the task was canceled (CancelTask)");
const EXPIRED_RESULT = failureResultJson("ERR_MSG_EXPIRED", "the task waited in its queue longer than its ttl and was dropped");

/** What cancelTask did: see cancel.lua. */
export type CancelResult = "not_found" | "canceled" | "signaled" | "already_canceled" | "already_ended";
const CANCEL_RESULTS = {
  [CODES.cancel.NOT_FOUND]: "not_found",
  [CODES.cancel.CANCELED]: "canceled",
  [CODES.cancel.SIGNALED]: "signaled",
  [CODES.cancel.ALREADY_CANCELED]: "already_canceled",
  [CODES.cancel.ALREADY_ENDED]: "already_ended",
} as Record<number, CancelResult>;

/** What retryTask did: see retry.lua. */
export type RetryResult =
  | { kind: "queued"; task: Task }
  | { kind: "not_found" }
  | { kind: "wrong_status"; status: string }
  | { kind: "unique_taken"; by: string };

/** Why a fetch left queued tasks of the handler in their queue (see lua/lib/limits.lua). */
export type HoldReason = "rate" | "max_running" | "paused";
const HOLD_REASONS = {
  [HOLD.RATE]: "rate",
  [HOLD.MAX_RUNNING]: "max_running",
  [HOLD.PAUSED]: "paused",
} as Record<number, HoldReason>;

/** What a fetch started, and whether the handler's limits held back tasks still queued. */
export interface FetchResult {
  tasks: Task[];
  /**
   * Undefined unless a limit or the pause kept queued tasks from starting. `retryInMs`: for a rate,
   * when the bucket has a whole token (Redis's clock, as a delay); otherwise undefined, and a
   * wake-up (`go` on the handler's wake channel) says when to look again.
   */
  hold?: { reason: HoldReason; retryInMs: number | undefined } | undefined;
}

/** How a run of a task ended, as `finishTask` records it. */
export interface RunOutcome {
  /** "requeue": the worker is shutting down; the task goes back to the front of its queue. */
  kind: "finished" | "failed" | "canceled" | "requeue";
  resultJson: string;
  cost: number;
  worker: string;
  /** For "failed": the delay before a retry (ms), or undefined when the failure must not be retried. */
  retryInMs?: number | undefined;
  /** For "failed": the error text. */
  error?: string;
  /**
   * Asks for the task's fields as this end left them: called with them once recorded, or with
   * undefined when the end was not recorded (the run was no longer the task's, Redis failed).
   */
  recorded?: ((fields: Record<string, string> | undefined) => void) | undefined;
}

export type FinishResult = "ended" | "retry" | "requeued" | "canceled" | "ignored";
const FINISH_RESULTS = {
  [CODES.finish.IGNORED]: "ignored",
  [CODES.finish.ENDED]: "ended",
  [CODES.finish.RETRY]: "retry",
  [CODES.finish.REQUEUED]: "requeued",
  [CODES.finish.CANCELED]: "canceled",
} as Record<number, FinishResult>;

/** See Store.keysOf. */
interface HandlerKeys {
  fetch: string[];
  finish: string[];
  taskPrefix: string;
  channelPrefix: string;
  wakeChannel: string;
  groupPrefix: string;
}

interface FinishBatch {
  handler: string;
  worker: string;
  items: Array<{ task: Task; outcome: RunOutcome; resolve: (r: FinishResult) => void; reject: (e: unknown) => void }>;
}

/** What one sweep of a handler did. */
export interface SweepResult {
  recovered: number;
  lost: number;
  promoted: number;
  expired: number;
  /** Milliseconds until the earliest scheduled task of this handler is due (0: overdue), or undefined. */
  nextDueInMs: number | undefined;
}

export interface StoreOptions extends ConnectionOptions {
  /** A task whose worker was lost this many times fails as a poison task (default: 3). */
  maxWorkerLosses?: number;
}

/** The stored result of a poison task. */
function poisonResult(maxLosses: number): string {
  return failureResultJson(
    "ERR_POISON_TASK",
    `the worker running the task was lost ${maxLosses} times: it is failed rather than recovered again (it may be what kills its workers)`,
  );
}

export class Store {
  readonly connection: Connection;
  /** Queues, workers and task listings (queries.ts). */
  readonly queries: Queries;
  /** The connection settings, for the lease keeper's own connection. */
  readonly options: RedisSettings;
  /** True when connected to a Redis Cluster (commands are routed by slot). */
  readonly isCluster: boolean;
  readonly subscriptions: Subscriptions;
  /** Creates (create.ts). */
  readonly creator: Creator;
  /** Handlers' limits and pauses (flow.ts). */
  readonly flow: Flow;
  /** Schedules (schedules.ts). */
  readonly schedules: ScheduleStore;
  /** A task whose worker was lost this many times fails as a poison task (sweep.lua). */
  private readonly maxWorkerLosses: number;

  constructor(options: RedisSettings, { maxWorkerLosses = DEFAULTS.maxWorkerLosses, ...connectionOptions }: StoreOptions = {}) {
    this.connection = new Connection(options, connectionOptions);
    this.flow = new Flow(this.connection);
    this.queries = new Queries(this.connection, this.flow);
    this.options = options;
    this.isCluster = this.connection.isCluster;
    this.subscriptions = this.connection.subscriptions;
    this.maxWorkerLosses = maxWorkerLosses;
    this.creator = new Creator(this.connection);
    this.schedules = new ScheduleStore(this.connection);
  }

  private get conn(): Redis | Cluster {
    return this.connection.redis;
  }

  private call<T>(op: () => Promise<T>): Promise<T> {
    return this.connection.call(op);
  }

  private evalScript<T>(name: ScriptName, scriptKeys: string[], args: string[]): Promise<T> {
    return this.connection.script<T>(name, scriptKeys, args);
  }

  /** Connect both connections; rejects when Redis does not answer. */
  connect(): Promise<void> {
    return this.connection.connect();
  }

  /** Close the connections. */
  close(): Promise<void> {
    return this.connection.close();
  }

  /** True while Redis is reachable (health.ts); no round trip. */
  isReady(): boolean {
    return this.connection.isReady();
  }

  /** Hear when a connection becomes ready, drops or ends. Returns the function that stops listening. */
  onStateChange(listener: () => void): () => void {
    return this.connection.onStateChange(listener);
  }

  /** Now by Redis's clock (TIME), epoch ms. */
  timeMs(): Promise<number> {
    return this.connection.timeMs();
  }

  /** Create and queue one task (Creator.createTask: creates made together travel together). */
  createTask(task: NewTask): Promise<CreateResult> {
    return this.creator.createTask(task);
  }

  /** Create and queue tasks of one handler in one script call (Creator.createTasks). */
  createTasks(handler: string, tasks: NewTask[]): Promise<Array<CreateResult | Error>> {
    return this.creator.createTasks(handler, tasks);
  }

  /** Read tasks; those that no longer exist are left out. */
  getTasks(ids: string[]): Promise<Task[]> {
    return this.queries.getTasks(ids);
  }

  /** Read a task; undefined when it does not exist. */
  async getTask(id: string): Promise<Task | undefined> {
    const fields = await this.call(() => this.conn.hgetall(keys.taskKey(id)));
    if (Object.keys(fields).length === 0) return undefined;
    return decodeTask(id, fields);
  }

  /** Take up to `count` queued tasks of a handler and mark them started by `worker` (see `fetch`). */
  async fetchTasks(handler: string, count: number, worker: string, leaseMs: number): Promise<Task[]> {
    return (await this.fetch(handler, count, worker, leaseMs)).tasks;
  }

  /**
   * Take up to `count` queued tasks of a handler and mark them started by `worker`, as many as the
   * handler's limits allow now; says when limits held the others back.
   */
  async fetch(handler: string, count: number, worker: string, leaseMs: number): Promise<FetchResult> {
    const k = this.keysOf(handler);
    const [reply, hold, waitMs] = await this.call(() =>
      this.evalScript<[string[], number, number]>("fetch", k.fetch, [
        String(count),
        worker,
        k.taskPrefix,
        k.channelPrefix,
        String(leaseMs),
        EXPIRED_RESULT,
        k.groupPrefix,
      ]),
    );
    const tasks: Task[] = [];
    for (let i = 0; i + 1 < reply.length; i += 2) {
      tasks.push(decodeTask(reply[i]!, JSON.parse(reply[i + 1]!) as Record<string, string>));
    }
    const reason = HOLD_REASONS[hold];
    return reason ? { tasks, hold: { reason, retryInMs: waitMs >= 0 ? waitMs : undefined } } : { tasks };
  }

  /**
   * Put back at the front of their queues the tasks of `handler` started under `worker` that it
   * does not run (not in `running`): a fetch whose answer was lost left them. Returns how many.
   */
  async reclaimTasks(handler: string, worker: string, running: string[]): Promise<number> {
    const tag = keys.handlerTag(handler);
    return this.call(() =>
      this.evalScript<number>(
        "reclaim",
        [keys.wipKey(handler), ...keys.queueKeys(handler), keys.limitsKey(handler), ...keys.groupKeys(handler)],
        [
          worker,
          keys.taskKeyPrefix(tag),
          keys.taskChannelPrefix(tag),
          keys.wakeChannel(handler),
          JSON.stringify(running),
          keys.groupQueuePrefix(handler),
        ],
      ),
    );
  }

  /**
   * Record how a run of a started task ended. "ignored": it was deleted or is no longer this
   * worker's. Ends of one handler recorded together (in one run of the
   * microtask queue, as a fetched batch ends) go to Redis in one script call.
   */
  finishTask(task: Task, outcome: RunOutcome): Promise<FinishResult> {
    const key = `${task.handler}\n${outcome.worker}`;
    let batch = this.finishes.get(key);
    if (!batch) {
      const created: FinishBatch = { handler: task.handler, worker: outcome.worker, items: [] };
      this.finishes.set(key, created);
      queueMicrotask(() => {
        this.finishes.delete(key);
        void this.flushFinishes(created);
      });
      batch = created;
    }
    const items = batch.items;
    return new Promise((resolve, reject) => items.push({ task, outcome, resolve, reject }));
  }

  private readonly finishes = new Map<string, FinishBatch>();

  /** The keys and prefixes a worker's scripts take for a handler, made once per handler. */
  private keysOf(handler: string): HandlerKeys {
    let k = this.handlerKeys.get(handler);
    if (!k) {
      const tag = keys.handlerTag(handler);
      const [queues, wip, stats, limits, groups] = [
        keys.queueKeys(handler),
        keys.wipKey(handler),
        keys.statsKey(handler),
        keys.limitsKey(handler),
        keys.groupKeys(handler),
      ];
      k = {
        fetch: [...queues, wip, keys.expiryKey(handler), stats, limits, keys.bucketKey(handler), ...groups],
        finish: [wip, keys.scheduledKey(handler), ...queues, stats, limits, ...groups],
        taskPrefix: keys.taskKeyPrefix(tag),
        channelPrefix: keys.taskChannelPrefix(tag),
        wakeChannel: keys.wakeChannel(handler),
        groupPrefix: keys.groupQueuePrefix(handler),
      };
      if (this.handlerKeys.size < 10_000) this.handlerKeys.set(handler, k);
    }
    return k;
  }

  private readonly handlerKeys = new Map<string, HandlerKeys>();

  private async flushFinishes({ handler, worker, items }: FinishBatch): Promise<void> {
    const k = this.keysOf(handler);
    for (let start = 0; start < items.length; start += 500) {
      const chunk = items.slice(start, start + 500);
      const args = [worker, k.taskPrefix, k.channelPrefix, k.wakeChannel, CANCELED_RESULT, k.groupPrefix];
      for (const { task, outcome } of chunk) {
        const retryIn = outcome.retryInMs === undefined ? "" : String(Math.max(0, Math.round(outcome.retryInMs)));
        args.push(
          task.id,
          outcome.kind,
          outcome.resultJson,
          outcome.cost.toFixed(6),
          String(task.attempts),
          outcome.error ?? "",
          retryIn,
          outcome.recorded ? "1" : "",
        );
      }
      try {
        const [codes, fields] = await this.call(() => this.evalScript<[number[], string[]]>("finish", k.finish, args));
        chunk.forEach((item, k) => {
          // A watcher in this process hears of the end now, not after a trip through pub/sub.
          item.outcome.recorded?.(fields[k] ? (JSON.parse(fields[k]) as Record<string, string>) : undefined);
          item.resolve(FINISH_RESULTS[codes[k] ?? CODES.finish.IGNORED] ?? "ignored");
        });
      } catch (err) {
        for (const item of chunk) {
          item.outcome.recorded?.(undefined);
          item.reject(err);
        }
      }
    }
  }

  /**
   * Recover lapsed leases, promote due retries and expire overdue queued tasks of one handler
   * (every deadline by Redis's clock). Leases are not recovered within `leaseMs` (plus the longest
   * reconnect delay) of the command connection coming back from an outage (or first connecting):
   * workers could not renew while Redis was away (a Redis restart lasts longer than a short lease),
   * so they get one lease period to renew first.
   */
  async sweep(handler: string, leaseMs: number, limit = 1000): Promise<SweepResult> {
    const tag = keys.handlerTag(handler);
    const recoverLeases = this.connection.mayRecoverLeases(leaseMs);
    const [recovered, lost, promoted, expired, nextDue] = await this.call(() =>
      this.evalScript<[number, number, number, number, number]>(
        "sweep",
        [
          keys.wipKey(handler),
          ...keys.queueKeys(handler),
          keys.scheduledKey(handler),
          keys.expiryKey(handler),
          keys.statsKey(handler),
          keys.limitsKey(handler),
          ...keys.groupKeys(handler),
        ],
        [
          keys.taskKeyPrefix(tag),
          keys.taskChannelPrefix(tag),
          keys.wakeChannel(handler),
          LOST_RESULT,
          EXPIRED_RESULT,
          String(limit),
          recoverLeases ? "1" : "0",
          CANCELED_RESULT,
          poisonResult(this.maxWorkerLosses),
          String(this.maxWorkerLosses),
          keys.groupQueuePrefix(handler),
        ],
      ),
    );
    return { recovered, lost, promoted, expired, nextDueInMs: nextDue >= 0 ? nextDue : undefined };
  }

  /** Cancel a task (cancel.lua): a queued one at once, a started one through its worker. */
  async cancelTask(task: Task): Promise<CancelResult> {
    const { id, handler } = task;
    const code = await this.call(() =>
      this.evalScript<number>(
        "cancel",
        [
          keys.taskKey(id),
          ...keys.queueKeys(handler),
          keys.scheduledKey(handler),
          keys.expiryKey(handler),
          keys.statsKey(handler),
          keys.limitsKey(handler),
          ...keys.groupKeys(handler),
        ],
        [id, CANCELED_RESULT, keys.taskChannel(id), keys.wakeChannel(handler), keys.groupQueuePrefix(handler)],
      ),
    );
    return CANCEL_RESULTS[code] ?? "not_found";
  }

  /** Delete a task from every key that names it (delete.lua). False when it did not exist. */
  async deleteTask(task: Task): Promise<boolean> {
    const { id, handler } = task;
    const code = await this.call(() =>
      this.evalScript<number>(
        "delete",
        [
          keys.taskKey(id),
          ...keys.queueKeys(handler),
          keys.wipKey(handler),
          keys.scheduledKey(handler),
          keys.expiryKey(handler),
          keys.limitsKey(handler),
          ...keys.groupKeys(handler),
        ],
        [id, keys.taskChannel(id), keys.wakeChannel(handler), keys.groupQueuePrefix(handler)],
      ),
    );
    return code === CODES.delete.DELETED;
  }

  /** Record a running task's progress (progress.lua); false when that run (`task` as fetched) is no longer current. */
  async reportProgress(task: Task, worker: string, percent: number, message: string): Promise<boolean> {
    const args = [worker, String(percent), message, keys.taskChannel(task.id), String(task.attempts)];
    const code = await this.call(() => this.evalScript<number>("progress", [keys.taskKey(task.id)], args));
    return code === CODES.progress.RECORDED;
  }

  /** Queue a failed or canceled task again (retry.lua). */
  async retryTask(task: Task): Promise<RetryResult> {
    const { id, handler } = task;
    const [code, detail] = await this.call(() =>
      this.evalScript<[number, (string | string[])?]>(
        "retry",
        [keys.taskKey(id), ...keys.queueKeys(handler), keys.limitsKey(handler), ...keys.groupKeys(handler)],
        [
          id,
          keys.taskChannel(id),
          keys.wakeChannel(handler),
          keys.taskKeyPrefix(keys.handlerTag(handler)),
          keys.groupQueuePrefix(handler),
        ],
      ),
    );
    // The task as the retry left it (queued): a worker may take it before the caller could read it.
    if (code === CODES.retry.QUEUED) return { kind: "queued", task: decodeTask(id, pairsToRecord(detail as string[])) };
    if (code === CODES.retry.WRONG_STATUS) return { kind: "wrong_status", status: String(detail ?? "") };
    if (code === CODES.retry.UNIQUE_TAKEN) return { kind: "unique_taken", by: String(detail ?? "") };
    return { kind: "not_found" };
  }

  /**
   * True when any of these handlers has running, scheduled or expiring tasks: one EXISTS over
   * their keys, so an idle sweep costs one command, not one per handler. On a Redis Cluster a
   * command's keys must share a slot: one EXISTS per handler (its three keys share its tag).
   */
  async anyToSweep(handlers: string[]): Promise<boolean> {
    if (handlers.length === 0) return false;
    const of = (h: string) => [keys.wipKey(h), keys.scheduledKey(h), keys.expiryKey(h)];
    if (!this.isCluster) return (await this.call(() => this.conn.exists(...handlers.flatMap(of)))) > 0;
    const counts = await this.call(() => Promise.all(handlers.map((h) => this.conn.exists(...of(h)))));
    return counts.some((n) => n > 0);
  }

  /** Take the sweep lock for `ms` unless another process holds it. */
  async takeSweepLock(owner: string, ms: number): Promise<boolean> {
    return (await this.call(() => this.conn.set(keys.SWEEP_LOCK_KEY, owner, "PX", ms, "NX"))) === "OK";
  }

  /** The text of a script (lib.lua prepended), for the lease keeper thread's own connection. */
  static scriptText(name: "renew" | "heartbeat"): string {
    return SCRIPTS[name].lua;
  }

  /** Listen to one task's changes; resolves once subscribed. */
  subscribeTask(id: string, listener: (fields: Record<string, string>) => void): Promise<() => void> {
    return this.call(() =>
      this.subscriptions.subscribe(keys.taskChannel(id), (message) => {
        const pairs = parseSnapshot(message);
        if (pairs) listener(pairs);
      }),
    );
  }

  /** Listen to a handler's wake-ups ("the queue got work"). */
  subscribeWake(handler: string, listener: (message: string) => void): Promise<() => void> {
    return this.call(() => this.subscriptions.subscribe(keys.wakeChannel(handler), listener));
  }
}

function pairsToRecord(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < pairs.length; i += 2) out[pairs[i]!] = pairs[i + 1]!;
  return out;
}

function parseSnapshot(message: string): Record<string, string> | undefined {
  try {
    const pairs: unknown = JSON.parse(message);
    if (!Array.isArray(pairs) || !pairs.every((p) => typeof p === "string")) return undefined;
    return pairsToRecord(pairs as string[]);
  } catch {
    return undefined;
  }
}
