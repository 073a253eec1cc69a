/**
 * The worker: takes tasks from the queues of the handlers this process has and runs them, up to
 * `concurrency` at once.
 *
 * Picking up work is push-based. Each enqueue publishes on its handler's wake channel; the worker
 * listens to the channels of its handlers, marks a woken handler ready and fetches from it (several
 * tasks per round trip) until its queue is empty. Idle, it sends nothing to Redis but a heartbeat.
 * A wake-up that lands while a fetch is in flight bumps a counter, so an empty answer cannot hide it.
 *
 * A handler's flow limits (a rate, a running limit, a pause: lua/lib/limits.lua) are applied by the
 * fetch itself, in Redis, for every process at once. When they hold queued tasks back the lane is
 * held: no fetch until its timer rings (when the rate's bucket has a token) or a `go` comes on the
 * wake channel (a running task ended under a running limit, the limits changed, a resume). New work
 * does not end a hold; a slow timer (HELD_RECHECK_MS) covers a lost `go`. Nothing polls.
 */
import { hostname } from "node:os";
import { type FailureCode, failureResultJson, isoNow, type Task } from "../core/domain.js";
import { StoreUnavailableError } from "../core/errors.js";
import { checkResult, DEFAULT_LIMITS, MAX_PARAMS_DEPTH } from "../core/validate.js";
import { type Logger, silentLogger } from "../ops/log.js";
import type { Claimer } from "../store/create.js";
import {
  type FetchResult,
  type FinishResult,
  type RunOutcome,
  type Store,
  type WorkerInfo,
  workerFields,
} from "../store/store.js";
import type { HandlerRegistry } from "./handlers.js";
import { LeaseKeeper } from "./leases.js";
import { runAsHandler } from "./process-guard.js";
import {
  CancelAbort,
  describeFailure,
  isResultError,
  isThenable,
  RunContext,
  RunControl,
  type RunEnd,
  type RunHost,
  ShutdownAbort,
  TimeoutAbort,
} from "./run.js";

export interface WorkerOptions {
  /** Tasks run at once (default: 10). */
  concurrency?: number;
  /** Port the process serves on, for the worker name `host:port:pid` (default: 0). */
  port?: number;
  /**
   * A started task is recovered by the sweep when its lease is not renewed within this time
   * (default: 10,000 ms). Leases are renewed every quarter of it from a thread of their own.
   */
  leaseMs?: number;
  /** How often the worker hash is written (default: 10,000 ms; it expires after 30 s without). */
  heartbeatMs?: number;
  /** First retry delay; each further one doubles, with jitter (default: 1,000 ms). */
  retryBaseMs?: number;
  /** Longest retry delay (default: 300,000 ms). */
  retryMaxMs?: number;
  /** Keep stack traces and file paths in stored handler errors (default: false). */
  debug?: boolean;
  /**
   * Largest and deepest result a handler may return, as JSON (default: 1 MiB and 32 levels, as
   * params). A larger one fails the task with ERR_SERVER_EXCEPTION, without retry.
   */
  resultLimits?: { maxBytes: number; maxDepth: number };
  /** Called after a run's outcome is stored (for metrics). */
  onTaskEnd?: (task: Task, outcome: FinishResult, run: { kind: RunOutcome["kind"]; cost: number }) => void;
  logger?: Logger;
}

/** Most tasks fetched in one round trip. */
const MAX_BATCH = 50;

/** Pause before fetching again after Redis failed. */
const RETRY_DELAY_MS = 1000;

/** Longest a held lane waits before it looks again, in case a `go` was lost. */
const HELD_RECHECK_MS = 5000;

interface Lane {
  handler: string;
  /** The queue may hold work. */
  ready: boolean;
  /** Fetches in flight (at most two: one runs in Redis while the other's tasks run here). */
  fetching: number;
  /** Bumped by every wake-up. */
  wakes: number;
  /**
   * The handler's limits hold its queued tasks back: no fetch until this timer rings or a `go`
   * comes (see the file's comment). Undefined when not held.
   */
  held: NodeJS.Timeout | undefined;
  /** Bumped by every `go`: a hold answered by a fetch that a `go` overlapped is not kept. */
  gos: number;
  /** The last fetch failed (logged once per run of failures, not once per retry). */
  failing: boolean;
  /**
   * A fetch failed after it may have reached Redis: it may have started tasks whose answer never
   * came. No fetch starts until they are taken back (reclaimTasks), so none can be mistaken for one.
   */
  orphans: boolean;
}

/** A task this worker runs now. */
interface ActiveRun {
  task: Task;
  control: RunControl;
  done: Promise<void>;
  /** Started by a create of this process (Claimer), not by a fetch. */
  claimed: boolean;
  /** The end of the run was recorded, leaving `fields` (undefined: not as the task's end). */
  recorded: boolean;
  fields?: Record<string, string> | undefined;
  /** Made when a watch here asks for the run's end (runningTask); `settle` resolves it. */
  end?: Promise<Record<string, string> | undefined>;
  settle?: (fields: Record<string, string> | undefined) => void;
}

/** Names of this process's workers that have not stopped. */
const namesInUse = new Set<string>();

/** Extra time past a task's timeout during which its lease is still renewed. */
const LEASE_GRACE_MS = 5000;

export class Worker implements Claimer, RunHost {
  readonly name: string;
  private readonly concurrency: number;
  private readonly heartbeatMs: number;
  readonly leaseMs: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly debug: boolean;
  private readonly resultLimits: { maxBytes: number; maxDepth: number };
  private readonly onTaskEnd: WorkerOptions["onTaskEnd"];
  private leases: LeaseKeeper | undefined;
  /** Per handler: one timer that promotes its retries when the earliest is due. */
  private readonly alarms = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly log: Logger;
  private readonly lanes: Lane[] = [];
  private nextLane = 0;
  private running = 0;
  private reserved = 0;
  private stopped = true;
  private readonly unsubscribes: Array<() => void> = [];
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly fetches = new Set<Promise<void>>();
  private readonly active = new Map<string, ActiveRun>();
  private readonly stats = { successful: 0, failed: 0, workingTime: 0 };
  private readonly info: WorkerInfo;

  constructor(
    private readonly store: Store,
    private readonly registry: HandlerRegistry,
    options: WorkerOptions = {},
  ) {
    this.concurrency = options.concurrency ?? 10;
    this.heartbeatMs = options.heartbeatMs ?? 10_000;
    this.leaseMs = options.leaseMs ?? 10_000;
    this.retryBaseMs = options.retryBaseMs ?? 1000;
    this.retryMaxMs = options.retryMaxMs ?? 300_000;
    this.debug = options.debug ?? false;
    this.resultLimits = options.resultLimits ?? { maxBytes: DEFAULT_LIMITS.maxResultBytes, maxDepth: MAX_PARAMS_DEPTH };
    this.onTaskEnd = options.onTaskEnd;
    this.log = options.logger ?? silentLogger;
    // `host:port:pid` as in the original; a second live worker of that name in this process gets a suffix.
    const base = `${hostname()}:${options.port ?? 0}:${process.pid}`;
    let name = base;
    for (let n = 2; namesInUse.has(name); n++) name = `${base}.${n}`;
    namesInUse.add(name);
    this.name = name;
    this.info = { name: this.name, handlers: [], pid: process.pid, birth: isoNow() };
  }

  /** RunHost: a task's logger, whose lines carry the id of the request that created it, when there was one. */
  taskLog(task: Task): Logger {
    const request = task.requestId ? { request_id: task.requestId } : {};
    return this.log.child({ task_id: task.id, handler: task.handler, ...request });
  }

  /** RunHost: a run's progress. */
  reportProgress(task: Task, percent: number, message: string): Promise<boolean> {
    return this.store.reportProgress(task, this.name, percent, message);
  }

  /** Tasks running now. */
  get busy(): number {
    return this.running;
  }

  /**
   * The task as this worker started it, while it runs it, and the end of its run: the task's fields
   * as recorded, or undefined when the run did not end it here (see RunOutcome.recorded).
   */
  runningTask(id: string): { task: Task; end: Promise<Record<string, string> | undefined> } | undefined {
    const run = this.active.get(id);
    if (!run) return undefined;
    run.end ??= run.recorded ? Promise.resolve(run.fields) : new Promise((resolve) => (run.settle = resolve));
    return { task: run.task, end: run.end };
  }

  /**
   * Claims (Claimer, create.lua): hold idle slots for new tasks of `handler` created in this
   * process, when its lane is idle (no fetch in flight, its queue seen empty, not held).
   */
  reserve(handler: string, count: number): number {
    if (this.stopped) return 0;
    const lane = this.lanes.find((l) => l.handler === handler);
    if (!lane || lane.ready || lane.fetching > 0 || lane.held || lane.orphans) return 0;
    const n = Math.min(count, this.concurrency - this.running - this.reserved);
    if (n <= 0) return 0;
    this.reserved += n;
    return n;
  }

  /**
   * The create answered: run what it claimed and free the rest. A worker that began to stop since
   * starts nothing new: what it claimed goes back to the front of its queue, as at shutdown (its
   * lease covers a requeue that fails).
   */
  claimed(handler: string, tasks: Task[], reserved: number, lost: boolean): void {
    this.reserved -= reserved;
    for (const task of tasks) {
      if (!this.stopped) this.run(task, true);
      else void this.store.finishTask(task, { kind: "requeue", resultJson: "", cost: 0, worker: this.name }).catch(() => {});
    }
    if (lost) {
      const lane = this.lanes.find((l) => l.handler === handler);
      if (lane) lane.orphans = true; // taken back before the lane fetches again (reclaimTasks)
      this.retryLater();
    }
    this.pump();
  }

  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    const handlers = this.registry.names();
    this.info.handlers = handlers;
    for (const handler of handlers) {
      const lane: Lane = {
        handler,
        ready: true,
        fetching: 0,
        wakes: 0,
        held: undefined,
        gos: 0,
        failing: false,
        orphans: false,
      };
      this.lanes.push(lane);
      // The wake channel also carries `cancel:<id>` (CancelTask, DeleteTask: the worker running
      // that task aborts its handler), `due-in:<ms>` (a delayed task due sooner than any other of
      // the handler: promote it then) and `go` (a held queue may start tasks again).
      this.unsubscribes.push(
        await this.store.subscribeWake(handler, (message) => {
          if (message.startsWith("cancel:")) this.cancelRun(message.slice(7));
          else if (message.startsWith("due-in:")) {
            const inMs = Number(message.slice(7));
            if (Number.isFinite(inMs)) this.promoteAt(handler, Date.now() + inMs);
          } else if (message === "go") this.release(lane);
          else this.wake(lane);
        }),
      );
    }
    await this.writeDefaultLimits();
    // After a reconnect, wake-ups may have been lost: look at every queue again (and write the
    // limits given in code again, for a Redis that lost its data).
    this.unsubscribes.push(
      this.store.subscriptions.onResync(() => {
        for (const lane of this.lanes) this.release(lane);
        void this.writeDefaultLimits();
      }),
    );
    // The worker hash, and the handlers' queues in mq:queues (the sweep's list); the lease keeper
    // writes both again every heartbeat, so a Redis that lost its data hears of them again.
    // Not fatal: the lease keeper writes it again at its next heartbeat.
    await this.store.queries.heartbeat(this.info, this.workerStats()).catch((err: unknown) => {
      this.log.warn("could not write the worker's first heartbeat; the next one will", { error: String(err) });
    });
    this.leases = new LeaseKeeper(
      this.store.options,
      this.name,
      handlers,
      {
        leaseMs: this.leaseMs,
        renewMs: Math.max(10, Math.floor(this.leaseMs / 4)),
        heartbeatMs: this.heartbeatMs,
      },
      // Room for the running tasks and those whose end is being recorded (the table grows if needed).
      this.concurrency * 2 + 16,
    );
    this.leases.info(workerFields(this.info, this.workerStats()));
    // The main thread refreshes the counters the lease keeper writes with each heartbeat.
    this.heartbeatTimer = setInterval(() => this.leases?.info(workerFields(this.info, this.workerStats())), this.heartbeatMs);
    this.heartbeatTimer.unref();
    // Delayed tasks and retries created before this worker started: set the promotion timers.
    for (const lane of this.lanes) this.promoteAt(lane.handler, Date.now());
    // Work starts once the lease keeper thread is connected: a thread slow to start (a busy
    // machine) would otherwise let the first leases lapse, and the sweep would take live tasks back.
    await this.leases.ready;
    this.store.creator.claimer ??= this;
    this.pump();
    this.log.info("worker started", { worker: this.name, handlers, concurrency: this.concurrency });
  }

  /**
   * Stop taking work and wait for running tasks, at most `graceMs`; tasks still running then are
   * aborted (their handlers' signals fire) and put back at the front of their queues.
   */
  async stop(graceMs = 25_000): Promise<void> {
    if (this.stopped) {
      namesInUse.delete(this.name);
      return;
    }
    this.stopped = true;
    if (this.store.creator.claimer === this) this.store.creator.claimer = undefined;
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.retryTimer);
    for (const alarm of this.alarms.values()) clearTimeout(alarm.timer);
    this.alarms.clear();
    for (const lane of this.lanes) clearTimeout(lane.held);
    for (const unsubscribe of this.unsubscribes.splice(0)) unsubscribe();
    // Tasks a fetch in flight brings back are run like the others.
    await Promise.allSettled(this.fetches);
    const all = () => Promise.allSettled([...this.active.values()].map((a) => a.done));
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), graceMs)));
    if ((await Promise.race([all(), grace])) === "late") {
      for (const { control } of this.active.values()) control.abort(new ShutdownAbort("the worker is shutting down"));
      // Recording the requeue needs Redis (record() gives up after a few tries when it is away: the
      // leases then lapse and the sweep requeues); a slow but live Redis gets time to answer.
      await Promise.race([all(), new Promise((resolve) => setTimeout(resolve, 10_000))]);
    }
    clearTimeout(timer);
    // Tasks a lost fetch answer started: taken back now if Redis answers, else the sweep will.
    await this.reclaimOrphans();
    await this.leases?.stop();
    this.leases = undefined;
    await this.store.queries.removeWorker(this.name).catch(() => {});
    namesInUse.delete(this.name);
    this.lanes.length = 0;
    this.log.info("worker stopped", { worker: this.name });
  }

  private cancelRun(taskId: string): void {
    this.active.get(taskId)?.control.abort(new CancelAbort("the task was canceled"));
  }

  /** The queue got work. A held lane stays held: its limits, not new work, decide when it starts more. */
  private wake(lane: Lane): void {
    lane.wakes++;
    lane.ready = true;
    this.pump();
  }

  /** A `go`: whatever held the lane may have changed; look again now. */
  private release(lane: Lane): void {
    lane.gos++;
    clearTimeout(lane.held);
    lane.held = undefined;
    this.wake(lane);
  }

  /**
   * Fetch no more from the lane until `retryInMs` (the rate's bucket has a token then) or a `go`;
   * at most HELD_RECHECK_MS, in case a `go` was lost.
   */
  private hold(lane: Lane, retryInMs: number | undefined): void {
    if (this.stopped) return;
    clearTimeout(lane.held);
    lane.held = setTimeout(
      () => {
        lane.held = undefined;
        this.wake(lane);
      },
      Math.min(retryInMs ?? HELD_RECHECK_MS, HELD_RECHECK_MS),
    );
  }

  /**
   * Write the limits the handlers were registered with where Redis has none (a run-time change
   * wins). Not fatal: written again after every reconnect.
   */
  private async writeDefaultLimits(): Promise<void> {
    for (const lane of this.lanes) {
      const limits = this.registry.limitsOf(lane.handler);
      if (!limits) continue;
      await this.store.flow.setDefaultLimits(lane.handler, limits).catch((err: unknown) => {
        this.log.warn("could not write the handler's limits; they are written again after a reconnect", {
          handler: lane.handler,
          error: String(err),
        });
      });
    }
  }

  /**
   * Start fetches while there are free slots and ready queues, each for as many tasks as there are
   * free slots, up to half the concurrency: with two fetches in flight per queue, Redis prepares
   * the next batch while this process runs the current one (the second waits for a whole batch).
   */
  private pump(): void {
    if (this.stopped) return;
    const batch = Math.min(MAX_BATCH, Math.ceil(this.concurrency / 2));
    for (let tried = 0; tried < this.lanes.length; tried++) {
      const lane = this.lanes[this.nextLane]!;
      this.nextLane = (this.nextLane + 1) % this.lanes.length;
      while (lane.ready && !lane.held && !lane.orphans && lane.fetching < 2) {
        const free = this.concurrency - this.running - this.reserved;
        if (free <= 0) return;
        // A second fetch waits for a whole batch of free slots: started as each slot frees, it
        // would bring one task per round trip.
        if (lane.fetching > 0 && free < batch) break;
        const fetch = this.fetch(lane, Math.min(free, batch)).finally(() => this.fetches.delete(fetch));
        this.fetches.add(fetch);
      }
    }
  }

  private async fetch(lane: Lane, count: number): Promise<void> {
    lane.fetching++;
    this.reserved += count;
    const { wakes, gos } = lane;
    let fetched: FetchResult = { tasks: [] };
    let failed = false;
    try {
      fetched = await this.store.fetch(lane.handler, count, this.name, this.leaseMs);
      if (lane.failing) this.log.info("fetching tasks works again", { handler: lane.handler });
      lane.failing = false;
    } catch (err) {
      failed = true;
      if (!lane.failing)
        this.log.warn("fetching tasks failed; retrying every second", { handler: lane.handler, error: String(err) });
      lane.failing = true;
      if (err instanceof StoreUnavailableError && err.mayHaveApplied) lane.orphans = true;
    } finally {
      this.reserved -= count;
      lane.fetching--;
    }
    const { tasks, hold } = fetched;
    if (hold && lane.gos === gos) this.hold(lane, hold.retryInMs);
    else if (tasks.length < count && lane.wakes === wakes && !failed) lane.ready = false;
    for (const task of tasks) this.run(task);
    if (failed) return this.retryLater();
    this.pump();
  }

  /** Fetch again in a second, once the tasks failed fetches may have started are taken back. */
  private retryLater(): void {
    if (this.stopped) return; // stop() takes back what it can itself
    this.retryTimer ??= setTimeout(async () => {
      const reclaimed = await this.reclaimOrphans();
      this.retryTimer = undefined;
      if (reclaimed) this.pump();
      else this.retryLater();
    }, RETRY_DELAY_MS);
  }

  /**
   * Put back in their queues the tasks that failed fetches of this worker may have started (see
   * Lane.orphans), for lanes with no fetch in flight. False if some could not be taken back yet.
   */
  private async reclaimOrphans(): Promise<boolean> {
    let done = true;
    for (const lane of this.lanes) {
      if (!lane.orphans) continue;
      if (lane.fetching > 0) {
        done = false;
        continue;
      }
      try {
        const taken = await this.store.reclaimTasks(lane.handler, this.name, [...this.active.keys()]);
        lane.orphans = false;
        if (taken > 0) this.log.warn("took back tasks a lost fetch answer had started", { handler: lane.handler, tasks: taken });
      } catch {
        done = false; // Redis is still away: the next try
      }
    }
    return done;
  }

  /**
   * Run a task in a slot. The slot is freed as soon as the handler is done, while its outcome is
   * being recorded, so the next fetch travels in the same round trip as the recording.
   */
  private run(task: Task, claimed = false): void {
    this.running++;
    let freed = false;
    const free = () => {
      if (freed) return;
      freed = true;
      this.running--;
      this.pump();
    };
    const run: ActiveRun = { task, control: new RunControl(), done: Promise.resolve(), claimed, recorded: false };
    this.active.set(task.id, run);
    run.done = this.execute(run, free).finally(() => {
      this.active.delete(task.id);
      free();
    });
  }

  private async execute(run: ActiveRun, free: () => void): Promise<void> {
    const { task, control } = run;
    const ctx = new RunContext(task, control, this);
    const log = () => ctx.log;
    const handler = this.registry.get(task.handler);
    const started = performance.now();
    this.leases?.start(task.id, task.handler, Date.now() + task.timeout * 1000 + LEASE_GRACE_MS);
    let timer: NodeJS.Timeout | undefined;
    let outcome: RunEnd;
    try {
      if (!handler) throw new Error(`handler ${task.handler} is not registered in this process`);
      // In the handler's scope: what it leaves behind is logged with its task id (process-guard.ts).
      const returned = runAsHandler({ taskId: task.id, handler: task.handler }, () => handler(task.params, ctx));
      // A handler that returns at once (not a promise) needs no timer and no race with an abort: a
      // timer could not have interrupted it anyway.
      let data = returned;
      if (isThenable(returned)) {
        timer = setTimeout(
          () => control.abort(new TimeoutAbort(`the task ran longer than its timeout of ${task.timeout} s`)),
          task.timeout * 1000,
        );
        data = await control.race(Promise.resolve(returned));
      }
      outcome = { kind: "finished", resultJson: `{"stat":"OK","data":${checkResult(data, this.resultLimits)}}` };
    } catch (err) {
      outcome = this.failedRun(err, control.reason, task.attempts, log);
    } finally {
      clearTimeout(timer);
    }
    const cost = (performance.now() - started) / 1000;
    if (outcome.kind === "finished") this.stats.successful++;
    else if (outcome.kind === "failed") this.stats.failed++;
    this.stats.workingTime += cost;
    free();
    // The fields the end leaves are asked for when a caller here may wait for it (a task this
    // process created and claimed, or one a watch here asked about): runningTask's `end`.
    const recorded =
      run.claimed || run.end
        ? (fields: Record<string, string> | undefined) => {
            run.recorded = true;
            run.fields = fields;
            run.settle?.(fields);
          }
        : undefined;
    const result = await this.record(task, { ...outcome, cost, worker: this.name, recorded }, log);
    if (!run.recorded) run.settle?.(undefined);
    this.leases?.end(task.id);
    if (result === "retry" && outcome.retryInMs !== undefined) this.promoteAt(task.handler, Date.now() + outcome.retryInMs);
    try {
      this.onTaskEnd?.(task, result, { kind: outcome.kind, cost });
    } catch (err) {
      log().error("onTaskEnd threw", { error: err }); // a caller's hook must not take the worker down
    }
  }

  /**
   * The outcome of a run that threw (or whose signal aborted). Never throws, whatever the handler
   * threw: a value that cannot even be read (a Proxy whose traps throw) is described generically.
   */
  private failedRun(err: unknown, aborted: Error | undefined, attempts: number, log: () => Logger): RunEnd {
    if (aborted instanceof ShutdownAbort) return { kind: "requeue", resultJson: "" };
    if (aborted instanceof CancelAbort) return { kind: "canceled", resultJson: "" }; // finish.lua stores the canceled result
    let code: FailureCode = "ERR_SERVER_EXCEPTION";
    let message = "the handler threw a value that cannot be read";
    let final = false;
    try {
      [code, message] = describeFailure(err, aborted, this.debug);
      // Bad params, and a result that cannot be stored, never get better: no retry.
      final = code === "ERR_BAD_PARAMS" || isResultError(err);
    } catch {
      // keep the generic description
    }
    if (code === "ERR_SERVER_EXCEPTION") {
      try {
        log().warn("handler failed", { error: err });
      } catch {
        log().warn("handler failed", { error: message });
      }
    }
    const retryInMs = final ? undefined : this.retryDelay(attempts);
    return { kind: "failed", resultJson: failureResultJson(code, message), retryInMs, error: message };
  }

  /** Delay before retry number `attempt` (1 = the first retry): exponential, capped, with jitter. */
  private retryDelay(attempt: number): number {
    const exponential = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.max(0, attempt - 1));
    return Math.round(exponential / 2 + Math.random() * (exponential / 2));
  }

  /**
   * Promote the handler's due retries at `at` (epoch ms by this process's clock: due times come
   * from Redis as delays, so this timer only measures a delay): one timer per handler, for the
   * earliest retry; the sweep re-arms it for the next one. The periodic recovery sweep covers a
   * process that died before its alarm rang.
   */
  private promoteAt(handler: string, at: number): void {
    const current = this.alarms.get(handler);
    if (this.stopped || (current && current.at <= at)) return;
    if (current) clearTimeout(current.timer);
    // A timer cannot wait longer than 2^31-1 ms (about 24.8 days; Node fires a longer one at
    // once): a due time further away is reached in steps, re-armed when each one rings.
    const wait = Math.max(0, at - Date.now());
    const timer = setTimeout(
      async () => {
        this.alarms.delete(handler);
        if (wait > MAX_TIMER_MS) return this.promoteAt(handler, at);
        try {
          const { nextDueInMs } = await this.store.sweep(handler, this.leaseMs);
          if (nextDueInMs !== undefined) this.promoteAt(handler, Date.now() + nextDueInMs);
        } catch (err) {
          this.log.warn("promoting retries failed; the recovery sweep will", { handler, error: String(err) });
        }
      },
      Math.min(wait, MAX_TIMER_MS),
    );
    timer.unref();
    this.alarms.set(handler, { at, timer });
  }

  /** Store how a run ended, retrying while Redis is unavailable (bounded: the lease covers the rest). */
  private async record(task: Task, outcome: RunOutcome, log: () => Logger): Promise<FinishResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.store.finishTask(task, outcome);
      } catch (err) {
        if (attempt >= (this.stopped ? 3 : 10)) {
          log().error("could not record the end of the task; the recovery sweep will take it back", { error: String(err) });
          return "ignored";
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(100 * 2 ** attempt, 3000)));
      }
    }
  }

  private workerStats() {
    return { ...this.stats, state: this.running > 0 ? ("busy" as const) : ("idle" as const) };
  }
}

/** The longest delay a Node timer takes. */
const MAX_TIMER_MS = 2 ** 31 - 1;
