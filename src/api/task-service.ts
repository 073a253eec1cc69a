/**
 * `baichuan.v1.TaskService`: each method checks its input, calls one BaiChuan operation and maps the
 * result to protobuf. Errors are mapped by the error interceptor (errors.ts).
 */
import { create, fromJson } from "@bufbuild/protobuf";
import { type Duration, DurationSchema, durationMs, type Timestamp, TimestampSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import { type ConnectRouter, createContextKey, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import {
  type Task as TaskMessage,
  type TaskOptions as TaskOptionsMessage,
  TaskSchema,
  TaskService,
  TaskStatus,
  type WatchTaskResponse,
  WatchTaskResponseSchema,
} from "../../gen/baichuan/v1/task_pb.js";
import type { Authenticator } from "../core/auth.js";
import { microsFromIso, type TaskStatus as StoredStatus, type Task, type TaskOptions } from "../core/domain.js";
import { abortedCall, InvalidArgumentError, LimitError, ServerShuttingDownError, toConnectError } from "../core/errors.js";
import type { BaiChuan } from "../engine/baichuan.js";
import { kRequest } from "../ops/request.js";

/** Most items in one CreateTasks call. */
const MAX_BATCH = 10_000;

/** The creator's IP address, set by the server for each request. */
export const kClientIp = createContextKey<string>("", { description: "client IP address" });

/** The connection (socket or HTTP/2 session) a request came on, set by the server. */
export const kConnection = createContextKey<object | undefined>(undefined, { description: "client connection" });

/** What the service needs besides the BaiChuan instance. */
export interface ServiceContext {
  /** Bounds on WatchTask streams. */
  limits: { maxWatchers: number; maxWatchersPerConnection: number };
  auth: Authenticator;
  /** Fires when the server shuts down: open WatchTask streams end with UNAVAILABLE. */
  shutdown: AbortSignal;
}

export function taskServiceRoutes(bc: BaiChuan, context: ServiceContext, watchers = new WatchStreams(bc, context)) {
  return (router: ConnectRouter) => router.service(TaskService, taskServiceImpl(bc, context, watchers));
}

/**
 * WatchTask streams: admission (token, limits per server and per connection) and the messages of
 * each stream. Shared by the Connect route and the lean gRPC path (grpc-watch.ts), so both count
 * against the same limits.
 */
export class WatchStreams {
  private open = 0;
  /** WatchTask streams open now, on both paths (metrics). */
  get openStreams(): number {
    return this.open;
  }
  private readonly perConnection = new WeakMap<object, number>();

  constructor(
    private readonly bc: BaiChuan,
    private readonly context: ServiceContext,
  ) {}

  /** The messages of one stream, until the task ends or `signal` aborts. Throws ConnectError. */
  async *watch(
    taskId: string,
    authorization: string | null | undefined,
    connection: object,
    signal: AbortSignal,
  ): AsyncGenerator<WatchTaskResponse, void, undefined> {
    const { limits, auth, shutdown } = this.context;
    const grant = auth.authenticate(authorization);
    const onConnection = this.perConnection.get(connection) ?? 0;
    if (this.open >= limits.maxWatchers) {
      throw new LimitError("max_watchers", `this server already serves ${limits.maxWatchers} WatchTask streams, its limit`);
    }
    if (onConnection >= limits.maxWatchersPerConnection) {
      throw new LimitError(
        "max_watchers_per_connection",
        `this connection already has ${limits.maxWatchersPerConnection} WatchTask streams, the limit per connection`,
      );
    }
    this.open++;
    this.perConnection.set(connection, onConnection + 1);
    try {
      for await (const task of this.bc.watch(taskId, AbortSignal.any([signal, shutdown]), grant)) {
        yield create(WatchTaskResponseSchema, { task: taskToMessage(task) });
      }
      // A stream cut short ends with why: its deadline, its client gone, or the shutdown.
      if (signal.aborted) throw abortedCall(signal);
      if (shutdown.aborted) throw new ServerShuttingDownError();
    } finally {
      this.open--;
      this.perConnection.set(connection, (this.perConnection.get(connection) ?? 1) - 1);
    }
  }
}

export function taskServiceImpl(
  bc: BaiChuan,
  context: ServiceContext,
  watchers = new WatchStreams(bc, context),
): ServiceImpl<typeof TaskService> {
  const authenticate = (ctx: HandlerContext) => context.auth.authenticate(ctx.requestHeader.get("authorization"));
  return {
    async createTask(req, ctx: HandlerContext) {
      const options = optionsFromMessage(req.options, req.idempotencyKey);
      const { id, deduplicated, replayed } = await bc.enqueue(req.handler, req.params ?? {}, options, {
        ip: ctx.values.get(kClientIp),
        requestId: ctx.values.get(kRequest)?.id,
        requireKnownHandler: true,
        grant: authenticate(ctx),
      });
      return { taskId: id, deduplicated, replayed };
    },

    async createTasks(req, ctx: HandlerContext) {
      if (req.tasks.length > MAX_BATCH) {
        throw new InvalidArgumentError("tasks", `holds ${req.tasks.length} items; the limit is ${MAX_BATCH}`);
      }
      const items = req.tasks.map((t) => ({
        handler: t.handler,
        params: t.params ?? {},
        options: optionsFromMessage(t.options, t.idempotencyKey),
      }));
      const results = await bc.enqueueMany(items, {
        ip: ctx.values.get(kClientIp),
        requestId: ctx.values.get(kRequest)?.id,
        requireKnownHandler: true,
        grant: authenticate(ctx),
      });
      return {
        results: results.map((r) => {
          if (!(r instanceof Error)) return { taskId: r.id, deduplicated: r.deduplicated, replayed: r.replayed };
          const err = toConnectError(r);
          return { error: { code: codeToString(err.code), message: err.rawMessage } };
        }),
      };
    },

    async getTask(req, ctx: HandlerContext) {
      return { task: taskToMessage(await bc.getTask(req.taskId, authenticate(ctx))) };
    },

    async cancelTask(req, ctx: HandlerContext) {
      return { task: taskToMessage(await bc.cancel(req.taskId, authenticate(ctx))) };
    },

    async deleteTask(req, ctx: HandlerContext) {
      return { deleted: await bc.delete(req.taskId, authenticate(ctx)) };
    },

    async retryTask(req, ctx: HandlerContext) {
      return { task: taskToMessage(await bc.retry(req.taskId, authenticate(ctx))) };
    },

    watchTask(req, ctx: HandlerContext) {
      const connection = ctx.values.get(kConnection) ?? {};
      return watchers.watch(req.taskId, ctx.requestHeader.get("authorization"), connection, ctx.signal);
    },
  };
}

function seconds(d: Duration | undefined): number | undefined {
  return d === undefined ? undefined : durationMs(d) / 1000;
}

/** Task options from their message, with the request's idempotency key ("" for none). */
function optionsFromMessage(options: TaskOptionsMessage | undefined, idempotencyKey: string): TaskOptions {
  if (!options) return idempotencyKey ? { idempotencyKey } : {};
  const out: TaskOptions = { unique: options.unique };
  if (idempotencyKey) out.idempotencyKey = idempotencyKey;
  if (options.maxAttempts !== 0) out.maxAttempts = options.maxAttempts;
  if (options.priority !== 0) out.priority = options.priority;
  const delay = seconds(options.delay);
  if (delay !== undefined) out.delay = delay;
  if (options.startAt) out.startAt = timestampMs(options.startAt);
  const timeout = seconds(options.timeout);
  const resultTtl = seconds(options.resultTtl);
  const failureTtl = seconds(options.failureTtl);
  const ttl = seconds(options.ttl);
  if (timeout !== undefined) out.timeout = timeout;
  if (resultTtl !== undefined) out.resultTtl = resultTtl;
  if (failureTtl !== undefined) out.failureTtl = failureTtl;
  if (ttl !== undefined) out.ttl = ttl;
  return out;
}

const STATUS: Record<StoredStatus, TaskStatus> = {
  scheduled: TaskStatus.SCHEDULED,
  queued: TaskStatus.QUEUED,
  started: TaskStatus.STARTED,
  finished: TaskStatus.FINISHED,
  failed: TaskStatus.FAILED,
  canceled: TaskStatus.CANCELED,
};

/** A Duration from seconds (fractions kept to the nanosecond, as protobuf requires whole nanos). */
export function duration(seconds: number): Duration {
  const whole = Math.floor(seconds);
  const nanos = Math.min(999_999_999, Math.round((seconds - whole) * 1e9));
  return create(DurationSchema, { seconds: BigInt(whole), nanos });
}

function timestampMs(t: Timestamp): number {
  return Number(t.seconds) * 1000 + t.nanos / 1e6;
}

export function timestamp(iso: string | undefined): Timestamp | undefined {
  if (!iso) return undefined;
  const micros = microsFromIso(iso);
  if (!Number.isFinite(micros)) return undefined;
  return create(TimestampSchema, { seconds: BigInt(Math.floor(micros / 1e6)), nanos: (micros % 1e6) * 1000 });
}

export function taskToMessage(task: Task): TaskMessage {
  const msg = create(TaskSchema, {
    id: task.id,
    handler: task.handler,
    status: STATUS[task.status] ?? TaskStatus.UNSPECIFIED,
    params: task.params,
    error: task.error ?? "",
    errorCode: task.errorCode ?? "",
    cost: task.cost,
    worker: task.worker,
    creatorIp: task.ip,
    timeout: duration(task.timeout),
    resultTtl: duration(task.resultTtl),
    failureTtl: duration(task.failureTtl),
    attempts: task.attempts,
    maxAttempts: task.maxAttempts,
    lastError: task.lastError ?? "",
    progress: task.progress ?? 0,
    progressMessage: task.progressMessage ?? "",
    priority: task.priority ?? 0,
  });
  if (task.scheduledFor) msg.scheduledFor = timestamp(task.scheduledFor);
  if (task.status === "finished") msg.result = fromJson(ValueSchema, task.result ?? null);
  if (task.ttl !== undefined) msg.ttl = duration(task.ttl);
  msg.createdAt = timestamp(task.createdAt);
  msg.enqueuedAt = timestamp(task.enqueuedAt);
  msg.startedAt = timestamp(task.startedAt);
  msg.endedAt = timestamp(task.endedAt);
  return msg;
}
