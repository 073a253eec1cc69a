/**
 * Domain errors (core/errors.ts): their Connect codes, the legacy `stat` strings, which ones are
 * expected (no stack in the log), BadParamsError's brand, and how error messages are masked.
 * rpc.test.ts (this folder) checks the codes through the RPC layer.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  abortedCall,
  BadParamsError,
  BaiChuanError,
  FailedPreconditionError,
  HandlerNotFoundError,
  IdempotencyKeyReusedError,
  InvalidArgumentError,
  isBadParamsError,
  isExpected,
  LimitError,
  legacyStat,
  PermissionDeniedError,
  publicMessage,
  QueueFullError,
  RedisFullError,
  ServerShuttingDownError,
  StoreUnavailableError,
  TaskNotFoundError,
  toConnectError,
  UnauthenticatedError,
  WaitTimeoutError,
} from "../../src/core/errors.js";

const ID = "AC3C301A7CA516EAF0F1";

describe("codes and stats", () => {
  it.each([
    [new InvalidArgumentError("params", "bad"), Code.InvalidArgument, "ERR_BAD_PARAMS"],
    [new HandlerNotFoundError("/x/y"), Code.NotFound, "ERR_BAD_PARAMS"],
    [new TaskNotFoundError(ID), Code.NotFound, "ERR_MSG_NOT_EXIST"],
    [new StoreUnavailableError(), Code.Unavailable, "ERR_REDIS_UNAVAILABLE"],
    [new RedisFullError(), Code.ResourceExhausted, "ERR_REDIS_FULL"],
    [new IdempotencyKeyReusedError("k"), Code.AlreadyExists, "ERR_IDEMPOTENCY_KEY_REUSED"],
    [new QueueFullError("/x/y", 10), Code.ResourceExhausted, "ERR_QUEUE_FULL"],
    [new LimitError("max_watchers", "full"), Code.ResourceExhausted, "ERR_LIMIT"],
    [new FailedPreconditionError("ended"), Code.FailedPrecondition, "ERR_BAD_STATE"],
    [new UnauthenticatedError("who"), Code.Unauthenticated, "ERR_UNAUTHENTICATED"],
    [new PermissionDeniedError("no"), Code.PermissionDenied, "ERR_PERMISSION_DENIED"],
    [new ServerShuttingDownError(), Code.Unavailable, "ERR_SERVER_EXCEPTION"],
    [new WaitTimeoutError(ID, 5), Code.DeadlineExceeded, "ERR_SERVER_EXCEPTION"],
  ])("%s: %s / %s", (err, code, stat) => {
    const mapped = toConnectError(err);
    expect(mapped.code).toBe(code);
    expect(mapped.rawMessage).toBe(err.message);
    expect(legacyStat(err)).toBe(stat);
    expect(isExpected(err)).toBe(true);
  });

  it("a ConnectError is kept as it is", () => {
    const err = new ConnectError("as is", Code.Aborted);
    expect(toConnectError(err)).toBe(err);
    expect(isExpected(err)).toBe(true);
  });

  it.each([
    ["an Error", new Error("/srv/app/db.js:1 secret")],
    ["a TypeError", new TypeError("x is undefined")],
    ["a string", "text"],
    ["null", null],
    ["a bare BaiChuanError", new BaiChuanError("internal detail")],
  ])("anything else (%s) is INTERNAL 'internal error', without its text", (_case, err) => {
    const mapped = toConnectError(err);
    expect(mapped.code).toBe(Code.Internal);
    expect(mapped.rawMessage).toBe("internal error");
    expect(legacyStat(err)).toBe("ERR_SERVER_EXCEPTION");
  });

  it("unexpected errors are the ones worth a stack trace in the log", () => {
    expect(isExpected(new Error("bug"))).toBe(false);
    expect(isExpected("text")).toBe(false);
    expect(isExpected(undefined)).toBe(false);
  });

  it("messages say what happened, in BaiChuan's words", () => {
    expect(new InvalidArgumentError("params", "must be a JSON object").message).toBe("params: must be a JSON object");
    expect(new TaskNotFoundError(ID, true).message).toBe(`task ${ID} does not exist or is not one this token may see`);
    const unavailable = new StoreUnavailableError(new Error("connect ECONNREFUSED"), {
      detail: "no answer within 2000 ms",
      advice: "the task may have been created: retry with the same idempotency key to be safe",
      mayHaveApplied: true,
    });
    expect(unavailable.message).toBe(
      "Redis is unavailable (no answer within 2000 ms): the task may have been created: retry with the same idempotency key to be safe",
    );
    expect(unavailable.mayHaveApplied).toBe(true);
    expect((unavailable.cause as Error).message).toBe("connect ECONNREFUSED"); // for the log only
    expect(new StoreUnavailableError().mayHaveApplied).toBe(false);
  });
});

describe("BadParamsError's brand", () => {
  it("is recognised by its brand, from any copy of the package", () => {
    expect(isBadParamsError(new BadParamsError("x"))).toBe(true);
    const fromAnotherCopy = Object.assign(new Error("x"), { [Symbol.for("baichuan.BadParamsError")]: true });
    expect(isBadParamsError(fromAnotherCopy)).toBe(true);
    expect(legacyStat(fromAnotherCopy)).toBe("ERR_BAD_PARAMS");
  });

  it("is not a name or a look-alike", () => {
    const named = Object.assign(new Error("x"), { name: "BadParamsError" });
    for (const value of [named, { [Symbol.for("baichuan.BadParamsError")]: "yes" }, null, undefined, "BadParamsError", 1]) {
      expect(isBadParamsError(value)).toBe(false);
    }
  });

  it("a hostile value (a Proxy whose traps throw) is no BadParamsError, and does not throw", () => {
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error("trap");
        },
      },
    );
    expect(isBadParamsError(hostile)).toBe(false);
  });
});

describe("abortedCall", () => {
  it("a deadline's ConnectError is kept; any other abort is CANCELED", () => {
    const deadline = new ConnectError("the deadline passed", Code.DeadlineExceeded);
    expect(abortedCall(AbortSignal.abort(deadline))).toBe(deadline);
    const canceled = abortedCall(AbortSignal.abort());
    expect([canceled.code, canceled.rawMessage]).toEqual([Code.Canceled, "the client canceled the call"]);
  });
});

describe("publicMessage", () => {
  it.each([
    ["a stack", "boom\n    at run (/srv/app/lib/db.js:12:5)\n    at next (node:internal)", "boom"],
    ["a file URL", "failed in file:///srv/app/lib/db.mjs", "failed in <path>"],
    ["a source path with line and column", "at /srv/app/lib/db.js:12:5 it broke", "at <path> it broke"],
    ["a relative source path", "see lib/util/x.ts", "see <path>"],
    ["a Windows path", "C:\\app\\lib\\db.js failed", "<path> failed"],
    ["node_modules", "in /srv/app/node_modules/ioredis/built/x.js", "in <path>"],
  ])("masks %s", (_case, message, expected) => {
    expect(publicMessage(message)).toBe(expected);
  });

  it("leaves handler paths, URLs' hosts and plain text alone", () => {
    for (const text of ["handler /demo_api/ping failed", "x must be a number", "GET /baichuan/task_get", "1.5 s"]) {
      expect(publicMessage(text)).toBe(text);
    }
  });
});
