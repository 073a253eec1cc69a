/**
 * A handler's flow limits before they reach Redis: the checks every entry point shares
 * (checkQueueLimits), the limits given in code (HandlerRegistry.register) and in a handler module's
 * `limits` export (loadDirectory), and the scripts' hold codes given to Lua.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/core/errors.js";
import { checkQueueLimits, MIN_RATE } from "../../src/core/validate.js";
import { HOLD, SCRIPTS } from "../../src/store/scripts.js";
import { HandlerRegistry } from "../../src/worker/handlers.js";

describe("checkQueueLimits", () => {
  it.each([
    [undefined, { ratePerSecond: 0, burst: 0, maxRunning: 0, maxRunningPerKey: 0 }],
    [{}, { ratePerSecond: 0, burst: 0, maxRunning: 0, maxRunningPerKey: 0 }],
    [{ ratePerSecond: 0.5 }, { ratePerSecond: 0.5, burst: 0, maxRunning: 0, maxRunningPerKey: 0 }],
    [
      { ratePerSecond: 1e6, burst: 1e6, maxRunning: 1e6, maxRunningPerKey: 1e6 },
      { ratePerSecond: 1e6, burst: 1e6, maxRunning: 1e6, maxRunningPerKey: 1e6 },
    ],
    [
      { ratePerSecond: MIN_RATE, maxRunning: 3 },
      { ratePerSecond: MIN_RATE, burst: 0, maxRunning: 3, maxRunningPerKey: 0 },
    ],
  ])("accepts %j as %j", (input, expected) => {
    expect(checkQueueLimits(input)).toEqual(expected);
  });

  it.each([
    [{ ratePerSecond: -1 }, /rate_per_second: must be a number from 0/],
    [{ ratePerSecond: Number.NaN }, /rate_per_second: must be a number/],
    [{ ratePerSecond: Number.POSITIVE_INFINITY }, /rate_per_second/],
    [{ ratePerSecond: 1_000_001 }, /rate_per_second: .*1000000/],
    [{ ratePerSecond: MIN_RATE / 2 }, /rate_per_second: must be 0 \(no limit\) or at least/],
    [{ ratePerSecond: "5" }, /rate_per_second: must be a number from 0 .*got "5"/],
    [{ burst: 1.5 }, /burst: must be a whole number/],
    [{ maxRunning: -2 }, /max_running: must be a whole number/],
    [{ maxRunningPerKey: 1_000_001 }, /max_running_per_key/],
    [{ rate: 5 }, /limits\.rate: is not a limit/],
    [[], /limits: must be an object of limits, got an array/],
    ["5/s", /limits: must be an object/],
  ])("refuses %j (%s), naming the field", (input, error) => {
    expect(() => checkQueueLimits(input)).toThrow(InvalidArgumentError);
    expect(() => checkQueueLimits(input)).toThrow(error);
  });
});

describe("limits given in code", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  function handlerDir(files: Record<string, string>): string {
    const dir = mkdtempSync(join(tmpdir(), "baichuan-flow-handlers-"));
    dirs.push(dir);
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return dir;
  }

  it("register() keeps only the limits given (the others are not written), and none without", () => {
    const registry = new HandlerRegistry();
    registry.register("/m/limited", () => 1, { limits: { maxRunning: 2, ratePerSecond: 0.25 } });
    registry.register("/m/free", () => 1);
    expect(registry.limitsOf("/m/limited")).toEqual({ maxRunning: 2, ratePerSecond: 0.25 });
    expect(registry.limitsOf("/m/free")).toBeUndefined();
  });

  it("register() refuses bad limits, naming the handler, and registers nothing", () => {
    const registry = new HandlerRegistry();
    expect(() => registry.register("/m/f", () => 1, { limits: { maxRunning: -1 } })).toThrow(
      /handler \/m\/f: bad limits: max_running/,
    );
    expect(registry.has("/m/f")).toBe(false);
  });

  it("a module's `limits` export gives its handlers' limits; it is not a handler itself", async () => {
    const registry = new HandlerRegistry();
    const loaded = await registry.loadDirectory(
      handlerDir({
        "mail.mjs": [
          "export function send() { return 1; }",
          "export function bounce() { return 2; }",
          "export const limits = { send: { ratePerSecond: 5, burst: 10 } };",
        ].join("\n"),
      }),
    );
    expect(loaded.sort()).toEqual(["/mail/bounce", "/mail/send"]);
    expect(registry.limitsOf("/mail/send")).toEqual({ ratePerSecond: 5, burst: 10 });
    expect(registry.limitsOf("/mail/bounce")).toBeUndefined();
  });

  it.each([
    {
      case: "limits for a handler the module lacks",
      text: "export function a() {}\nexport const limits = { b: { maxRunning: 1 } };",
      error: /mail.mjs: .*'b'.*not a handler/,
    },
    {
      case: "bad limits",
      text: "export function a() {}\nexport const limits = { a: { maxRunning: 0.5 } };",
      error: /mail.mjs: handler \/mail\/a: bad limits: max_running/,
    },
    {
      case: "a `limits` export that is no object",
      text: "export function a() {}\nexport const limits = 3;",
      error: /mail.mjs: the 'limits' export must be an object/,
    },
  ])("a module with $case fails to load, and nothing is registered", async ({ text, error }) => {
    const registry = new HandlerRegistry();
    await expect(registry.loadDirectory(handlerDir({ "mail.mjs": text }))).rejects.toThrow(error);
    expect(registry.names()).toEqual([]);
  });
});

describe("the scripts", () => {
  it("give Lua the hold codes TypeScript reads, and fetch.lua includes the limits library", () => {
    expect(SCRIPTS.fetch.lua).toContain(
      `local HOLD = {NONE = ${HOLD.NONE}, RATE = ${HOLD.RATE}, MAX_RUNNING = ${HOLD.MAX_RUNNING}, PAUSED = ${HOLD.PAUSED}}`,
    );
    expect(SCRIPTS.fetch.lua).toContain("local function allowance(");
    for (const name of ["finish", "sweep", "delete", "reclaim"] as const) {
      expect(SCRIPTS[name].lua, name).toContain("wake_if_running_limited(");
    }
  });
});
