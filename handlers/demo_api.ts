/**
 * Demo handlers: `/demo_api/ping`, `/demo_api/hello`, `/demo_api/echo`, `/demo_api/sleep`,
 * `/demo_api/fail`. Each exported function of a module in handlers/ is a handler.
 */

import type { JsonObject } from "../src/domain.js";
import { BadParamsError } from "../src/errors.js";
import type { HandlerContext } from "../src/handlers.js";

/** Answers at once. */
export function ping(): { pong: true } {
  return { pong: true };
}

/** Greets `params.name` (a string, default "world"). */
export function hello(params: JsonObject): { message: string } {
  const name = params.name ?? "world";
  if (typeof name !== "string") throw new BadParamsError("name must be a string");
  return { message: `hello, ${name}` };
}

/** Returns its params. */
export function echo(params: JsonObject): JsonObject {
  return params;
}

/** Waits `params.seconds` (fractions allowed, at most 3600), or until the task is aborted. */
export async function sleep(params: JsonObject, ctx: HandlerContext): Promise<{ slept: number }> {
  const seconds = params.seconds ?? 1;
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0 || seconds > 3600) {
    throw new BadParamsError("seconds must be a number from 0 to 3600");
  }
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    ctx.signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(ctx.signal.reason);
      },
      { once: true },
    );
  });
  return { slept: seconds };
}

/** Always fails, with `params.message` (default "failed on purpose"). */
export function fail(params: JsonObject): never {
  throw new Error(typeof params.message === "string" ? params.message : "failed on purpose");
}
