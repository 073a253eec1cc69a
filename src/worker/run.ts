/**
 * One run of a task: what ends it early (timeout, shutdown, cancel), how a handler's outcome is
 * awaited and described, and the `ctx.progress` it reports through.
 */
import type { FailureCode, Task } from "../core/domain.js";
import { InvalidArgumentError, isBadParamsError, publicMessage } from "../core/errors.js";
import type { Logger } from "../ops/log.js";
import type { RunOutcome } from "../store/store.js";
import type { HandlerContext } from "./handlers.js";

/** How a run ended, before its cost is known. */
export type RunEnd = Pick<RunOutcome, "kind" | "resultJson" | "retryInMs" | "error">;

/** The reason a handler's signal fires when its task runs past its timeout. */
export class TimeoutAbort extends Error {
  override name = "TimeoutAbort";
}

/** The reason a handler's signal fires at shutdown: its task is queued again, not failed. */
export class ShutdownAbort extends Error {
  override name = "ShutdownAbort";
}

/** The reason a handler's signal aborts when its task is canceled or deleted. */
export class CancelAbort extends Error {
  override name = "CancelAbort";
}

export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === "function";
}

/**
 * What may end a run early (its timeout, a cancel, a shutdown). The AbortSignal handlers see is
 * made only when one reads `ctx.signal`: most runs end before anything aborts them, and an
 * AbortController per run was a visible share of a worker's time.
 */
export class RunControl {
  /** Why the run was aborted; undefined while it was not. */
  reason: Error | undefined;
  private controller: AbortController | undefined;
  private onAbort: ((reason: Error) => void) | undefined;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.reason) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  abort(reason: Error): void {
    if (this.reason) return;
    this.reason = reason;
    this.controller?.abort(reason);
    this.onAbort?.(reason);
  }

  /** Settle with the handler's outcome, or reject as soon as the run is aborted. */
  race<T>(work: Promise<T>): Promise<T> {
    if (this.reason) return Promise.reject(this.reason);
    return new Promise<T>((resolve, reject) => {
      this.onAbort = reject;
      work.then(
        (value) => {
          this.onAbort = undefined;
          resolve(value);
        },
        (err: unknown) => {
          this.onAbort = undefined;
          reject(err);
        },
      );
    });
  }
}

/** What a run's context needs of its worker (one object per worker, not closures per run). */
export interface RunHost {
  /** A logger whose lines carry the task's id and handler (and the request id that created it). */
  taskLog(task: Task): Logger;
  /** Store the run's progress. */
  reportProgress(task: Task, percent: number, message: string): Promise<unknown>;
}

/**
 * The `ctx` a handler gets for a task's run. Its logger and progress reporter are made when first
 * used: most handlers use neither, and a worker of short tasks makes many contexts.
 */
export class RunContext implements HandlerContext {
  readonly taskId: string;
  readonly handler: string;
  private logger: Logger | undefined;
  private reporter: ((percent: number, message?: string) => Promise<void>) | undefined;

  constructor(
    private readonly task: Task,
    private readonly control: RunControl,
    private readonly host: RunHost,
  ) {
    this.taskId = task.id;
    this.handler = task.handler;
  }

  get signal(): AbortSignal {
    return this.control.signal;
  }

  get log(): Logger {
    this.logger ??= this.host.taskLog(this.task);
    return this.logger;
  }

  /** An own property (an arrow), so `const { progress } = ctx` works too. */
  readonly progress = (percent: number, message?: string): Promise<void> => {
    this.reporter ??= progressReporter((p, m) => this.host.reportProgress(this.task, p, m));
    return this.reporter(percent, message);
  };
}

/** A result that cannot be stored (checkResult): too large, too deep, or not JSON. */
export function isResultError(err: unknown): boolean {
  return err instanceof InvalidArgumentError && err.field === "result";
}

/**
 * The failure code and message of a handler's exception, as callers will read it: the message
 * only, with file paths masked (`<path>`); with `debug`, the stack trace as it is.
 */
export function describeFailure(err: unknown, aborted: Error | undefined, debug: boolean): [FailureCode, string] {
  if (aborted instanceof TimeoutAbort) return ["ERR_TIMEOUT", aborted.message];
  const code: FailureCode = isBadParamsError(err) ? "ERR_BAD_PARAMS" : "ERR_SERVER_EXCEPTION";
  if (err instanceof Error) return [code, debug && err.stack ? err.stack : publicMessage(err.message || err.name)];
  return [code, `the handler threw ${typeof err === "string" ? publicMessage(err) : "a non-Error value"}`];
}

/** Most characters of a progress message kept. */
const MAX_PROGRESS_MESSAGE = 1000;

/**
 * A task's `ctx.progress`: checks the values, and keeps at most one write in flight; reports made
 * meanwhile are coalesced into the latest. Write failures are dropped (progress is best effort).
 */
export function progressReporter(write: (percent: number, message: string) => Promise<unknown>) {
  let next: [number, string] | undefined;
  let flushing: Promise<void> | undefined;
  const flush = async () => {
    while (next) {
      const [percent, message] = next;
      next = undefined;
      await write(percent, message).catch(() => {});
    }
    flushing = undefined;
  };
  return (percent: number, message = ""): Promise<void> => {
    if (typeof percent !== "number" || !Number.isFinite(percent)) {
      return Promise.reject(new TypeError("progress: percent must be a finite number from 0 to 100"));
    }
    const clamped = Math.round(Math.min(100, Math.max(0, percent)) * 100) / 100;
    next = [clamped, String(message).slice(0, MAX_PROGRESS_MESSAGE)];
    flushing ??= flush();
    return flushing;
  };
}
