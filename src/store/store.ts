/**
 * The one module that talks to Redis. It owns the connections and the Lua scripts, and offers the
 * rest of BaiChuan named operations on tasks, queues and workers. Keys come from keys.ts only.
 */
import { hostname } from "node:os";
import { Cluster, Redis, type RedisOptions, ReplyError } from "ioredis";
import { DEFAULTS, decodeTask, failureResultJson, microsFromIso, type Task } from "../core/domain.js";
import { IdempotencyKeyReusedError, QueueFullError, RedisFullError, StoreUnavailableError } from "../core/errors.js";
import { ClusterPubSub, SLOTS_REFRESH_MS } from "./cluster-pubsub.js";
import * as keys from "./keys.js";
import type { RedisSettings } from "./redis-url.js";
import { CODES, SCRIPTS, type ScriptName } from "./scripts.js";
import { Subscriptions } from "./subscriptions.js";

/** How long a worker hash lives without a heartbeat. */
export const WORKER_TTL_SECONDS = 30;

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
  | { kind: "queued" }
  | { kind: "not_found" }
  | { kind: "wrong_status"; status: string }
  | { kind: "unique_taken"; by: string };

/** What `createTask` stores. Times in seconds. */
export interface NewTask {
  handler: string;
  paramsJson: string;
  timeout: number;
  resultTtl: number;
  failureTtl: number;
  ttl: number | undefined;
  maxAttempts: number;
  /** Most tasks the handler's queue may hold; 0 for no limit. */
  maxQueued: number;
  ip: string;
  /**
   * When the task becomes due: `{ inMs }` from now by Redis's clock (a delay), or `{ atMs }`, an
   * instant the caller named (epoch ms; one already past queues it now); undefined to queue it now.
   */
  due?: { inMs: number } | { atMs: number } | undefined;
  /** 1, 0 or -1. */
  priority?: number;
  /** Id of the request that created the task (field `request_id`), for the worker's log lines. */
  requestId?: string | undefined;
  /** Key of the unique lock when the create is unique. */
  uniqueKey: string | undefined;
  /**
   * The caller's idempotency key, the digest of the params (paramsDigest) and how long the key is
   * remembered (seconds); undefined for a create without a key.
   */
  idempotency?: { key: string; digest: string; ttl: number } | undefined;
}

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

/** A handler's lists and sets of task ids: its queues by priority, running set, scheduled set. */
export type TaskIndex = "queue:high" | "queue" | "queue:low" | "running" | "scheduled";

/** One handler's counts, for the admin listing. */
export interface QueueStats {
  handler: string;
  queued: number;
  started: number;
  scheduled: number;
  /** Undefined when nothing is queued. */
  oldestQueuedAgeMs: number | undefined;
  finished: number;
  failed: number;
  retried: number;
  canceled: number;
}

/** A created task's id; for a unique create, possibly the id of the live task it duplicates. */
export interface CreateResult {
  id: string;
  deduplicated: boolean;
  /** True when the idempotency key was used before with the same handler and params: `id` (and `deduplicated`) are that create's answer. */
  replayed: boolean;
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
}

export type FinishResult = "ended" | "retry" | "requeued" | "canceled" | "ignored";
const FINISH_RESULTS = {
  [CODES.finish.IGNORED]: "ignored",
  [CODES.finish.ENDED]: "ended",
  [CODES.finish.RETRY]: "retry",
  [CODES.finish.REQUEUED]: "requeued",
  [CODES.finish.CANCELED]: "canceled",
} as Record<number, FinishResult>;

type CreateBatch = Array<{ task: NewTask; resolve: (r: CreateResult) => void; reject: (e: unknown) => void }>;

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

/** Longest wait between two reconnect attempts of a connection (ioredis's default is the same). */
const RECONNECT_MAX_MS = 2000;

/** How often a process re-adds the queues it uses to `mq:queues` (see registerQueue). */
const QUEUE_REASSERT_MS = 10_000;

export interface StoreOptions {
  /** Hears connection errors (the calls that fail report them too). */
  onError?: (err: Error) => void;
  /** Hears each write Redis refused for lack of memory (the call fails with RedisFullError). */
  onFull?: (err: RedisFullError) => void;
  /** A task whose worker was lost this many times fails as a poison task (default: 3). */
  maxWorkerLosses?: number;
}

/** A task's due time as create.lua takes it: `+<ms>` from now, `<epoch ms>`, or undefined for now. */
function dueArg(due: NewTask["due"]): string | undefined {
  if (due === undefined) return undefined;
  return "inMs" in due ? `+${Math.max(1, Math.round(due.inMs))}` : String(Math.round(due.atMs));
}

/** One task as create.lua takes it: a JSON object of strings, without the fields at their defaults. */
function createArg(id: string, handler: string, t: NewTask): string {
  return JSON.stringify({
    id,
    data: t.paramsJson,
    timeout: String(t.timeout),
    result_ttl: String(t.resultTtl),
    ip: t.ip,
    failure_ttl: t.failureTtl === DEFAULTS.failureTtl ? undefined : String(t.failureTtl),
    ttl: t.ttl === undefined ? undefined : String(t.ttl),
    unique: t.uniqueKey,
    max_attempts: t.maxAttempts === DEFAULTS.maxAttempts ? undefined : String(t.maxAttempts),
    due: dueArg(t.due),
    priority: t.priority ? String(t.priority) : undefined,
    request_id: t.requestId,
    record: t.idempotency ? keys.idempotencyRecordKey(handler, t.idempotency.key) : undefined,
    digest: t.idempotency?.digest,
  });
}

/** The stored result of a poison task. */
function poisonResult(maxLosses: number): string {
  return failureResultJson(
    "ERR_POISON_TASK",
    `the worker running the task was lost ${maxLosses} times: it is failed rather than recovered again (it may be what kills its workers)`,
  );
}

export class Store {
  private readonly conn: Redis | Cluster;
  /** When the command connection last became ready (epoch ms); 0 before it first did. */
  private readySince = 0;
  /** The command connection became ready again after it was first (an outage, or a failover). */
  private reconnected = false;
  /** The connection settings, for the lease keeper's own connection. */
  readonly options: RedisSettings;
  /** True when connected to a Redis Cluster (commands are routed by slot). */
  readonly isCluster: boolean;
  /** The subscriber connection (one Redis); on a cluster, ClusterPubSub keeps one per master. */
  private readonly subConn: Redis | undefined;
  private readonly clusterPubSub: ClusterPubSub | undefined;
  readonly subscriptions: Subscriptions;
  /** Handlers whose queue this process added to `mq:queues`, and when (epoch ms). */
  private readonly registeredQueues = new Map<string, number>();
  /** A task whose worker was lost this many times fails as a poison task (sweep.lua). */
  private readonly maxWorkerLosses: number;
  private readonly onFull: (err: RedisFullError) => void;

  constructor(
    options: RedisSettings,
    { onError = () => {}, onFull = () => {}, maxWorkerLosses = DEFAULTS.maxWorkerLosses }: StoreOptions = {},
  ) {
    const { clusterNodes, ...redisOptions } = options;
    const common: RedisOptions = {
      ...redisOptions,
      lazyConnect: true,
      enableOfflineQueue: false,
      // Reconnect with a growing delay, capped: never a tight loop while Redis is down.
      retryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 5), RECONNECT_MAX_MS),
    };
    const subscriber: RedisOptions = {
      ...common,
      commandTimeout: undefined,
      maxRetriesPerRequest: null,
      enableOfflineQueue: true,
    };
    this.options = options;
    this.isCluster = clusterNodes !== undefined;
    // No auto-pipelining: it delays every command to the next macrotask, which costs more latency
    // than it saves; commands that travel together are batched by this module (creates, ends).
    if (clusterNodes) {
      // Commands go to the master of their key's slot (the slot map re-read every few seconds and
      // on MOVED); sharded pub/sub keeps one subscriber connection per master (cluster-pubsub.ts).
      const cluster = new Cluster(clusterNodes, {
        lazyConnect: true,
        enableOfflineQueue: false,
        enableAutoPipelining: false,
        scaleReads: "master",
        maxRedirections: 16,
        slotsRefreshInterval: SLOTS_REFRESH_MS,
        clusterRetryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 5), RECONNECT_MAX_MS),
        redisOptions: { ...common, db: 0, lazyConnect: false },
      });
      this.conn = cluster;
      this.subConn = undefined;
      this.clusterPubSub = new ClusterPubSub(cluster, subscriber);
      // A new master (failover) is like a reconnect for the leases of its shard: workers could not
      // renew them while it was away, so the sweep gives them one lease period (see sweep()).
      let masters = "";
      cluster.on("refresh", () => {
        const now = [...new Set(cluster.slots.map((owners) => owners?.[0]))].sort().join(",");
        if (masters !== "" && now !== masters) {
          this.readySince = Date.now();
          this.reconnected = true;
        }
        masters = now;
      });
    } else {
      this.conn = new Redis({ ...common, enableAutoPipelining: false });
      this.subConn = new Redis(subscriber);
      this.clusterPubSub = undefined;
    }
    // Scripts are loaded on each connection (SCRIPT LOAD; on a cluster, on every master) and run by
    // SHA. (ioredis's defineCommand would send the whole script with every pipelined call.)
    this.maxWorkerLosses = maxWorkerLosses;
    this.onFull = onFull;
    this.conn.on("ready", () => {
      if (this.readySince !== 0) this.reconnected = true;
      this.readySince = Date.now();
      // Redis may have come back empty (a restart without persistence): say again what we own.
      this.registeredQueues.clear();
      const targets = this.conn instanceof Cluster ? this.conn.nodes("master") : [this.conn];
      for (const target of targets) {
        for (const { lua } of Object.values(SCRIPTS)) target.script("LOAD", lua).catch(() => {});
      }
    });
    this.subscriptions = new Subscriptions(this.clusterPubSub ?? this.subConn!);
    this.conn.on("error", onError);
    this.subConn?.on("error", () => {}); // the same errors as conn's
  }

  /** Connect both connections; rejects when Redis does not answer. */
  async connect(): Promise<void> {
    await Promise.all([connectOnce(this.conn), ...(this.subConn ? [connectOnce(this.subConn)] : [])]);
  }

  /** Close both connections: politely (QUIT) when connected, at once otherwise. */
  async close(): Promise<void> {
    const quit = async (c: Redis | Cluster) => {
      if (c.status === "ready")
        await Promise.race([c.quit(), new Promise((resolve) => setTimeout(resolve, 1000))]).catch(() => {});
      c.disconnect();
    };
    this.clusterPubSub?.close();
    await Promise.all([quit(this.conn), ...(this.subConn ? [quit(this.subConn)] : [])]);
  }

  /**
   * Create and queue tasks of one handler, in order, in one script call. Each result is the new id,
   * the id of a live duplicate for a unique create, the earlier answer for an idempotency key used
   * before with the same params, or the error of that item alone (QueueFullError,
   * IdempotencyKeyReusedError).
   *
   * With idempotency keys, two steps: each key is first claimed for this handler in its own slot
   * (claimIdempotencyKeys), then create.lua checks and writes the key's record in the handler's
   * slot, atomically with the task. A create that fails after the claim leaves only the claim,
   * which the next try with the same key and handler passes; one whose create ran but whose answer
   * was lost left the record, which answers the next try.
   */
  async createTasks(handler: string, tasks: NewTask[]): Promise<Array<CreateResult | Error>> {
    await this.registerQueue(handler);
    const results: Array<CreateResult | Error | undefined> = new Array(tasks.length);
    let pending = tasks.map((_, i) => i);
    const keyed = pending.filter((i) => tasks[i]!.idempotency !== undefined);
    if (keyed.length > 0) {
      const owners = await this.claimIdempotencyKeys(
        handler,
        keyed.map((i) => tasks[i]!.idempotency!),
      );
      keyed.forEach((index, k) => {
        if (owners[k] !== handler) results[index] = new IdempotencyKeyReusedError(tasks[index]!.idempotency!.key);
      });
      pending = pending.filter((i) => results[i] === undefined);
    }
    const recordTtl = tasks.find((t) => t.idempotency)?.idempotency?.ttl ?? 0;
    // A random id that is taken (about 1 in 2^64) is drawn again.
    for (let round = 0; round < 5 && pending.length > 0; round++) {
      const ids = keys.newTaskIds(handler, pending.length);
      const args = [
        handler,
        keys.wakeChannel(handler),
        keys.taskKeyPrefix(keys.handlerTag(handler)),
        String(tasks[0]!.maxQueued),
        String(recordTtl),
      ];
      args.push(...pending.map((index, k) => createArg(ids[k]!, handler, tasks[index]!)));
      const batch = pending.map((i) => tasks[i]!);
      const reply = await this.call(() =>
        this.evalScript<Array<string | number>>(
          "create",
          [...keys.queueKeys(handler), keys.expiryKey(handler), keys.scheduledKey(handler)],
          args,
        ),
      ).catch((err: unknown) => Promise.reject(mayHaveCreated(err, batch)));
      const retry: number[] = [];
      pending.forEach((index, k) => {
        const id = reply[2 * k] as string;
        const code = Number(reply[2 * k + 1]);
        const { ID_TAKEN, QUEUE_FULL, KEY_REUSED, UNIQUE_HIT, REPLAYED_NEW, REPLAYED_UNIQUE_HIT } = CODES.create;
        if (code === ID_TAKEN) retry.push(index);
        else if (code === QUEUE_FULL) results[index] = new QueueFullError(handler, tasks[index]!.maxQueued);
        else if (code === KEY_REUSED) results[index] = new IdempotencyKeyReusedError(tasks[index]!.idempotency!.key);
        else {
          const deduplicated = code === UNIQUE_HIT || code === REPLAYED_UNIQUE_HIT;
          results[index] = { id, deduplicated, replayed: code === REPLAYED_NEW || code === REPLAYED_UNIQUE_HIT };
        }
      });
      pending = retry;
    }
    if (pending.length > 0) throw new Error("could not draw free task ids");
    return results as Array<CreateResult | Error>;
  }

  /**
   * Step 1 of creates with idempotency keys: claim each key for `handler`, in the key's own slot
   * (`mq:idemkey:{KTAG}<key>`, for `ttl` seconds). Returns, per key, the handler it belongs to:
   * `handler` when it was free or is already this handler's, another name when it was used with
   * another handler. A read first; a write (SET NX GET, which also settles a race) only for a key
   * not yet claimed, so a retry whose key is claimed writes nothing here.
   */
  private async claimIdempotencyKeys(handler: string, items: Array<{ key: string; ttl: number }>): Promise<string[]> {
    const claimKeys = items.map((item) => keys.idempotencyClaimKey(item.key));
    const owners = await this.each(claimKeys.map((key) => ["get", key]));
    const free = owners.flatMap((owner, i) => (owner === null ? [i] : []));
    if (free.length > 0) {
      const before = await this.each(free.map((i) => ["set", claimKeys[i]!, handler, "EX", String(items[i]!.ttl), "NX", "GET"]));
      free.forEach((i, k) => {
        owners[i] = before[k] ?? handler;
      });
    }
    return owners as string[];
  }

  /**
   * Run single-key commands whose keys may lie on different slots, and return their replies: on
   * one Redis in one pipeline (one write, one round trip), on a cluster each routed to its slot.
   */
  private async each(commands: string[][]): Promise<Array<string | null>> {
    if (this.conn instanceof Cluster) {
      const cluster = this.conn;
      return this.call(() =>
        Promise.all(commands.map(([name, ...args]) => cluster.call(name!, ...args) as Promise<string | null>)),
      );
    }
    const replies = (await this.call(() => this.conn.pipeline(commands).exec())) ?? [];
    return replies.map(([err, reply]) => {
      if (err) throw this.failure(err);
      return reply as string | null;
    });
  }

  /**
   * Create and queue one task (see createTasks). Creates of one handler made together (in one run
   * of the microtask queue: many callers at once) travel in one script call.
   */
  createTask(task: NewTask): Promise<CreateResult> {
    let batch = this.creates.get(task.handler);
    if (!batch) {
      const created: CreateBatch = [];
      this.creates.set(task.handler, created);
      queueMicrotask(() => {
        this.creates.delete(task.handler);
        void this.flushCreates(task.handler, created);
      });
      batch = created;
    }
    const items = batch;
    return new Promise((resolve, reject) => items.push({ task, resolve, reject }));
  }

  private readonly creates = new Map<string, CreateBatch>();

  /**
   * Send a batch in two or more chunks at once (in order, on one connection): Redis runs the first
   * while this process encodes the next, and the callers of the first can make their next creates
   * while Redis runs the second, so this process and Redis work at the same time.
   */
  private async flushCreates(handler: string, items: CreateBatch): Promise<void> {
    const size = Math.min(500, Math.max(16, Math.ceil(items.length / 2)));
    const chunks: CreateBatch[] = [];
    for (let start = 0; start < items.length; start += size) chunks.push(items.slice(start, start + size));
    await Promise.all(chunks.map((chunk) => this.flushCreateChunk(handler, chunk)));
  }

  private async flushCreateChunk(handler: string, chunk: CreateBatch): Promise<void> {
    try {
      const results = await this.createTasks(
        handler,
        chunk.map((item) => item.task),
      );
      chunk.forEach((item, k) => {
        const result = results[k]!;
        if (result instanceof Error) item.reject(result);
        else item.resolve(result);
      });
    } catch (err) {
      for (const item of chunk) item.reject(err);
    }
  }

  /** Run one of the scripts by its SHA, loading it first if Redis does not know it (NOSCRIPT). */
  async evalScript<T>(name: ScriptName, scriptKeys: string[], args: string[]): Promise<T> {
    const { lua, sha } = SCRIPTS[name];
    try {
      return (await this.conn.evalsha(sha, scriptKeys.length, ...scriptKeys, ...args)) as T;
    } catch (err) {
      if (!(err instanceof ReplyError && (err as Error).message.startsWith("NOSCRIPT"))) throw err;
      // The node does not know it (restarted, or a new master after a failover): EVAL sends the
      // text, and caches it there for the next EVALSHA.
      return (await this.conn.eval(lua, scriptKeys.length, ...scriptKeys, ...args)) as T;
    }
  }

  /** Now by Redis's clock (TIME), epoch ms: the clock every stored time and deadline uses. */
  async timeMs(): Promise<number> {
    const [seconds, micros] = await this.call(() => this.conn.time());
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  }

  /** Round trip to Redis. */
  async ping(): Promise<void> {
    await this.call(() => this.conn.ping());
  }

  /** True while both connections are ready, so Redis is reachable (health.ts); no round trip. */
  isReady(): boolean {
    return this.conn.status === "ready" && (this.subConn?.status ?? "ready") === "ready";
  }

  /**
   * Call `listener` after a connection became ready, dropped or ended (ioredis emits these a tick
   * after the change: read `isReady()` then). Returns the function that stops listening.
   */
  onStateChange(listener: () => void): () => void {
    const events = ["ready", "close", "end"];
    const conns = this.subConn ? [this.conn, this.subConn] : [this.conn];
    for (const conn of conns) for (const event of events) conn.on(event, listener);
    return () => {
      for (const conn of conns) for (const event of events) conn.off(event, listener);
    };
  }

  /** Read a task; undefined when it does not exist. */
  async getTask(id: string): Promise<Task | undefined> {
    const fields = await this.call(() => this.conn.hgetall(keys.taskKey(id)));
    if (Object.keys(fields).length === 0) return undefined;
    return decodeTask(id, fields);
  }

  /** Take up to `count` queued tasks of a handler and mark them started by `worker`. */
  async fetchTasks(handler: string, count: number, worker: string, leaseMs: number): Promise<Task[]> {
    const tag = keys.handlerTag(handler);
    const reply = await this.call(() =>
      this.evalScript<Array<string | string[]>>(
        "fetch",
        [...keys.queueKeys(handler), keys.wipKey(handler), keys.expiryKey(handler), keys.statsKey(handler)],
        [String(count), worker, keys.taskKeyPrefix(tag), keys.taskChannelPrefix(tag), String(leaseMs), EXPIRED_RESULT],
      ),
    );
    const tasks: Task[] = [];
    for (let i = 0; i + 1 < reply.length; i += 2) {
      tasks.push(decodeTask(reply[i] as string, pairsToRecord(reply[i + 1] as string[])));
    }
    return tasks;
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
        [keys.wipKey(handler), ...keys.queueKeys(handler)],
        [worker, keys.taskKeyPrefix(tag), keys.taskChannelPrefix(tag), keys.wakeChannel(handler), JSON.stringify(running)],
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

  private async flushFinishes({ handler, worker, items }: FinishBatch): Promise<void> {
    const tag = keys.handlerTag(handler);
    for (let start = 0; start < items.length; start += 500) {
      const chunk = items.slice(start, start + 500);
      const args = [worker, keys.taskKeyPrefix(tag), keys.taskChannelPrefix(tag), keys.wakeChannel(handler), CANCELED_RESULT];
      for (const { task, outcome } of chunk) {
        args.push(
          JSON.stringify({
            id: task.id,
            outcome: outcome.kind,
            result: outcome.resultJson,
            cost: outcome.cost.toFixed(6),
            attempt: String(task.attempts),
            error: outcome.error,
            retry_in: outcome.retryInMs === undefined ? undefined : String(Math.max(0, Math.round(outcome.retryInMs))),
          }),
        );
      }
      try {
        const codes = await this.call(() =>
          this.evalScript<number[]>(
            "finish",
            [keys.wipKey(handler), keys.scheduledKey(handler), ...keys.queueKeys(handler), keys.statsKey(handler)],
            args,
          ),
        );
        chunk.forEach((item, k) => {
          item.resolve(FINISH_RESULTS[codes[k] ?? CODES.finish.IGNORED] ?? "ignored");
        });
      } catch (err) {
        for (const item of chunk) item.reject(err);
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
    // After a reconnect, every connection (the lease keepers' too) retries at most RECONNECT_MAX_MS
    // apart: a worker may reconnect that much later than this process did.
    const grace = leaseMs + (this.reconnected ? RECONNECT_MAX_MS : 0);
    const recoverLeases = Date.now() - this.readySince >= grace;
    const [recovered, lost, promoted, expired, nextDue] = await this.call(() =>
      this.evalScript<[number, number, number, number, number]>(
        "sweep",
        [
          keys.wipKey(handler),
          ...keys.queueKeys(handler),
          keys.scheduledKey(handler),
          keys.expiryKey(handler),
          keys.statsKey(handler),
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
        ],
        [id, CANCELED_RESULT, keys.taskChannel(id), keys.wakeChannel(handler)],
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
        [keys.taskKey(id), ...keys.queueKeys(handler), keys.wipKey(handler), keys.scheduledKey(handler), keys.expiryKey(handler)],
        [id, keys.taskChannel(id), keys.wakeChannel(handler)],
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
      this.evalScript<[number, string?]>(
        "retry",
        [keys.taskKey(id), ...keys.queueKeys(handler)],
        [id, keys.taskChannel(id), keys.wakeChannel(handler), keys.taskKeyPrefix(keys.handlerTag(handler))],
      ),
    );
    if (code === CODES.retry.QUEUED) return { kind: "queued" };
    if (code === CODES.retry.WRONG_STATUS) return { kind: "wrong_status", status: detail ?? "" };
    if (code === CODES.retry.UNIQUE_TAKEN) return { kind: "unique_taken", by: detail ?? "" };
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

  /** Handlers that have a queue (members of `mq:queues`). */
  async queuedHandlers(): Promise<string[]> {
    const queueKeys = await this.call(() => this.conn.smembers(keys.QUEUES_KEY));
    return queueKeys.map(keys.handlerOfQueueKey).filter((h): h is string => h !== undefined);
  }

  /**
   * Add a handler's queue to `mq:queues`: at most once per QUEUE_REASSERT_MS per handler, so a
   * Redis that lost its data (FLUSHALL, a restart without persistence, a failover to an empty
   * replica) hears of the queue again within that time, and the sweep finds it.
   */
  async registerQueue(handler: string): Promise<void> {
    const at = this.registeredQueues.get(handler);
    if (at !== undefined && Date.now() - at < QUEUE_REASSERT_MS) return;
    await this.call(() => this.conn.sadd(keys.QUEUES_KEY, keys.queueKey(handler)));
    this.registeredQueues.set(handler, Date.now());
  }

  /**
   * Write (or refresh) a worker's hash (last_heartbeat by Redis's clock), add it to `mq:workers`
   * and its handlers' queues to `mq:queues` (separate commands: different slots on a cluster).
   * The lease keeper thread does the same every heartbeat (worker/lease-keeper.ts).
   */
  async heartbeat(info: WorkerInfo, stats: WorkerStats): Promise<void> {
    const fields = Object.entries(workerFields(info, stats)).flat();
    await this.call(() =>
      Promise.all([
        this.evalScript("heartbeat", [keys.workerKey(info.name)], [String(WORKER_TTL_SECONDS), ...fields]),
        this.conn.sadd(keys.WORKERS_KEY, info.name),
        ...(info.handlers.length > 0 ? [this.conn.sadd(keys.QUEUES_KEY, ...info.handlers.map(keys.queueKey))] : []),
      ]),
    );
  }

  /** The text of a script (lib.lua prepended), for the lease keeper thread's own connection. */
  static scriptText(name: "renew" | "heartbeat"): string {
    return SCRIPTS[name].lua;
  }

  /** Remove a worker's hash (clean shutdown). */
  async removeWorker(name: string): Promise<void> {
    await this.call(() => Promise.all([this.conn.del(keys.workerKey(name)), this.conn.srem(keys.WORKERS_KEY, name)]));
  }

  /** Handlers advertised by live workers; prunes workers whose hash expired. */
  async liveHandlers(): Promise<Set<string>> {
    const names = await this.call(() => this.conn.smembers(keys.WORKERS_KEY));
    const handlers = new Set<string>();
    if (names.length === 0) return handlers;
    const queues = await this.call(() => Promise.all(names.map((n) => this.conn.hget(keys.workerKey(n), "queues"))));
    const dead: string[] = [];
    queues.forEach((q, i) => {
      if (q === null) dead.push(names[i]!);
      else for (const h of q.split(",")) if (h) handlers.add(h);
    });
    if (dead.length > 0) await this.call(() => this.conn.srem(keys.WORKERS_KEY, ...dead));
    return handlers;
  }

  /**
   * Counts of each handler's queue for the admin listing: queued, running, waiting retries, the age
   * of the oldest queued task (by Redis's clock, as the stored times), and the counters of ended
   * runs. Several commands per handler, sent at once (not one atomic snapshot).
   */
  async queueStats(handlers: string[]): Promise<QueueStats[]> {
    if (handlers.length === 0) return [];
    const nowMs = await this.timeMs();
    return this.call(() =>
      Promise.all(
        handlers.map(async (handler) => {
          const lists = keys.queueKeys(handler);
          const [lengths, started, scheduled, heads, counters] = await Promise.all([
            Promise.all(lists.map((l) => this.conn.llen(l))),
            this.conn.zcard(keys.wipKey(handler)),
            this.conn.zcard(keys.scheduledKey(handler)),
            Promise.all(lists.map((l) => this.conn.lindex(l, 0))),
            this.conn.hgetall(keys.statsKey(handler)),
          ]);
          const queued = lengths.reduce((a, b) => a + b, 0);
          // The oldest wait: the earliest enqueued of the three lists' heads.
          const times = await Promise.all(
            heads.map(async (id) => (id ? await this.conn.hmget(keys.taskKey(id), "enqueued_at", "created_at") : [])),
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
            finished: counter("finished"),
            failed: counter("failed"),
            retried: counter("retried"),
            canceled: counter("canceled"),
          };
        }),
      ),
    );
  }

  /** The live workers' hashes, with their names; prunes workers whose hash expired. */
  async workers(): Promise<Array<{ name: string; fields: Record<string, string> }>> {
    const names = (await this.call(() => this.conn.smembers(keys.WORKERS_KEY))).sort();
    const all = await this.call(() => Promise.all(names.map((n) => this.conn.hgetall(keys.workerKey(n)))));
    const dead = names.filter((_, i) => Object.keys(all[i]!).length === 0);
    if (dead.length > 0) await this.call(() => this.conn.srem(keys.WORKERS_KEY, ...dead));
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
    if (list !== undefined) return this.call(() => this.conn.lrange(list, offset, end));
    const key = index === "running" ? keys.wipKey(handler) : keys.scheduledKey(handler);
    return this.call(() => this.conn.zrange(key, offset, end));
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
    const node = this.nodeOf(keys.queueKey(handler));
    const tasks: Task[] = [];
    let { cursor, skip } = position;
    for (let step = 0; step < maxSteps; step++) {
      const [after, found] = await this.call(() => node.scan(cursor, "MATCH", pattern, "COUNT", 1000));
      const heads = await this.call(() => Promise.all(found.map((k) => this.conn.hmget(k, "origin", "status"))));
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

  /** The connection to the node that holds `key`: the master of its slot on a cluster. */
  private nodeOf(key: string): Redis {
    if (!(this.conn instanceof Cluster)) return this.conn;
    const owner = this.conn.slots[keys.keySlot(key)]?.[0];
    const node = this.conn.nodes("master").find((n) => `${n.options.host}:${n.options.port}` === owner);
    if (!node) throw new StoreUnavailableError(undefined, { detail: "no master known for a slot" });
    return node;
  }

  /** Read tasks; those that no longer exist are left out. */
  async getTasks(ids: string[]): Promise<Task[]> {
    const all = await this.call(() => Promise.all(ids.map((id) => this.conn.hgetall(keys.taskKey(id)))));
    return ids.flatMap((id, i) => (Object.keys(all[i]!).length > 0 ? [decodeTask(id, all[i]!)] : []));
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

  /**
   * Run a Redis operation, turning connection failures into StoreUnavailableError, and giving up
   * after the socket timeout (also for operations made of several commands).
   * Deadlines are checked by one coarse timer for all calls, not one timer per call.
   */
  private call<T>(op: () => Promise<T>): Promise<T> {
    const limit = this.options.commandTimeout;
    const unavailable = (err: unknown) => this.failure(err);
    if (limit === undefined) return op().catch((err: unknown) => Promise.reject(unavailable(err)));
    return new Promise<T>((resolve, reject) => {
      const entry: Deadline = {
        at: Date.now() + limit,
        // The command was sent: it may run (a paused or slow Redis), its answer comes too late.
        fail: () =>
          reject(
            new StoreUnavailableError(new Error(`Redis did not answer within ${limit} ms`), {
              detail: `no answer within ${limit} ms`,
              mayHaveApplied: true,
            }),
          ),
      };
      this.deadlines.add(entry);
      this.watchDeadlines(limit);
      op().then(
        (value) => {
          this.deadlines.delete(entry);
          resolve(value);
        },
        (err: unknown) => {
          this.deadlines.delete(entry);
          reject(unavailable(err));
        },
      );
    });
  }

  /**
   * What a failed call throws: RedisFullError for an `OOM` reply, StoreUnavailableError (in
   * BaiChuan's words, the client library's error as its cause) when Redis is away or not ready,
   * the error itself otherwise.
   */
  private failure(err: unknown): unknown {
    if (err instanceof ReplyError && (err as Error).message.startsWith("OOM")) {
      const full = new RedisFullError(err);
      this.onFull(full);
      return full;
    }
    if (!(err instanceof Error) || err instanceof StoreUnavailableError) return err;
    if (err instanceof ReplyError) {
      const state = REDIS_STATES.get(err.message.split(" ")[0]!);
      return state ? new StoreUnavailableError(err, { detail: state }) : err;
    }
    // ioredis refuses at once, without sending, while not connected (no offline queue).
    if (/isn't (writeable|ready)/.test(err.message)) return new StoreUnavailableError(err, { detail: "not connected" });
    if (/timed out/i.test(err.message)) {
      const limit = this.options.commandTimeout;
      const detail = limit === undefined ? "no answer in time" : `no answer within ${limit} ms`;
      return new StoreUnavailableError(err, { detail, mayHaveApplied: true });
    }
    return new StoreUnavailableError(err, { detail: "connection lost", mayHaveApplied: true });
  }

  private readonly deadlines = new Set<Deadline>();
  private deadlineTimer: NodeJS.Timeout | undefined;

  /** Check the deadlines of calls in flight every tenth of the limit, while there are any. */
  private watchDeadlines(limit: number): void {
    if (this.deadlineTimer) return;
    this.deadlineTimer = setInterval(
      () => {
        const now = Date.now();
        for (const entry of this.deadlines) {
          if (entry.at > now) continue;
          this.deadlines.delete(entry);
          entry.fail();
        }
        if (this.deadlines.size === 0) {
          clearInterval(this.deadlineTimer);
          this.deadlineTimer = undefined;
        }
      },
      Math.max(10, Math.floor(limit / 10)),
    );
    this.deadlineTimer.unref();
  }
}

interface Deadline {
  at: number;
  fail: () => void;
}

/** Replies of a Redis that cannot serve now ("try later"), in words for callers. */
const REDIS_STATES = new Map([
  ["LOADING", "loading its data"],
  ["BUSY", "busy running a script"],
  ["MASTERDOWN", "its master is down"],
  ["TRYAGAIN", "the cluster is moving keys"],
  ["CLUSTERDOWN", "the cluster is down"],
  ["READONLY", "a read-only replica answered"],
]);

/**
 * A create's failure, said plainly when its script may have run (it was sent and its answer was
 * lost or late): the caller learns the task may exist, and how to retry safely.
 */
function mayHaveCreated(err: unknown, tasks: NewTask[]): unknown {
  if (!(err instanceof StoreUnavailableError) || !err.mayHaveApplied) return err;
  const what = tasks.length === 1 ? "the task may have been created" : "the tasks may have been created";
  const advice = tasks.every((t) => t.idempotency)
    ? `${what}: retry with the same idempotency key to be safe`
    : `${what}: a retry without an idempotency key may create it twice`;
  return new StoreUnavailableError(err.cause, { detail: err.detail, advice, mayHaveApplied: true });
}

/** Wait until a connection is ready; ioredis keeps retrying in the background until then. */
async function connectOnce(conn: Redis | Cluster): Promise<void> {
  if (conn.status === "ready") return;
  const ready = new Promise<void>((resolve, reject) => {
    const onReady = () => {
      conn.off("end", onEnd);
      resolve();
    };
    const onEnd = () => {
      conn.off("ready", onReady);
      reject(new StoreUnavailableError(undefined, { detail: "connection closed" }));
    };
    conn.once("ready", onReady);
    conn.once("end", onEnd);
  });
  if (conn.status === "wait") conn.connect().catch(() => {}); // failures reach "error"; retries go on
  await ready;
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
