/**
 * The scheduler: every process that runs it creates the tasks of schedules as their ticks come,
 * and together they create exactly one task per tick, however many run, and lose none while one
 * runs.
 *
 * Each process sleeps on one timer until the earliest next tick (by Redis's clock: the due set
 * holds each active schedule's next tick), hears every change of a schedule on the schedule
 * channel (and re-reads at once), and re-reads every `safetyMs` and after a reconnect. At a tick
 * T of a schedule (every process that woke handles it):
 *
 * 1. the tick's task is created with an idempotency key made of the schedule id, its `gen` (its
 *    definition) and T: in the handler's slot, a second create of the same tick (by another
 *    process, or by this one after a failure) answers the same task;
 * 2. the schedule's next tick is set with a compare-and-set on (gen, T) (schedule-advance.lua): the
 *    first process to get there moves the schedule on, the others change nothing.
 *
 * A process that dies between the two steps leaves the tick due: another (or itself, restarted)
 * does the tick again and gets the same task. A tick is never advanced before its task exists
 * (a create that fails for lack of Redis leaves it due), so none is lost; a create refused for
 * good (the queue is full) is recorded as the schedule's last error and the tick passes.
 *
 * Missed ticks: a tick handled more than MISSED_AFTER_MS after its time (every process, or Redis,
 * was down) is missed. Missed ticks create one task together, keyed on the first of them (or none
 * with skip_missed), and the schedule moves to its first tick within MISSED_AFTER_MS of now.
 *
 * Cost: with no schedule, one script call per `safetyMs` per process and one subscription; per
 * tick and process that handles it, three calls (due, create, advance).
 */
import type { JsonObject } from "../core/domain.js";
import { IdempotencyKeyReusedError, InvalidArgumentError, QueueFullError } from "../core/errors.js";
import { planTick, type ScheduleDefinition } from "../core/schedule.js";
import { type Logger, silentLogger } from "../ops/log.js";
import type { NewTask, ScheduleRecord, Store } from "../store/store.js";

/** Schedules handled per wake-up (more: the scheduler reads again at once). */
const BATCH = 100;

/**
 * How long a tick's idempotency record lives (seconds): far longer than any process takes between
 * reading a tick and creating its task, and short enough that a schedule ticking every second
 * keeps few records.
 */
export const TICK_KEY_TTL_SECONDS = 3600;

export interface SchedulerOptions {
  /** Longest sleep: the scheduler re-reads at least this often, whatever it heard (default: 30,000 ms). */
  safetyMs?: number;
  logger?: Logger;
}

/** What the scheduler needs of the engine: a checked task for a definition, and who hears of creates. */
export interface TickTasks {
  /** The task a tick of `def` creates (checked as a create is; throws on a definition no longer valid). */
  build(def: ScheduleDefinition, params: JsonObject): NewTask;
  /** A tick created a new task (metrics). */
  created(handler: string): void;
}

export class Scheduler {
  private readonly safetyMs: number;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** A wake-up came while running: run again at once. */
  private again = false;
  private stopped = false;
  /** Failed runs in a row (for the backoff when the due schedules cannot even be read). */
  private failures = 0;
  /**
   * Schedules whose last tick failed (Redis away for their slot, say), with their own backoff: one
   * failing schedule must not hold back the ticks of the others. Epoch ms by this process's clock.
   */
  private readonly retries = new Map<string, { failures: number; atMs: number }>();
  private unsubscribe: (() => void) | undefined;
  private subscribing: Promise<void> | undefined;
  private readonly stopListening: Array<() => void> = [];

  constructor(
    private readonly store: Store,
    private readonly tasks: TickTasks,
    options: SchedulerOptions = {},
  ) {
    this.safetyMs = options.safetyMs ?? 30_000;
    this.log = options.logger ?? silentLogger;
  }

  start(): void {
    // After a reconnect (either connection), changes may have been missed: read again.
    this.stopListening.push(this.store.subscriptions.onResync(() => this.wake()));
    this.stopListening.push(
      this.store.onStateChange(() => {
        if (this.store.isReady()) this.wake();
      }),
    );
    this.wake();
    this.log.info("scheduler started", { safetyMs: this.safetyMs });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const stop of this.stopListening.splice(0)) stop();
    await this.subscribing;
    this.unsubscribe?.();
    await this.running;
  }

  /** Read the due schedules now (or right after the run in progress). */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.running = this.run().finally(() => (this.running = undefined));
  }

  /** Handle what is due, then sleep until the next tick (at most safetyMs), or back off after a failure. */
  private async run(): Promise<void> {
    let delay = this.safetyMs;
    try {
      this.listen();
      do {
        this.again = false;
        const { nowMs, nextMs, due } = await this.store.schedules.due(BATCH);
        if (due.length < BATCH) {
          // Every due schedule was read: one not among them (deleted, updated, done elsewhere) is no retry.
          const dueIds = new Set(due.map((record) => record.schedule.id));
          for (const id of this.retries.keys()) if (!dueIds.has(id)) this.retries.delete(id);
        }
        const ready = due.filter((record) => (this.retries.get(record.schedule.id)?.atMs ?? 0) <= Date.now());
        const results = await Promise.allSettled(ready.map((record) => this.tick(record, nowMs)));
        let wakeAt = nextMs ?? Number.POSITIVE_INFINITY;
        for (const [i, r] of results.entries()) {
          const id = ready[i]!.schedule.id;
          if (r.status === "fulfilled") {
            this.retries.delete(id);
            // The handled schedules' next ticks (as this process computed them: if another process
            // advanced one, it set the same tick).
            if (r.value !== undefined) wakeAt = Math.min(wakeAt, r.value);
          } else this.retryLater(id, r.reason);
        }
        // A tick that failed stays due: its schedule is tried again after its own pause.
        for (const { atMs } of this.retries.values()) wakeAt = Math.min(wakeAt, nowMs + Math.max(0, atMs - Date.now()));
        if (due.length === BATCH && ready.length > 0) this.again = true;
        delay = Math.min(this.safetyMs, Math.max(0, wakeAt - nowMs));
      } while (this.again && !this.stopped);
      this.failures = 0;
    } catch (err) {
      this.failures++;
      delay = Math.min(this.safetyMs, 250 * 2 ** Math.min(this.failures, 8));
      this.log.warn("scheduler: a run failed; it tries again", { error: String(err), retryInMs: delay });
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => this.wake(), delay);
    this.timer.unref();
  }

  /** A tick of schedule `id` failed: it stays due and is tried again after a backoff of its own. */
  private retryLater(id: string, err: unknown): void {
    const failures = (this.retries.get(id)?.failures ?? 0) + 1;
    const inMs = Math.min(this.safetyMs, 250 * 2 ** Math.min(failures, 8));
    this.retries.set(id, { failures, atMs: Date.now() + inMs });
    this.log.warn("scheduler: a tick failed; it is tried again", { schedule: id, error: String(err), retryInMs: inMs });
  }

  /** Subscribe to the schedule channel if not yet (in the background: a failure is retried next run). */
  private listen(): void {
    if (this.unsubscribe || this.subscribing) return;
    this.subscribing = this.store.schedules
      .subscribe(() => this.wake())
      .then(
        (stop) => {
          if (this.stopped) stop();
          else {
            this.unsubscribe = stop;
            this.wake(); // a change may have come before the subscription
          }
        },
        (err: unknown) => this.log.debug("scheduler: could not subscribe yet", { error: String(err) }),
      )
      .finally(() => (this.subscribing = undefined));
  }

  /**
   * One due tick of one schedule: its task (or none, for missed ticks with skip_missed), then the
   * next tick, which it returns (undefined: none left).
   */
  private async tick(record: ScheduleRecord, nowMs: number): Promise<number | undefined> {
    const s = record.schedule;
    if (s.nextRunMs === undefined) return undefined;
    const { tickMs, missed, create, nextMs: next } = planTick({ ...s, nextRunMs: s.nextRunMs }, nowMs);
    let taskId = "";
    let error = "";
    if (create) {
      try {
        taskId = await this.createTask(record, tickMs);
      } catch (err) {
        // Refused for good: the tick passes, and the schedule says why. (Redis away: it stays due.)
        if (!(err instanceof QueueFullError || err instanceof InvalidArgumentError || err instanceof IdempotencyKeyReusedError)) {
          throw err;
        }
        error = err.message;
        this.log.warn("scheduler: a tick created no task", { schedule: s.id, handler: s.handler, error });
      }
    } else {
      this.log.info("scheduler: dropped missed ticks (skip_missed)", { schedule: s.id, from: new Date(tickMs).toISOString() });
    }
    const result = await this.store.schedules.advance(record, tickMs, next, taskId, error);
    if (missed && result === "advanced") {
      this.log.info("scheduler: missed ticks", { schedule: s.id, first: new Date(tickMs).toISOString(), task: taskId || null });
    }
    return next;
  }

  /** The tick's task: created, or the one an earlier create of this tick made. */
  private async createTask(record: ScheduleRecord, tickMs: number): Promise<string> {
    const s = record.schedule;
    const task = this.tasks.build(s, s.params);
    task.schedule = { id: s.id, tickMs };
    task.idempotency = {
      key: `schedule/${s.id}/${record.gen}/${tickMs}`,
      digest: "-",
      ttl: TICK_KEY_TTL_SECONDS,
      internal: true,
    };
    const [result] = await this.store.createTasks(s.handler, [task]);
    if (result instanceof Error) throw result;
    if (!result!.replayed && !result!.deduplicated) this.tasks.created(s.handler);
    return result!.id;
  }
}
