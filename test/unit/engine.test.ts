/**
 * The library (the BaiChuan class) before Redis: an instance made with `new` does not connect, and
 * every call with malformed input throws InvalidArgumentError without a Redis lookup (the unit
 * tier's guard would refuse the connection). And the handler registry: names, duplicates, and
 * loading a directory of modules. (library.test.ts and worker.test.ts run the same API against a
 * real redis-server.)
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/core/errors.js";
import { BaiChuan } from "../../src/engine/baichuan.js";
import { type HandlerContext, HandlerRegistry } from "../../src/worker/handlers.js";

const bc = new BaiChuan({ redis: "redis://127.0.0.1:1/0", limits: { maxParamsBytes: 100 } });
afterAll(async () => {
  await bc.close();
});

describe("malformed input never reaches Redis", () => {
  it.each([["not-an-id"], ["ABC"], ["0000ABCDEF0123456789FF"], ["ZZZZABCDEF0123456789"], [""]])(
    "a malformed id %j: InvalidArgumentError from every call that takes an id",
    async (bad) => {
      await expect(bc.getTask(bad)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(bc.exists(bad)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(bc.cancel(bad)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(bc.delete(bad)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(bc.retry(bad)).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(bc.wait(bad)).rejects.toBeInstanceOf(InvalidArgumentError);
      expect(() => bc.watch(bad)).toThrow(InvalidArgumentError);
    },
  );

  it.each([
    ["a malformed handler", "nope", {}, {}, "handler"],
    ["params that are no object", "/a/b", [1], {}, "params"],
    ["params over the instance's size limit", "/a/b", { s: "x".repeat(100) }, {}, "params"],
    ["a timeout of 0", "/a/b", {}, { timeout: 0 }, "timeout"],
    ["an unknown priority", "/a/b", {}, { priority: 3 }, "priority"],
  ])("enqueue with %s: InvalidArgumentError naming %s", async (_case, handler, params, options, field) => {
    const err = await bc.enqueue(handler, params, options as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).field).toBe(field);
  });

  it("enqueue refuses a request id that is no sane token", async () => {
    const err = await bc.enqueue("/a/b", {}, {}, { requestId: "has spaces" }).catch((e: unknown) => e);
    expect((err as InvalidArgumentError).field).toBe("request_id");
  });

  it("enqueueMany answers each bad item with its own error, without a Redis call", async () => {
    const results = await bc.enqueueMany([
      { handler: "nope" },
      { handler: "/a/b", params: "x" },
      { handler: "/a/b", options: { maxAttempts: 0 } },
    ]);
    expect(results.map((r) => (r instanceof InvalidArgumentError ? r.field : r))).toEqual(["handler", "params", "max_attempts"]);
  });

  it("an idempotency TTL that is not a whole number of seconds, at least 1, is refused at construction", () => {
    for (const idempotencyTtl of [0, 1.5, -1, Number.NaN]) {
      expect(() => new BaiChuan({ redis: "redis://127.0.0.1:1/0", idempotencyTtl })).toThrow(/idempotencyTtl: must be a whole/);
    }
  });
});

describe("handler registry", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  function handlerDir(files: Record<string, string>): string {
    const dir = mkdtempSync(join(tmpdir(), "baichuan-handlers-"));
    dirs.push(dir);
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return dir;
  }

  it("loads each exported function of a module as /<module>/<export>, skipping the rest", async () => {
    const dir = handlerDir({
      "maths.mjs": [
        "export function add(p) { return { sum: p.a + p.b }; }",
        "export async function neg(p) { return -p.x; }",
        "export const notAFunction = 42;",
        "export default function ignored() {}",
      ].join("\n"),
      "tools.mjs": "export const upper = (p) => String(p.s).toUpperCase();",
      "_private.mjs": "export function hidden() {}",
      "maths.test.mjs": "export function alsoHidden() {}",
      "README.md": "not a module",
    });
    const registry = new HandlerRegistry();
    const loaded = await registry.loadDirectory(dir);
    expect(loaded.sort()).toEqual(["/maths/add", "/maths/neg", "/tools/upper"]);
    expect(registry.names()).toEqual(["/maths/add", "/maths/neg", "/tools/upper"]);
    expect(await registry.get("/maths/add")!({ a: 2, b: 3 }, {} as HandlerContext)).toEqual({ sum: 5 });
  });

  it.each([
    {
      case: "a module whose name is not a valid handler segment",
      files: { "bad name.mjs": "export function go() {}" },
      error: /invalid handler name.*bad name/,
    },
    {
      case: "two modules giving the same handler (a.mjs and a.js)",
      files: { "a.mjs": "export function x() { return 1; }", "a.js": "export function x() { return 2; }" },
      error: /\/a\/x.*(twice|duplicate)/,
    },
  ])("fails to load $case", async ({ files, error }) => {
    const registry = new HandlerRegistry();
    await expect(registry.loadDirectory(handlerDir(files))).rejects.toThrow(error);
  });

  it.each([
    { case: "the same name twice", name: "/m/f", twice: true, error: /\/m\/f.*twice/ },
    { case: "an invalid name", name: "m/f", twice: false, error: /invalid handler name/ },
    { case: "a name with a space", name: "/m/f g", twice: false, error: /invalid handler name/ },
  ])("register() throws for $case", ({ name, twice, error }) => {
    const registry = new HandlerRegistry();
    if (twice) registry.register(name, () => 1);
    expect(() => registry.register(name, () => 2)).toThrow(error);
  });

  it("BaiChuan.register() throws on a duplicate too, keeping the first", async () => {
    const local = new BaiChuan({ redis: "redis://127.0.0.1:1/0" });
    try {
      local.register("/dup/f", () => 1);
      expect(() => local.register("/dup/f", () => 2)).toThrow(/twice/);
      expect(local.handlers.get("/dup/f")!({}, {} as HandlerContext)).toBe(1);
    } finally {
      await local.close();
    }
  });
});
