/**
 * Library entry (`import { BaiChuan } from "baichuan"`): create, read, watch and wait for tasks,
 * register handlers and run a worker in this process, manage schedules (recurring tasks) and run
 * their scheduler, or serve the API.
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
  ScheduleExistsError,
  ScheduleNotFoundError,
  StoreUnavailableError,
  TaskNotFoundError,
  WaitTimeoutError,
} from "./core/errors.js";
export type { Schedule, ScheduleSpec } from "./core/schedule.js";
export { BaiChuan, type BaiChuanOptions, type CreateMeta } from "./engine/baichuan.js";
export type { SchedulerOptions } from "./engine/scheduler.js";
export type { Schedules } from "./engine/schedules.js";
export { type RunningServer, type ServerOptions, startServer } from "./http/server.js";
export { createLogger, type Logger } from "./ops/log.js";
export { type Handler, type HandlerContext, type HandlerOptions, HandlerRegistry } from "./worker/handlers.js";
export { type GuardOptions, guardProcess } from "./worker/process-guard.js";
export { Worker, type WorkerOptions } from "./worker/worker.js";
