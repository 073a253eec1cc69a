/**
 * What keeps a process alive when a handler misbehaves. Every handler runs inside `runAsHandler`,
 * an AsyncLocalStorage context that follows everything the handler starts (promises, timers,
 * callbacks), so a failure it leaves behind can be told from one of the process itself.
 * `guardProcess` (installed by the service, `npm start`; a library user may install it too):
 * - an error thrown from a handler's timer or callback, or a promise it left rejected, is logged
 *   with the task id and handler; the process goes on;
 * - `process.exit()` called from a handler's context throws instead of ending the process, so
 *   the run fails with that error;
 * - an uncaught error outside any handler is a fault of the process: it is logged and the process
 *   exits with code 1;
 * - a process that exits while handlers run (whatever calls exit) exits non-zero.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { Logger } from "../ops/log.js";

/** Whose code runs: a task's handler (taskId empty for a synchronous call over HTTP). */
export interface HandlerScope {
  taskId: string;
  handler: string;
}

const scope = new AsyncLocalStorage<HandlerScope>();

/** Run `fn` (a handler call) in its scope: what it starts carries the scope too. */
export function runAsHandler<T>(who: HandlerScope, fn: () => T): T {
  return scope.run(who, fn);
}

/** The handler whose code runs now, if any. */
export function currentHandler(): HandlerScope | undefined {
  return scope.getStore();
}

/** A handler tried to end the process. */
export class ProcessExitError extends Error {
  override name = "ProcessExitError";
}

export interface GuardOptions {
  log: Logger;
  /** Handlers running now (the worker's count): exiting while any runs is a failure. */
  running: () => number;
}

/** Install the guards described above; returns the function that removes them. */
export function guardProcess({ log, running }: GuardOptions): () => void {
  const fields = (who: HandlerScope | undefined) => (who ? { task_id: who.taskId || undefined, handler: who.handler } : {});
  const onRejection = (reason: unknown) => {
    const who = currentHandler();
    log.error(who ? "a handler left a promise rejected" : "unhandled promise rejection", { ...fields(who), error: reason });
  };
  const onException = (err: unknown) => {
    const who = currentHandler();
    if (who) {
      log.error("a handler threw outside its run (from a timer or callback)", { ...fields(who), error: err });
      return;
    }
    log.error("uncaught exception: exiting", { error: err });
    process.exit(1);
  };
  const exit = process.exit;
  const guardedExit = function (this: unknown, code?: string | number | null) {
    const who = currentHandler();
    if (who) {
      throw new ProcessExitError(`handler ${who.handler} called process.exit(${code ?? ""}); a handler may not end the process`);
    }
    return exit.call(process, code);
  } as typeof process.exit;
  const onExit = (code: number) => {
    const busy = running();
    if (busy > 0 && code === 0) {
      process.exitCode = 1;
      log.error("the process is exiting while handlers run: exit code 1", { running: busy });
    }
  };
  process.on("unhandledRejection", onRejection);
  process.on("uncaughtException", onException);
  process.on("exit", onExit);
  process.exit = guardedExit;
  return () => {
    process.off("unhandledRejection", onRejection);
    process.off("uncaughtException", onException);
    process.off("exit", onExit);
    if (process.exit === guardedExit) process.exit = exit;
  };
}
