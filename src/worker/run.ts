/**
 * One run of a task: what ends it early (timeout, shutdown, cancel), how a handler's outcome is
 * awaited and described, and the `ctx.progress` it reports through.
 */
import type { FailureCode } from "../core/domain.js";
import { InvalidArgumentError, isBadParamsError, publicMessage } from "../core/errors.js";
import type { RunOutcome } from "../store/store.js";

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

/** Settle with the handler's outcome, or reject as soon as the signal aborts. */
export function raceAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

/** A result that cannot be stored (checkResult): too large, too deep, or not JSON. */
export function isResultError(err: unknown): boolean {
  return err instanceof InvalidArgumentError && err.field === "result";
}

/**
 * The failure code and message of a handler's exception, as callers will read it: the message
 * only, with file paths masked (`<path>`); with `debug`, the stack trace as it is.
 */
export function describeFailure(err: unknown, signal: AbortSignal, debug: boolean): [FailureCode, string] {
  if (signal.aborted && signal.reason instanceof TimeoutAbort) return ["ERR_TIMEOUT", signal.reason.message];
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
