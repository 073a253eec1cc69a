/**
 * Library entry (`import { BaiChuan } from "baichuan"`): create, read, watch and wait for tasks,
 * register handlers and run a worker in this process, or serve the API.
 */

export type { FailureCode, JsonObject, JsonValue, QueueLimits, Task, TaskOptions, TaskStatus } from "./core/domain.js";
export {
  BadParamsError,
  BaiChuanError,
  HandlerNotFoundError,
  IdempotencyKeyReusedError,
  InvalidArgumentError,
  QueueFullError,
  RedisFullError,
  StoreUnavailableError,
  TaskNotFoundError,
  WaitTimeoutError,
} from "./core/errors.js";
export { BaiChuan, type BaiChuanOptions, type CreateMeta } from "./engine/baichuan.js";
export { type RunningServer, type ServerOptions, startServer } from "./http/server.js";
export { createLogger, type Logger } from "./ops/log.js";
export { type Handler, type HandlerContext, type HandlerOptions, HandlerRegistry } from "./worker/handlers.js";
export { type GuardOptions, guardProcess } from "./worker/process-guard.js";
export { Worker, type WorkerOptions } from "./worker/worker.js";
