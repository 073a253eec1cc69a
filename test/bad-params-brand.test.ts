/**
 * A handler's BadParamsError is recognised by its brand, not by `instanceof`: a handler may import
 * another copy of the package than the server runs (the built `baichuan` in dist/ while the server
 * runs the sources through tsx, or two installed versions). Here the other copy is a second
 * evaluation of the same module, and a class of the handler's own that carries the brand. Through
 * the worker (the task fails ERR_BAD_PARAMS and is not retried) and a synchronous call over the
 * real listener (ERR_BAD_PARAMS).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BadParamsError } from "../src/core/errors.js";
import type { Handler } from "../src/worker/handlers.js";
import { postJson, startService, type TestService } from "./support/service.js";

const BRAND: unique symbol = Symbol.for("baichuan.BadParamsError");

/** An error class of the handler's own, branded as the README says. */
class OwnBadParams extends Error {
  readonly [BRAND] = true;
}

let svc: TestService;
let handlers: Record<string, Handler>;

beforeAll(async () => {
  // A second copy of the module that defines BadParamsError (the server uses the one imported
  // above): another class, so `instanceof` fails.
  vi.resetModules();
  const other = await import("../src/core/errors.js");
  expect(new other.BadParamsError("x")).not.toBeInstanceOf(BadParamsError);
  handlers = {
    "/brand/other_copy": () => {
      throw new other.BadParamsError("n must be a number (another copy)");
    },
    "/brand/own_class": async () => {
      throw new OwnBadParams("n must be a number (own class)");
    },
    "/brand/named_only": () => {
      const err = new Error("only named like it");
      err.name = "BadParamsError"; // no brand: an ordinary failure
      throw err;
    },
  };
  svc = await startService({ demo: false, handlers, worker: { retryBaseMs: 20 } });
});
afterAll(async () => {
  await svc?.close();
});

describe("a BadParamsError from another copy of the package", () => {
  it.each([
    ["/brand/other_copy", "ERR_BAD_PARAMS", "n must be a number (another copy)"],
    ["/brand/own_class", "ERR_BAD_PARAMS", "n must be a number (own class)"],
  ])("%s: the task fails %s at its first attempt, not retried", async (handler, code, message) => {
    const { id } = await svc.bc.enqueue(handler, {}, { maxAttempts: 3 });
    const task = await svc.bc.wait(id, { timeoutMs: 20_000 });
    expect(task).toMatchObject({ status: "failed", errorCode: code, error: message, attempts: 1 });
  });

  it("an error only named BadParamsError is an ordinary failure (retried)", async () => {
    const { id } = await svc.bc.enqueue("/brand/named_only", {}, { maxAttempts: 2 });
    const task = await svc.bc.wait(id, { timeoutMs: 20_000 });
    expect(task).toMatchObject({ status: "failed", errorCode: "ERR_SERVER_EXCEPTION", attempts: 2 });
  });

  it.each([
    ["/brand/other_copy", "n must be a number (another copy)"],
    ["/brand/own_class", "n must be a number (own class)"],
  ])("a synchronous call of %s answers ERR_BAD_PARAMS", async (path, message) => {
    const { status, json } = await postJson(svc.baseUrl, path, {});
    expect(status).toBe(200);
    expect(json).toEqual({ stat: "ERR_BAD_PARAMS", error: message });
  });
});
