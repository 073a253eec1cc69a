/**
 * Library entry (`import { BaiChuan } from "baichuan"`): create, read, watch and wait for tasks,
 * register handlers and run a worker in this process, or serve the API.
 */
export { BaiChuan, type BaiChuanOptions, type CreateMeta } from "./baichuan.js";
export type { FailureCode, JsonObject, JsonValue, Task, TaskOptions, TaskStatus } from "./domain.js";
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
} from "./errors.js";
export { type Handler, type HandlerContext, HandlerRegistry } from "./handlers.js";
export { createLogger, type Logger } from "./log.js";
export { type GuardOptions, guardProcess } from "./process-guard.js";
export { type RunningServer, type ServerOptions, startServer } from "./server.js";
export { Worker, type WorkerOptions } from "./worker.js";
