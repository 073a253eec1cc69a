/**
 * gRPC health checking, `grpc.health.v1.Health` (https://github.com/grpc/grpc/blob/master/doc/health-checking.md),
 * and the answer of `GET /healthz`, from one source of truth.
 *
 * The server as a whole (""), `baichuan.v1.TaskService` and `baichuan.v1.AdminService` are SERVING while Redis is reachable
 * (both store connections ready) and the server is not shutting down, NOT_SERVING otherwise. Any
 * other name is unknown: Check fails with NOT_FOUND, Watch sends SERVICE_UNKNOWN and stays open.
 * The status is read from the connections' state, kept up to date by their events: a check costs
 * no Redis round trip. Health needs no bearer token (load balancers and orchestrators have none).
 */
import { Code, ConnectError, type ConnectRouter, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { AdminService } from "../../gen/baichuan/v1/admin_pb.js";
import { TaskService } from "../../gen/baichuan/v1/task_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { abortedCall, StoreUnavailableError } from "../core/errors.js";

/** What health needs of the store (redis/store.ts): its connection state, and word of each change. */
export interface ConnectionState {
  isReady(): boolean;
  /** Returns the function that stops listening. */
  onStateChange(listener: () => void): () => void;
}

/** The names Check and Watch know: "" is the server as a whole. */
const KNOWN_SERVICES = new Set(["", TaskService.typeName, AdminService.typeName]);

/** The health of one server. One listener on the store per server, however many Watch streams. */
export class ServerHealth {
  /** One wake-up callback per open Watch stream. */
  private readonly watchers = new Set<() => void>();

  /**
   * `maxWatchers`: most Watch streams open at once (health needs no token, so anyone may open
   * them); past it Watch answers RESOURCE_EXHAUSTED.
   */
  constructor(
    private readonly store: ConnectionState,
    private readonly shutdown: AbortSignal,
    private readonly maxWatchers = 1000,
  ) {
    const changed = () => {
      for (const wake of this.watchers) wake();
    };
    const stopListening = store.onStateChange(changed);
    // Once shutting down the status is NOT_SERVING for good: tell the streams, stop listening.
    shutdown.addEventListener(
      "abort",
      () => {
        stopListening();
        changed();
      },
      { once: true },
    );
  }

  /** The status of `service` now; undefined for a service this server does not know. */
  status(service: string): ServingStatus | undefined {
    if (!KNOWN_SERVICES.has(service)) return undefined;
    return this.notServing() ? ServingStatus.NOT_SERVING : ServingStatus.SERVING;
  }

  /** Why the server is not serving (for /healthz), or undefined while it serves. */
  notServing(): Error | undefined {
    if (this.shutdown.aborted) return new Error("the server is shutting down");
    if (!this.store.isReady()) return new StoreUnavailableError(new Error("the connection is not ready"));
    return undefined;
  }

  /** The `grpc.health.v1.Health` service. */
  impl(): ServiceImpl<typeof Health> {
    return {
      check: (req) => {
        const status = this.status(req.service);
        // The name is not echoed: it may be long, and it is the caller's own input.
        if (status === undefined) {
          throw new ConnectError(`unknown service; known: ${[...KNOWN_SERVICES].map((s) => `"${s}"`).join(", ")}`, Code.NotFound);
        }
        return { status };
      },
      watch: (req, ctx) => this.watch(req.service, ctx),
    };
  }

  /**
   * The status now, then each change of it (never the same status twice in a row), until the
   * client goes away. At shutdown: NOT_SERVING, then the stream ends with UNAVAILABLE, as
   * WatchTask streams do.
   */
  private async *watch(service: string, ctx: HandlerContext) {
    if (this.watchers.size >= this.maxWatchers) {
      throw new ConnectError(
        `this server already serves ${this.maxWatchers} health Watch streams, its limit`,
        Code.ResourceExhausted,
      );
    }
    let wake = () => {};
    const notify = () => wake();
    this.watchers.add(notify);
    ctx.signal.addEventListener("abort", notify);
    try {
      let sent: ServingStatus | undefined;
      for (;;) {
        const now = this.status(service) ?? ServingStatus.SERVICE_UNKNOWN;
        if (now !== sent) {
          sent = now;
          yield { status: now };
          continue; // the status may have changed while the message was written
        }
        if (ctx.signal.aborted || this.shutdown.aborted) break;
        await new Promise<void>((resolve) => {
          wake = () => resolve();
        });
      }
    } finally {
      this.watchers.delete(notify);
      ctx.signal.removeEventListener("abort", notify);
    }
    if (this.shutdown.aborted) throw new ConnectError("the server is shutting down: watch again", Code.Unavailable);
    // Its deadline passed, or its client went away.
    throw abortedCall(ctx.signal);
  }
}

/** Routes of the `grpc.health.v1.Health` service. */
export function healthRoutes(health: ServerHealth) {
  return (router: ConnectRouter) => router.service(Health, health.impl());
}
