/**
 * `baichuan.v1.TaskService`: each method checks its input, calls one BaiChuan operation and maps the
 * result to protobuf. Errors are mapped by the error interceptor (errors.ts).
 */
import { create } from "@bufbuild/protobuf";
import { type ConnectRouter, createContextKey, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { TaskService, type WatchTaskResponse, WatchTaskResponseSchema } from "../../gen/baichuan/v1/task_pb.js";
import type { Authenticator } from "../core/auth.js";
import { abortedCall, InvalidArgumentError, LimitError, ServerShuttingDownError, toConnectError } from "../core/errors.js";
import type { BaiChuan } from "../engine/baichuan.js";
import { kRequest } from "../ops/request.js";
import { optionsFromMessage, taskToMessage } from "./convert.js";

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
  // Without tokens every request is allowed: the header is not even read.
  const authenticate = (ctx: HandlerContext) =>
    context.auth.authenticate(context.auth.enabled ? ctx.requestHeader.get("authorization") : undefined);
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
