import { checkGrant, checkTaskGrant, type Grant, taskNotFound } from "../core/auth.js";
import { DEFAULTS, type JsonValue, paramsDigest, type Task, type TaskOptions, TERMINAL_STATUSES } from "../core/domain.js";
import {
  FailedPreconditionError,
  HandlerNotFoundError,
  InvalidArgumentError,
  TaskNotFoundError,
  WaitTimeoutError,
} from "../core/errors.js";
import { checkHandlerName, checkOptions, checkParams, checkTaskId, DEFAULT_LIMITS, type Limits } from "../core/validate.js";
import { isRequestId, type Logger, silentLogger } from "../ops/log.js";
import { uniqueKey } from "../store/keys.js";
import { DEFAULT_REDIS_URL, parseRedisUrl, type RedisSettings } from "../store/redis-url.js";
import { type CreateResult, type FinishResult, type NewTask, type RunOutcome, Store } from "../store/store.js";
import { type Handler, type HandlerOptions, HandlerRegistry } from "../worker/handlers.js";
import { Worker, type WorkerOptions } from "../worker/worker.js";
import { Admin } from "./admin.js";
import { BurstLog, FULL_LOG_PERIOD_MS } from "./burst-log.js";
import { Scheduler, type SchedulerOptions } from "./scheduler.js";
import { Schedules } from "./schedules.js";
import { Sweeper, type SweeperOptions } from "./sweeper.js";
import { WATCH_OUTAGE_MS, watchTask } from "./watch.js";

/** What the layers above the engine read of the store's answers. */
export type { FinishResult, QueueStats } from "../store/store.js";

export interface BaiChuanOptions {
  /** Redis URL (the original's form, with socket_timeout etc.) or ioredis options (default: redis://127.0.0.1:6379/0). */
  redis?: string | RedisSettings;
  /** Limits on params, handler names and queue length (defaults: DEFAULT_LIMITS). */
  limits?: Partial<Limits>;
  /** How long a watch waits for Redis to come back before it ends with StoreUnavailableError (default: 10,000 ms). */
  watchOutageMs?: number;
  /**
   * A task whose worker was lost this many times (its lease lapsed and the sweep took it back) ends
   * FAILED with ERR_POISON_TASK instead of being recovered again (default: 3).
   */
  maxWorkerLosses?: number;
  /** How long an idempotency key is remembered, in seconds (default: 86,400 = 1 day). */
  idempotencyTtl?: number;
  logger?: Logger;
}

/** Default life of an idempotency key: 1 day. */
export const DEFAULT_IDEMPOTENCY_TTL = 86_400;

/** Extra facts about who creates a task. */
export interface CreateMeta {
  /** Creator's IP address (field `ip`). */
  ip?: string;
  /** Refuse handlers that no process has (the RPC and legacy URLs do; the library does not by default). */
  requireKnownHandler?: boolean;
  /** The caller's rights (from its token); checked once the handler name is valid. */
  grant?: Grant;
  /**
   * Id of the request that creates the task (`x-request-id`, 1 to 64 of [A-Za-z0-9._-]); stored
   * with it (field `request_id`) so the worker's log lines for the task carry it.
   */
  requestId?: string | undefined;
}

/** How a run ended, as the worker tells `onTaskEnd` (its third argument): the outcome and seconds spent. */
export interface TaskRun {
  kind: RunOutcome["kind"];
  cost: number;
}

/** Hears what a BaiChuan instance does, for metrics (metrics.ts); see `observe`. */
export interface BaiChuanObserver {
  /** Tasks of `handler` created by enqueue / enqueueMany of this instance (unique hits and idempotent replays not counted). */
  tasksCreated?(handler: string, count: number): void;
  /** A run of this instance's worker ended and its outcome was stored (the worker's onTaskEnd). */
  taskEnded?(task: Task, result: FinishResult, run?: TaskRun): void;
  /** An error event of the Redis command connection. */
  redisError?(err: Error): void;
}

/** One task for `enqueueMany`. */
export interface EnqueueItem {
  handler: string;
  params?: unknown;
  options?: TaskOptions;
}

/** How long the list of handlers advertised by live workers is trusted. */
const LIVE_HANDLERS_TTL_MS = 2000;
/** Shortest time between two reads of that list. */
const LIVE_HANDLERS_MIN_AGE_MS = 250;

export class BaiChuan {
  private readonly store: Store;
  /** Queues, workers and task listings for the people who run BaiChuan. */
  readonly admin: Admin;
  /** Recurring tasks: create, read, change and delete schedules (their tasks come from the scheduler). */
  readonly schedules: Schedules;
  readonly handlers = new HandlerRegistry();
  readonly limits: Limits;
  readonly watchOutageMs: number;
  readonly idempotencyTtl: number;
  readonly log: Logger;
  private worker: Worker | undefined;
  private sweeper: Sweeper | undefined;
  private scheduler: Scheduler | undefined;
  private live: { handlers: Set<string>; at: number; pending?: Promise<Set<string>> } = { handlers: new Set(), at: 0 };
  private readonly observers = new Set<BaiChuanObserver>();

  constructor(options: BaiChuanOptions = {}) {
    const redis = options.redis ?? DEFAULT_REDIS_URL;
    this.log = options.logger ?? silentLogger;
    const full = new BurstLog(this.log, FULL_LOG_PERIOD_MS);
    this.store = new Store(typeof redis === "string" ? parseRedisUrl(redis) : redis, {
      onError: (err) => {
        this.log.warn("redis connection error", { error: err.message });
        for (const observer of this.observers) observer.redisError?.(err);
      },
      onFull: (err) => full.hit(err),
      ...(options.maxWorkerLosses === undefined ? {} : { maxWorkerLosses: options.maxWorkerLosses }),
    });
    this.admin = new Admin(this.store);
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.schedules = new Schedules(this.store, this.limits);
    this.watchOutageMs = options.watchOutageMs ?? WATCH_OUTAGE_MS;
    this.idempotencyTtl = options.idempotencyTtl ?? DEFAULT_IDEMPOTENCY_TTL;
    if (!Number.isInteger(this.idempotencyTtl) || this.idempotencyTtl < 1) {
      throw new InvalidArgumentError(
        "idempotencyTtl",
        `must be a whole number of seconds, at least 1, got ${this.idempotencyTtl}`,
      );
    }
  }

  /** Create an instance and wait until Redis answers. */
  static async connect(options: BaiChuanOptions = {}): Promise<BaiChuan> {
    const bc = new BaiChuan(options);
    await bc.waitForRedis();
    return bc;
  }

  /** Connect to Redis, waiting until it answers (an instance made with `new` starts unconnected). */
  waitForRedis(): Promise<void> {
    return this.store.connect();
  }

  /** Redis answers now. */
  isReady(): boolean {
    return this.store.isReady();
  }

  /** Hear when Redis comes or goes. Returns the function that stops listening. */
  onStateChange(listener: () => void): () => void {
    return this.store.onStateChange(listener);
  }

  /** Tell `observer` what this instance does from now on (metrics). Returns the function that stops it. */
  observe(observer: BaiChuanObserver): () => void {
    this.observers.add(observer);
    return () => this.observers.delete(observer);
  }

  private notifyCreated(handler: string, count: number): void {
    if (count > 0) for (const observer of this.observers) observer.tasksCreated?.(handler, count);
  }

  /**
   * Register a handler this process can run (before `startWorker`); `options.limits` are its flow
   * limits' defaults, written where Redis holds none (a run-time change wins: see HandlerRegistry).
   */
  register(name: string, handler: Handler, options?: HandlerOptions): this {
    this.handlers.register(name, handler, options);
    return this;
  }

  /**
   * Queue a task for a handler. Returns its id; with `unique`, the id of a QUEUED or STARTED task
   * with the same handler and params when there is one (`deduplicated: true`); with an
   * `idempotencyKey` used before with the same handler and params, what that create answered
   * (`replayed: true`). Throws IdempotencyKeyReusedError for a key used with another handler or
   * other params.
   */
  async enqueue(handler: string, params: unknown = {}, options: TaskOptions = {}, meta: CreateMeta = {}): Promise<CreateResult> {
    const task = this.prepare({ handler, params, options }, meta);
    if (meta.requireKnownHandler && !(await this.isKnownHandler(task.handler))) throw new HandlerNotFoundError(task.handler);
    const created = await this.store.createTask(task);
    if (!created.deduplicated && !created.replayed) this.notifyCreated(task.handler, 1);
    return created;
  }

  /**
   * Queue many tasks, one script call per handler (the bulk form of `enqueue`). Each result is the
   * created task or the error of that item alone: one bad item does not fail the others.
   */
  async enqueueMany(items: readonly EnqueueItem[], meta: CreateMeta = {}): Promise<Array<CreateResult | Error>> {
    const results: Array<CreateResult | Error | undefined> = new Array(items.length);
    const byHandler = new Map<string, Array<{ index: number; task: NewTask }>>();
    items.forEach((item, index) => {
      try {
        const task = this.prepare(item, meta);
        const group = byHandler.get(task.handler) ?? [];
        group.push({ index, task });
        byHandler.set(task.handler, group);
      } catch (err) {
        results[index] = err as Error;
      }
    });
    await Promise.all(
      [...byHandler].map(async ([handler, group]) => {
        try {
          if (meta.requireKnownHandler && !(await this.isKnownHandler(handler))) throw new HandlerNotFoundError(handler);
          const created = await this.store.createTasks(
            handler,
            group.map((g) => g.task),
          );
          group.forEach((g, k) => {
            results[g.index] = created[k]!;
          });
          this.notifyCreated(handler, created.filter((r) => !(r instanceof Error) && !r.deduplicated && !r.replayed).length);
        } catch (err) {
          for (const g of group) results[g.index] = err as Error;
        }
      }),
    );
    return results as Array<CreateResult | Error>;
  }

  /** Check one item and turn it into what the store writes. Throws on bad input. */
  private prepare(item: EnqueueItem, meta: CreateMeta): NewTask {
    const name = checkHandlerName(item.handler, this.limits.maxHandlerLength);
    const { json } = checkParams(item.params ?? {}, this.limits);
    const opts = checkOptions(item.options);
    if (meta.grant) checkGrant(meta.grant, name);
    if (meta.requestId !== undefined && !isRequestId(meta.requestId)) {
      throw new InvalidArgumentError("request_id", "must be 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'");
    }
    // The digest is of the params as stored (toJSON applied, undefined members dropped).
    const digest = opts.unique || opts.idempotencyKey ? paramsDigest(JSON.parse(json) as JsonValue) : "";
    const task: NewTask = {
      handler: name,
      paramsJson: json,
      timeout: opts.timeout ?? DEFAULTS.timeout,
      resultTtl: opts.resultTtl ?? DEFAULTS.resultTtl,
      failureTtl: opts.failureTtl ?? DEFAULTS.failureTtl,
      ttl: opts.ttl,
      maxAttempts: opts.maxAttempts ?? DEFAULTS.maxAttempts,
      maxQueued: this.limits.maxQueued,
      ip: meta.ip ?? "",
      // Due times are Redis's clock's: a delay is counted there, a start time compared there.
      due:
        opts.delay !== undefined
          ? { inMs: opts.delay * 1000 }
          : opts.startAt !== undefined
            ? { atMs: opts.startAt as number }
            : undefined,
      priority: opts.priority ?? 0,
      uniqueKey: opts.unique ? uniqueKey(name, digest) : undefined,
      idempotency: opts.idempotencyKey ? { key: opts.idempotencyKey, digest, ttl: this.idempotencyTtl } : undefined,
      concurrencyKey: opts.concurrencyKey,
    };
    if (meta.requestId !== undefined) task.requestId = meta.requestId;
    return task;
  }

  /**
   * Read a task; throws TaskNotFoundError when it does not exist, or when `grant` does not cover its
   * handler (a limited token cannot tell the two apart: see checkTaskGrant).
   */
  async getTask(id: string, grant?: Grant): Promise<Task> {
    const taskId = checkTaskId(id);
    const task = await this.store.getTask(taskId);
    if (!task) throw taskNotFound(taskId, grant);
    checkTaskGrant(grant, task);
    return task;
  }

  /**
   * Cancel a task that has not ended: a queued task ends CANCELED at once; a running one's handler
   * sees its AbortSignal fire on whichever process runs it, and the task ends CANCELED when the run
   * stops. Idempotent for a canceled task; FailedPreconditionError for a finished or failed one.
   * Returns the task after the request (still "started" while its handler stops).
   */
  async cancel(id: string, grant?: Grant): Promise<Task> {
    const task = await this.getTask(id, grant);
    const result = await this.store.cancelTask(task);
    if (result === "not_found") throw taskNotFound(task.id, grant);
    if (result === "already_ended") {
      throw new FailedPreconditionError(`task ${task.id} already ended (${task.status}): there is nothing to cancel`);
    }
    return this.getTask(task.id, grant);
  }

  /**
   * Delete a task in any state from every key that names it; a running handler sees its
   * AbortSignal fire. Returns false when there was no such task, or none `grant` may see (a task of
   * a handler it does not cover is left alone, and answered like a missing one: see checkTaskGrant).
   */
  async delete(id: string, grant?: Grant): Promise<boolean> {
    const task = await this.store.getTask(checkTaskId(id));
    if (!task || (grant && !grant.allows(task.handler))) return false;
    return this.store.deleteTask(task);
  }

  /**
   * Queue a failed or canceled task again, at the end of its queue, for at least one more run
   * (its attempts are kept; max_attempts grows when needed). FailedPreconditionError for a task in
   * another state, or a unique task whose twin is queued or running.
   */
  async retry(id: string, grant?: Grant): Promise<Task> {
    const task = await this.getTask(id, grant);
    const result = await this.store.retryTask(task);
    if (result.kind === "not_found") throw taskNotFound(task.id, grant);
    if (result.kind === "wrong_status") {
      throw new FailedPreconditionError(`task ${task.id} is ${result.status}: only failed or canceled tasks can be retried`);
    }
    if (result.kind === "unique_taken") {
      throw new FailedPreconditionError(`task ${task.id} is unique and its twin ${result.by} is queued or running`);
    }
    return result.task;
  }

  /** True when the task exists (queued, running, or ended and not yet expired). */
  async exists(id: string): Promise<boolean> {
    return (await this.store.getTask(checkTaskId(id))) !== undefined;
  }

  /**
   * The task now, then once per change of state, until it ends or `signal` aborts. Throws
   * TaskNotFoundError when it does not exist or `grant` does not cover its handler (as getTask).
   */
  watch(id: string, signal?: AbortSignal, grant?: Grant): AsyncGenerator<Task, void, undefined> {
    const taskId = checkTaskId(id);
    const stream = watchTask(this.store, taskId, signal, this.watchOutageMs, this.worker?.runningTask(taskId));
    return grant ? watchWithGrant(stream, grant) : stream;
  }

  /** Wait until the task ends: finished, failed or canceled (push-based). Throws WaitTimeoutError after `timeoutMs` (default: 60 s). */
  async wait(id: string, { timeoutMs = 60_000 }: { timeoutMs?: number } = {}): Promise<Task> {
    const taskId = checkTaskId(id);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    try {
      const running = this.worker?.runningTask(taskId);
      const here = running && { ...running, endOnly: true };
      for await (const task of watchTask(this.store, taskId, controller.signal, this.watchOutageMs, here)) {
        if (TERMINAL_STATUSES.has(task.status)) return task;
      }
      throw new WaitTimeoutError(taskId, timeoutMs);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Known = registered in this process, or advertised by a live worker in Redis. */
  async isKnownHandler(name: string): Promise<boolean> {
    if (this.handlers.has(name)) return true;
    const age = Date.now() - this.live.at;
    if (age < LIVE_HANDLERS_TTL_MS && this.live.handlers.has(name)) return true;
    // A miss re-reads the list, so a worker that just started is found; at most one read at a time
    // and one per LIVE_HANDLERS_MIN_AGE_MS, so a flood of unknown names costs Redis little.
    if (age < LIVE_HANDLERS_MIN_AGE_MS) return false;
    this.live.pending ??= this.store.queries.liveHandlers().finally(() => delete this.live.pending);
    const handlers = await this.live.pending;
    this.live = { handlers, at: Date.now() };
    return handlers.has(name);
  }

  /** Tasks this process's worker runs now (0 without a worker). */
  get runningTasks(): number {
    return this.worker?.busy ?? 0;
  }

  /** Start running this process's handlers. */
  async startWorker(options: WorkerOptions = {}): Promise<Worker> {
    if (!this.worker) {
      const onTaskEnd = options.onTaskEnd;
      this.worker = new Worker(this.store, this.handlers, {
        logger: this.log,
        resultLimits: { maxBytes: this.limits.maxResultBytes, maxDepth: this.limits.maxParamsDepth },
        ...options,
        // Observers (metrics) hear every run's end, after the caller's own onTaskEnd.
        onTaskEnd: (...end: Parameters<NonNullable<WorkerOptions["onTaskEnd"]>>) => {
          onTaskEnd?.(...end);
          for (const observer of this.observers) observer.taskEnded?.(...end);
        },
      });
      await this.worker.start();
    }
    return this.worker;
  }

  /** Run the recovery sweep in this process (it takes turns with other processes under a lock). */
  startSweeper(options: SweeperOptions = {}): Sweeper {
    if (!this.sweeper) {
      this.sweeper = new Sweeper(this.store, { logger: this.log, ...options });
      this.sweeper.start();
    }
    return this.sweeper;
  }

  /**
   * Create the tasks of schedules in this process, as their ticks come (scheduler.ts). Every
   * process may run it: together they create one task per tick.
   */
  startScheduler(options: SchedulerOptions = {}): Scheduler {
    if (!this.scheduler) {
      this.scheduler = new Scheduler(
        this.store,
        {
          build: (def, params) => this.prepare({ handler: def.handler, params, options: def.options }, {}),
          created: (handler) => this.notifyCreated(handler, 1),
        },
        { logger: this.log, ...options },
      );
      this.scheduler.start();
    }
    return this.scheduler;
  }

  /** Stop the worker (see Worker.stop), the scheduler and the sweeper, and close the Redis connections. */
  async close(graceMs?: number): Promise<void> {
    await this.scheduler?.stop();
    this.scheduler = undefined;
    await this.worker?.stop(graceMs);
    this.worker = undefined;
    await this.sweeper?.stop();
    this.sweeper = undefined;
    await this.store.close();
  }
}

/** A watch as `grant` may see it: a task it does not cover ends the watch as a missing task would. */
async function* watchWithGrant(
  stream: AsyncGenerator<Task, void, undefined>,
  grant: Grant,
): AsyncGenerator<Task, void, undefined> {
  try {
    for await (const task of stream) {
      checkTaskGrant(grant, task);
      yield task;
    }
  } catch (err) {
    throw err instanceof TaskNotFoundError ? taskNotFound(err.taskId, grant) : err;
  }
}
