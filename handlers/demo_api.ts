/**
 * Demo handlers: `/demo_api/ping`, `/demo_api/hello`, `/demo_api/echo`, `/demo_api/sleep`,
 * `/demo_api/steps`, `/demo_api/fail`. Each exported function of a module in handlers/ is a handler.
 */

// The package's entry, as a service depending on this package imports it: `from "baichuan"`.
import { BadParamsError, type HandlerContext, type JsonObject } from "../src/index.js";

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

/**
 * Works through `params.steps` steps (default 5, at most 100) of `params.ms` milliseconds each
 * (default 200, at most 10,000), reporting progress after each; stops when the task is aborted.
 */
export async function steps(params: JsonObject, ctx: HandlerContext): Promise<{ steps: number }> {
  const count = params.steps ?? 5;
  const ms = params.ms ?? 200;
  if (!Number.isInteger(count) || (count as number) < 1 || (count as number) > 100) {
    throw new BadParamsError("steps must be an integer from 1 to 100");
  }
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0 || ms > 10_000)
    throw new BadParamsError("ms must be a number from 0 to 10000");
  const n = count as number;
  for (let i = 1; i <= n; i++) {
    await sleep({ seconds: ms / 1000 }, ctx);
    await ctx.progress((100 * i) / n, `step ${i} of ${n}`);
  }
  return { steps: n };
}

/** Always fails, with `params.message` (default "failed on purpose"). */
export function fail(params: JsonObject): never {
  throw new Error(typeof params.message === "string" ? params.message : "failed on purpose");
}
