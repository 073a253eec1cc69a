/**
 * Domain errors: a few named classes with context. `toConnectError` maps them to Connect codes and
 * `legacyStat` to the original framework's `stat` strings; nothing else decides either.
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** Base of every error BaiChuan raises on purpose. */
export class BaiChuanError extends Error {
  override name = "BaiChuanError";
}

/** The caller sent something malformed; `field` names what to fix. */
export class InvalidArgumentError extends BaiChuanError {
  override name = "InvalidArgumentError";
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/**
 * No task with this id (never created, or expired). `hidden`: asked with a token limited to some
 * handlers, which gets this same error for a task of another handler (see auth.ts), so the text
 * says so and is the same whether the task exists or not.
 */
export class TaskNotFoundError extends BaiChuanError {
  override name = "TaskNotFoundError";
  constructor(
    readonly taskId: string,
    hidden = false,
  ) {
    super(
      hidden
        ? `task ${taskId} does not exist or is not one this token may see`
        : `task ${taskId} does not exist (never created, or expired after its TTL)`,
    );
  }
}

/**
 * No schedule with this id. `hidden`: asked with a token limited to some handlers, which gets this
 * same error for a schedule of a handler it does not cover (as for tasks, see auth.ts).
 */
export class ScheduleNotFoundError extends BaiChuanError {
  override name = "ScheduleNotFoundError";
  constructor(
    readonly scheduleId: string,
    hidden = false,
  ) {
    super(
      hidden ? `schedule ${scheduleId} does not exist or is not one this token may see` : `schedule ${scheduleId} does not exist`,
    );
  }
}

/** CreateSchedule with an id that is taken. */
export class ScheduleExistsError extends BaiChuanError {
  override name = "ScheduleExistsError";
  constructor(readonly scheduleId: string) {
    super(`schedule ${scheduleId} already exists: UpdateSchedule changes it, or DeleteSchedule removes it`);
  }
}

/** No process registered this handler and no live worker advertises it. */
export class HandlerNotFoundError extends BaiChuanError {
  override name = "HandlerNotFoundError";
  constructor(readonly handler: string) {
    super(`handler ${handler} is not registered by this process nor advertised by a live worker`);
  }
}

/** The handler's queue holds as many tasks as it may (back-pressure). */
export class QueueFullError extends BaiChuanError {
  override name = "QueueFullError";
  constructor(
    readonly handler: string,
    readonly limit: number,
  ) {
    super(`the queue of ${handler} holds ${limit} tasks, its limit: try again later`);
  }
}

/** The task is not in a state that allows this operation (retrying a running task, for example). */
export class FailedPreconditionError extends BaiChuanError {
  override name = "FailedPreconditionError";
}

/** A limit of the server was reached (open streams, for example); `limit` names it. */
export class LimitError extends BaiChuanError {
  override name = "LimitError";
  constructor(
    readonly limit: string,
    message: string,
  ) {
    super(message);
  }
}

/** No valid bearer token (when tokens are configured). */
export class UnauthenticatedError extends BaiChuanError {
  override name = "UnauthenticatedError";
}

/** The token is valid but does not cover this handler. */
export class PermissionDeniedError extends BaiChuanError {
  override name = "PermissionDeniedError";
}

/**
 * Redis could not be reached, or did not answer in time. The message says so in BaiChuan's own
 * words (`detail`, such as "no answer within 2000 ms"); the client library's error is kept as
 * `cause`, for the server's log only. `mayHaveApplied`: the command may have reached Redis and
 * run (it was sent, and its answer was lost or late), so a create may have created its task.
 */
export class StoreUnavailableError extends BaiChuanError {
  override name = "StoreUnavailableError";
  readonly detail: string | undefined;
  readonly mayHaveApplied: boolean;
  /** `advice`: what the caller should know or do, after the message. */
  constructor(
    cause?: unknown,
    { detail, advice, mayHaveApplied = false }: { detail?: string | undefined; advice?: string; mayHaveApplied?: boolean } = {},
  ) {
    super(`Redis is unavailable${detail ? ` (${detail})` : ""}${advice ? `: ${advice}` : ""}`, { cause });
    this.detail = detail;
    this.mayHaveApplied = mayHaveApplied;
  }
}

/** Redis refused a write because it reached its `maxmemory` and evicts nothing (an `OOM` reply). */
export class RedisFullError extends BaiChuanError {
  override name = "RedisFullError";
  constructor(cause?: unknown) {
    super("Redis is out of memory (maxmemory reached, nothing evicted): nothing can be stored until memory is freed", {
      cause,
    });
  }
}

/** An idempotency key was used before with another handler or other params (within its TTL). */
export class IdempotencyKeyReusedError extends BaiChuanError {
  override name = "IdempotencyKeyReusedError";
  constructor(readonly key: string) {
    super(
      `idempotency key ${JSON.stringify(key)} was already used for a task of another handler or with other params: ` +
        "use a new key for a new task",
    );
  }
}

/** The server is shutting down: the caller should watch again (elsewhere). */
export class ServerShuttingDownError extends BaiChuanError {
  override name = "ServerShuttingDownError";
  constructor() {
    super("the server is shutting down: watch the task again");
  }
}

/** A wait (library `wait`) ran out of time before the task ended. */
export class WaitTimeoutError extends BaiChuanError {
  override name = "WaitTimeoutError";
  constructor(
    readonly taskId: string,
    readonly timeoutMs: number,
  ) {
    super(`task ${taskId} did not end within ${timeoutMs} ms`);
  }
}

/** The brand of a BadParamsError: a registered symbol, the same in every copy of this package. */
const BAD_PARAMS_BRAND = Symbol.for("baichuan.BadParamsError");

/**
 * Thrown by a handler to say its params are wrong: the task fails with ERR_BAD_PARAMS (and is never
 * retried), and a synchronous call answers `{"stat":"ERR_BAD_PARAMS"}`. Recognised by its brand
 * (isBadParamsError), not by `instanceof`: a handler may import another copy of this package than
 * the server runs (the built `baichuan` while the server runs the sources, or two installed
 * versions), and any error carrying `[Symbol.for("baichuan.BadParamsError")] = true` counts.
 */
export class BadParamsError extends Error {
  override name = "BadParamsError";
  readonly [BAD_PARAMS_BRAND] = true;
}

/** True for an error that says its params are wrong: one carrying BadParamsError's brand, from any copy. */
export function isBadParamsError(err: unknown): boolean {
  try {
    return (typeof err === "object" || typeof err === "function") && err !== null && Reflect.get(err, BAD_PARAMS_BRAND) === true;
  } catch {
    return false; // a hostile value (a Proxy whose traps throw) is no BadParamsError
  }
}

/**
 * Why a call's signal aborted, as a ConnectError: DEADLINE_EXCEEDED when its deadline passed (the
 * reason Connect and grpc-watch.ts give), CANCELED when its client went away.
 */
export function abortedCall(signal: AbortSignal): ConnectError {
  const reason: unknown = signal.reason;
  return reason instanceof ConnectError ? reason : new ConnectError("the client canceled the call", Code.Canceled);
}

/** Map any error to a ConnectError; unknown errors become INTERNAL without their text. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof InvalidArgumentError) return new ConnectError(err.message, Code.InvalidArgument);
  if (err instanceof TaskNotFoundError) return new ConnectError(err.message, Code.NotFound);
  if (err instanceof ScheduleNotFoundError) return new ConnectError(err.message, Code.NotFound);
  if (err instanceof ScheduleExistsError) return new ConnectError(err.message, Code.AlreadyExists);
  if (err instanceof HandlerNotFoundError) return new ConnectError(err.message, Code.NotFound);
  if (err instanceof StoreUnavailableError || err instanceof ServerShuttingDownError) {
    return new ConnectError(err.message, Code.Unavailable);
  }
  if (err instanceof WaitTimeoutError) return new ConnectError(err.message, Code.DeadlineExceeded);
  if (err instanceof FailedPreconditionError) return new ConnectError(err.message, Code.FailedPrecondition);
  if (err instanceof UnauthenticatedError) return new ConnectError(err.message, Code.Unauthenticated);
  if (err instanceof PermissionDeniedError) return new ConnectError(err.message, Code.PermissionDenied);
  if (err instanceof QueueFullError || err instanceof LimitError || err instanceof RedisFullError) {
    return new ConnectError(err.message, Code.ResourceExhausted);
  }
  if (err instanceof IdempotencyKeyReusedError) return new ConnectError(err.message, Code.AlreadyExists);
  return new ConnectError("internal error", Code.Internal);
}

/** The original framework's `stat` for an error raised while serving a legacy URL. */
export function legacyStat(err: unknown): string {
  if (err instanceof InvalidArgumentError || err instanceof HandlerNotFoundError) return "ERR_BAD_PARAMS";
  if (isBadParamsError(err)) return "ERR_BAD_PARAMS";
  if (err instanceof TaskNotFoundError) return "ERR_MSG_NOT_EXIST";
  if (err instanceof ScheduleNotFoundError) return "ERR_NOT_FOUND";
  if (err instanceof ScheduleExistsError) return "ERR_ALREADY_EXISTS";
  if (err instanceof StoreUnavailableError) return "ERR_REDIS_UNAVAILABLE";
  if (err instanceof RedisFullError) return "ERR_REDIS_FULL";
  if (err instanceof IdempotencyKeyReusedError) return "ERR_IDEMPOTENCY_KEY_REUSED";
  if (err instanceof QueueFullError) return "ERR_QUEUE_FULL";
  if (err instanceof LimitError) return "ERR_LIMIT";
  if (err instanceof FailedPreconditionError) return "ERR_BAD_STATE";
  if (err instanceof UnauthenticatedError) return "ERR_UNAUTHENTICATED";
  if (err instanceof PermissionDeniedError) return "ERR_PERMISSION_DENIED";
  return "ERR_SERVER_EXCEPTION";
}

/**
 * The HTTP status of a JSON answer (legacy URLs, `/metrics`) for an error: 401 without a valid
 * token, 403 for a token that does not cover the request, `otherwise` for the rest (the legacy
 * bridge answers 200 with the error's stat, as the original did).
 */
export function httpStatusOf(err: unknown, otherwise: number): number {
  if (err instanceof UnauthenticatedError) return 401;
  if (err instanceof PermissionDeniedError) return 403;
  return otherwise;
}

/** True for errors a caller caused or expects (not worth a stack trace in the log). */
export function isExpected(err: unknown): boolean {
  return err instanceof BaiChuanError || err instanceof ConnectError;
}

/**
 * Mask what reveals the server's insides in an error message: stack frames, file URLs and paths
 * of source files (`/srv/app/lib/db.js:12:5`, `node_modules/...`). Handler paths such as
 * `/demo_api/ping` are left alone.
 */
export function publicMessage(message: string): string {
  return message
    .split("\n")
    .filter((line) => !/^\s+at /.test(line))
    .join("\n")
    .replace(/file:\/\/\S+/g, "<path>")
    .replace(/(?:[A-Za-z]:)?[\\/]?(?:[\w.@-]+[\\/])+[\w.@-]+\.(?:json|node|py|so|[cm]?[jt]s)\b(?::\d+){0,2}/g, "<path>")
    .replace(/(?:\/[\w.@-]+)*\/node_modules\/\S*/g, "<path>");
}
