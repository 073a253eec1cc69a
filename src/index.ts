/**
 * Library entry (`import { BaiChuan } from "baichuan"`): create, read, watch and wait for tasks,
 * register handlers and run a worker in this process, or serve the API.
 */
export { BaiChuan, type BaiChuanOptions, type CreateMeta } from "./baichuan.js";
export type { Task, TaskOptions, TaskStatus, JsonValue, JsonObject, FailureCode } from "./domain.js";
export {
  BaiChuanError,
  BadParamsError,
  HandlerNotFoundError,
  InvalidArgumentError,
  StoreUnavailableError,
  TaskNotFoundError,
  WaitTimeoutError,
} from "./errors.js";
export { HandlerRegistry, type Handler, type HandlerContext } from "./handlers.js";
export { Worker, type WorkerOptions } from "./worker.js";
export { startServer, type RunningServer, type ServerOptions } from "./server.js";
export { createLogger, type Logger } from "./log.js";
