import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Task } from "../core/domain.js";
import type { BaiChuanObserver, FinishResult, QueueStats, TaskRun } from "../engine/baichuan.js";
import type { Logger } from "./log.js";

/** Handler run times: from a millisecond to the 180 s default timeout and past it. */
const HANDLER_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** Request times: unary calls take milliseconds, streams (WatchTask, health Watch) may last hours. */
const REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600];

/** Process-wide default metrics (CPU, memory, event loop, GC), created once and shared by every registry. */
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** What the scrape reads from Redis (the Store). */
export interface QueueSource {
  queuedHandlers(): Promise<string[]>;
  queueStats(handlers: string[]): Promise<QueueStats[]>;
}

/** The metrics of one server, in their own registry. */
export class Metrics implements BaiChuanObserver {
  readonly registry = new Registry();
  private readonly created: Counter<"handler">;
  private readonly finished: Counter<"handler">;
  private readonly failed: Counter<"handler">;
  private readonly retried: Counter<"handler">;
  private readonly canceled: Counter<"handler">;
  private readonly handlerSeconds: Histogram<"handler">;
  private readonly queued: Gauge<"handler">;
  private readonly running: Gauge<"handler">;
  private readonly scheduled: Gauge<"handler">;
  private readonly oldestAge: Gauge<"handler">;
  private readonly held: Gauge<"handler">;
  private readonly paused: Gauge<"handler">;
  private readonly scrapeErrors: Counter;
  private readonly redisErrors: Counter;
  private readonly rpcs: Counter<"service" | "method" | "code">;
  private readonly rpcSeconds: Histogram<"service" | "method" | "code">;
  private readonly legacyRequests: Counter<"path" | "stat">;
  private readonly legacySeconds: Histogram<"path">;
  private readonly rpcSeries = new Map<
    string,
    { count: { inc(value?: number): void }; seconds: { observe(value: number): void } }
  >();

  constructor(
    private readonly queues: QueueSource,
    watchStreams: () => number,
    private readonly log?: Logger,
  ) {
    const registers = [this.registry];
    const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
      new Counter<L>({ name: `baichuan_${name}`, help, labelNames, registers });
    const gauge = (name: string, help: string) =>
      new Gauge<"handler">({ name: `baichuan_${name}`, help, labelNames: ["handler"], registers });
    this.created = counter(
      "tasks_created_total",
      "Tasks created by this process (enqueue, enqueueMany; unique hits not counted).",
      ["handler"],
    );
    this.finished = counter("tasks_finished_total", "Runs of this process's worker that ended the task finished.", ["handler"]);
    this.failed = counter("tasks_failed_total", "Runs of this process's worker that ended the task failed (no retry left).", [
      "handler",
    ]);
    this.retried = counter("tasks_retried_total", "Failed runs of this process's worker scheduled for a retry.", ["handler"]);
    this.canceled = counter("tasks_canceled_total", "Runs of this process's worker stopped by CancelTask.", ["handler"]);
    this.handlerSeconds = new Histogram({
      name: "baichuan_handler_duration_seconds",
      help: "Time handlers of this process's worker ran (the task's cost), requeues at shutdown left out.",
      labelNames: ["handler"],
      buckets: HANDLER_BUCKETS,
      registers,
    });
    this.queued = gauge("queue_depth", "Tasks waiting in the handler's queue (Redis, read at scrape time).");
    this.running = gauge("tasks_running", "Tasks of the handler started and not ended, on any worker (Redis, at scrape time).");
    this.scheduled = gauge("tasks_scheduled", "Tasks of the handler waiting for a retry (Redis, at scrape time).");
    this.oldestAge = gauge("queue_oldest_age_seconds", "Age of the oldest queued task of the handler; 0 when none (Redis).");
    this.held = gauge(
      "queue_held",
      "Queued tasks of the handler held back now by its limits or a pause (Redis, at scrape time).",
    );
    this.paused = gauge("queue_paused", "1 while the handler is paused (PauseQueue), 0 otherwise (Redis, at scrape time).");
    this.scrapeErrors = counter("scrape_errors_total", "Scrapes that could not read the queue gauges from Redis.", []);
    this.redisErrors = counter("redis_errors_total", "Error events of the Redis command connection.", []);
    this.rpcs = counter("rpc_requests_total", "RPCs answered, by method and gRPC code; a stream counts when it ends.", [
      "service",
      "method",
      "code",
    ]);
    this.rpcSeconds = new Histogram({
      name: "baichuan_rpc_duration_seconds",
      help: "Time RPCs took, by method and gRPC code; for a stream, until it ended.",
      labelNames: ["service", "method", "code"],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.legacyRequests = counter("legacy_requests_total", "Requests to the legacy JSON URLs, by path and stat.", [
      "path",
      "stat",
    ]);
    this.legacySeconds = new Histogram({
      name: "baichuan_legacy_duration_seconds",
      help: "Time legacy JSON requests took, by path.",
      labelNames: ["path"],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    new Gauge({
      name: "baichuan_watch_streams_open",
      help: "WatchTask streams open on this server (both paths).",
      registers,
      collect() {
        this.set(watchStreams());
      },
    });
    const shared = processMetrics();
    for (const { name } of shared.getMetricsAsArray()) this.registry.registerMetric(shared.getSingleMetric(name)!);
  }

  tasksCreated(handler: string, count: number): void {
    this.created.inc({ handler }, count);
  }

  /**
   * A run of this process's worker ended. `run` (outcome and cost) is the worker's third onTaskEnd
   * argument; without it only retries can be told apart.
   */
  taskEnded(task: Task, result: FinishResult, run?: TaskRun): void {
    const labels = { handler: task.handler };
    if (result === "retry") this.retried.inc(labels);
    else if (result === "canceled") this.canceled.inc(labels);
    else if (result === "ended" && run) {
      if (run.kind === "finished") this.finished.inc(labels);
      else if (run.kind === "failed") this.failed.inc(labels);
      else if (run.kind === "canceled") this.canceled.inc(labels);
    }
    if (run && run.kind !== "requeue") this.handlerSeconds.observe(labels, run.cost);
  }

  redisError(): void {
    this.redisErrors.inc();
  }

  rpc(service: string, method: string, code: string, seconds: number): void {
    // One pair of label children per (service, method, code), kept: a bounded set (the services'
    // methods and 17 codes), and prom-client then skips building and checking the labels each call.
    const key = `${service}/${method} ${code}`;
    let series = this.rpcSeries.get(key);
    if (!series) {
      series = { count: this.rpcs.labels(service, method, code), seconds: this.rpcSeconds.labels(service, method, code) };
      this.rpcSeries.set(key, series);
    }
    series.count.inc();
    series.seconds.observe(seconds);
  }

  legacy(path: string, stat: string, seconds: number): void {
    this.legacyRequests.inc({ path, stat });
    this.legacySeconds.observe({ path }, seconds);
  }

  /** The exposition text: queue gauges read from Redis now (left out if it fails), then every metric. */
  async render(): Promise<string> {
    let stats: QueueStats[] | undefined;
    try {
      // As AdminService.ListQueues: the handlers with a queue, then one queueStats call.
      stats = await this.queues.queueStats((await this.queues.queuedHandlers()).sort());
    } catch (err) {
      this.scrapeErrors.inc();
      this.log?.warn("metrics: could not read the queues from Redis", {
        error: err instanceof Error ? err.message : String(err),
      });
    }
    for (const gauge of [this.queued, this.running, this.scheduled, this.oldestAge, this.held, this.paused]) gauge.reset();
    for (const s of stats ?? []) {
      const labels = { handler: s.handler };
      this.queued.set(labels, s.queued);
      this.running.set(labels, s.started);
      this.scheduled.set(labels, s.scheduled);
      this.oldestAge.set(labels, (s.oldestQueuedAgeMs ?? 0) / 1000);
      this.held.set(labels, s.held);
      this.paused.set(labels, s.paused ? 1 : 0);
    }
    return this.registry.metrics();
  }
}
