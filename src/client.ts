/**
 * Client entry (`import { createTaskClient } from "baichuan/client"`): the generated TaskService
 * and ScheduleService types and helpers that build typed clients for a server URL.
 *
 *   const client = createTaskClient("http://127.0.0.1:8585");
 *   const { taskId } = await client.createTask({ handler: "/demo_api/ping", params: {}, idempotencyKey: crypto.randomUUID() });
 *   for await (const { task } of client.watchTask({ taskId })) console.log(task?.status);
 */
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { ScheduleService } from "../gen/baichuan/v1/schedule_pb.js";
import { type CreateTaskRequest, type CreateTasksRequest, TaskService } from "../gen/baichuan/v1/task_pb.js";

export { Code, ConnectError } from "@connectrpc/connect";
export * from "../gen/baichuan/v1/schedule_pb.js";
export * from "../gen/baichuan/v1/task_pb.js";

export interface TaskClientOptions {
  /** Wire protocol (default: "connect"). */
  protocol?: "connect" | "grpc" | "grpc-web";
  /** HTTP version; gRPC always uses HTTP/2 (default: "2"). */
  httpVersion?: "1.1" | "2";
  /** Binary protobuf instead of JSON, for Connect and gRPC-Web (default: true). */
  binary?: boolean;
  /** Interceptors, for example to add an authorization header. */
  interceptors?: Interceptor[];
  /**
   * Retries of a CreateTask, or a CreateTasks whose every item has an `idempotencyKey`, answered
   * UNAVAILABLE (the server repeats the answer of a create that went through, so a retry never
   * creates a second task): after 250 ms, then twice as long each time (with jitter, at most
   * 4 s), within the call's timeout (default: 4; 0 for none). Creates without keys are never retried.
   */
  createRetries?: number;
}

export type TaskClient = Client<typeof TaskService>;
export type ScheduleClient = Client<typeof ScheduleService>;

/** A typed TaskService client for `baseUrl` (for example `http://127.0.0.1:8585`). */
export function createTaskClient(baseUrl: string, options: TaskClientOptions = {}): TaskClient {
  return createClient(TaskService, transportFor(baseUrl, options));
}

/** A typed ScheduleService client (recurring tasks) for `baseUrl`; the same options. */
export function createScheduleClient(baseUrl: string, options: TaskClientOptions = {}): ScheduleClient {
  return createClient(ScheduleService, transportFor(baseUrl, options));
}

function transportFor(baseUrl: string, options: TaskClientOptions) {
  const { protocol = "connect", httpVersion = "2", binary = true, createRetries = 4 } = options;
  // The retries go first, so the caller's interceptors (an authorization header) see every attempt.
  const interceptors = [...(createRetries > 0 ? [retryIdempotentCreates(createRetries)] : []), ...(options.interceptors ?? [])];
  return protocol === "grpc"
    ? // Refuse oversized messages locally: a server refusal would cost the HTTP/2 session.
      createGrpcTransport({ baseUrl, interceptors, writeMaxBytes: 1024 * 1024 + 64 * 1024 })
    : protocol === "grpc-web"
      ? createGrpcWebTransport({ baseUrl, httpVersion, useBinaryFormat: binary, interceptors })
      : createConnectTransport({ baseUrl, httpVersion, useBinaryFormat: binary, interceptors });
}

/** First retry delay of a create, doubled for each further one, at most CREATE_RETRY_MAX_MS. */
const CREATE_RETRY_BASE_MS = 250;
const CREATE_RETRY_MAX_MS = 4000;

/**
 * An interceptor that retries CreateTask / CreateTasks calls carrying idempotency keys (every item)
 * when they fail with UNAVAILABLE, up to `retries` times, with exponential backoff and jitter.
 */
export function retryIdempotentCreates(retries: number): Interceptor {
  return (next) => async (req) => {
    if (req.stream || !isKeyedCreate(req.service.typeName, req.method.name, req.message)) return next(req);
    for (let attempt = 0; ; attempt++) {
      try {
        return await next(req);
      } catch (err) {
        if (attempt >= retries || ConnectError.from(err).code !== Code.Unavailable || req.signal.aborted) throw err;
        const ms = Math.min(CREATE_RETRY_MAX_MS, CREATE_RETRY_BASE_MS * 2 ** attempt) * (0.5 + Math.random() / 2);
        if (!(await sleep(ms, req.signal))) throw err;
      }
    }
  };
}

function isKeyedCreate(service: string, method: string, message: unknown): boolean {
  if (service !== TaskService.typeName) return false;
  if (method === TaskService.method.createTask.name) return (message as CreateTaskRequest).idempotencyKey !== "";
  if (method === TaskService.method.createTasks.name) {
    const { tasks } = message as CreateTasksRequest;
    return tasks.length > 0 && tasks.every((t) => t.idempotencyKey !== "");
  }
  return false;
}

/** Wait `ms`; false when `signal` aborted first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (slept: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      resolve(slept);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal.addEventListener("abort", onAbort);
  });
}
