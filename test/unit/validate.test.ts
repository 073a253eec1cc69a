/**
 * The checks of everything a caller sends (core/validate.ts): handler names, task ids in their
 * forms, params limits, task options, idempotency keys, results, and the settings' booleans. Each
 * refusal is an InvalidArgumentError naming the field.
 */
import { describe, expect, it } from "vitest";
import { LIMITS } from "../../src/core/domain.js";
import { InvalidArgumentError } from "../../src/core/errors.js";
import {
  checkHandlerName,
  checkIdempotencyKey,
  checkOptions,
  checkParams,
  checkResult,
  checkTaskId,
  DEFAULT_LIMITS,
  describeValue,
  isHandlerName,
  legacyTaskId,
  MAX_LEGACY_TASK_ID_LENGTH,
  MAX_PARAMS_DEPTH,
  parseBool,
} from "../../src/core/validate.js";

/** The InvalidArgumentError `fn` throws (fails the test when it throws nothing or something else). */
function refusal(fn: () => unknown): InvalidArgumentError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    return err as InvalidArgumentError;
  }
  throw new Error("expected an InvalidArgumentError, nothing was thrown");
}

/** Params nested `depth` levels deep (objects). */
function nested(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = {};
  for (let i = 1; i < depth; i++) value = { v: value };
  return value;
}

describe("checkHandlerName", () => {
  it.each([
    "/demo_api/ping",
    "/a/b",
    "/_x/y",
    "/m.v2/f-1",
    "/0/9",
    `/${"m".repeat(62)}/${"f".repeat(62)}`, // 127 characters: within the default 128
  ])("accepts %s and returns it", (name) => {
    expect(checkHandlerName(name)).toBe(name);
    expect(isHandlerName(name)).toBe(true);
  });

  it.each([
    ["no leading slash", "demo_api/ping"],
    ["one segment", "/ping"],
    ["three segments", "/a/b/c"],
    ["an empty segment", "/a//b"],
    ["a trailing slash", "/a/b/"],
    ["a space", "/demo_api/pi ng"],
    ["a segment starting with '.'", "/.a/b"],
    ["a segment starting with '-'", "/a/-b"],
    ["a non-ASCII letter", "/démo/ping"],
    ["a NUL", "/a/b\u0000"],
    ["a query", "/a/b?x=1"],
  ])("refuses %s (%j)", (_case, name) => {
    const err = refusal(() => checkHandlerName(name));
    expect(err.field).toBe("handler");
    expect(err.message).toMatch(/^handler: .* is not a handler path: expected \/module\/function/);
    expect(isHandlerName(name)).toBe(false);
  });

  it.each([[undefined], [null], [""], [42], [{}]])("refuses %j as missing", (value) => {
    expect(refusal(() => checkHandlerName(value)).message).toBe("handler: is required: a handler path such as /demo_api/ping");
  });

  it("refuses a name over the length limit, saying both lengths, before looking at its shape", () => {
    const long = `/${"m".repeat(70)}/${"f".repeat(70)}`; // 142 characters, a valid shape
    expect(refusal(() => checkHandlerName(long)).message).toBe("handler: is 142 characters long; the limit is 128");
    expect(checkHandlerName(long, 202)).toBe(long);
    expect(refusal(() => checkHandlerName("/a/bcd", 5)).message).toBe("handler: is 6 characters long; the limit is 5");
  });

  it("a segment may be 100 characters, not 101", () => {
    expect(checkHandlerName(`/${"m".repeat(100)}/f`, 202)).toBeDefined();
    expect(() => checkHandlerName(`/${"m".repeat(101)}/f`, 202)).toThrow(InvalidArgumentError);
  });

  it("names the field it was given", () => {
    expect(refusal(() => checkHandlerName("nope", 128, "tasks[3].handler")).field).toBe("tasks[3].handler");
  });

  it("shows at most 40 characters of a bad value", () => {
    const err = refusal(() => checkHandlerName(`x${"y".repeat(100)}`, 202));
    expect(err.message).toContain(`"x${"y".repeat(39)}…"`);
    expect(err.message).not.toContain("y".repeat(41));
  });
});

describe("task ids", () => {
  it.each([
    ["20 hex characters, upper case", "AC3C301A7CA516EAF0F1", "AC3C301A7CA516EAF0F1"],
    ["20 hex characters, lower case (returned upper case)", "ac3c301a7ca516eaf0f1", "AC3C301A7CA516EAF0F1"],
    ["the original framework's 16 hex characters", "AC3C301A7CA516EA", "AC3C301A7CA516EA"],
    ["16 hex characters, mixed case", "Ac3c301A7cA516eA", "AC3C301A7CA516EA"],
  ])("checkTaskId accepts %s", (_case, id, expected) => {
    expect(checkTaskId(id)).toBe(expected);
    expect(legacyTaskId(id)).toBe(expected);
  });

  it.each([
    ["15 hex characters", "AC3C301A7CA516E"],
    ["17 hex characters", "AC3C301A7CA516EAF"],
    ["21 hex characters", "AC3C301A7CA516EAF0F12"],
    ["22 hex characters", "0000ABCDEF0123456789FF"],
    ["a non-hex character", "ZZZZABCDEF0123456789"],
    ["a word", "nope"],
    ["spaces around it", " AC3C301A7CA516EAF0F1 "],
  ])("checkTaskId refuses %s", (_case, id) => {
    const err = refusal(() => checkTaskId(id));
    expect(err.field).toBe("task_id");
    expect(err.message).toMatch(/^task_id: ".*" is not a task id: expected 20 hex characters$/);
  });

  it.each([[undefined], [null], [""], [123], [["AC3C301A7CA516EAF0F1"]]])("checkTaskId refuses %j as missing", (value) => {
    expect(refusal(() => checkTaskId(value)).message).toBe("task_id: is required: the id CreateTask returned");
  });

  it("legacyTaskId answers undefined (no task has it) for any other string of 1 to 256 characters", () => {
    for (const id of ["nope", "AC3C301A7CA516E", "x".repeat(MAX_LEGACY_TASK_ID_LENGTH), "../../etc/passwd", "百川"]) {
      expect(legacyTaskId(id)).toBeUndefined();
    }
  });

  it("legacyTaskId refuses a missing, empty, non-string or longer value", () => {
    for (const value of [undefined, null, "", 7, {}]) {
      expect(refusal(() => legacyTaskId(value)).message).toBe("task_id: is required: the id task_create returned");
    }
    expect(refusal(() => legacyTaskId("x".repeat(257))).message).toBe("task_id: is 257 characters long; the limit is 256");
  });
});

describe("checkParams", () => {
  it("takes an object and returns it with its JSON text", () => {
    expect(checkParams({ a: 1, b: ["x"] })).toEqual({ params: { a: 1, b: ["x"] }, json: '{"a":1,"b":["x"]}' });
  });

  it("takes null or undefined as no params", () => {
    expect(checkParams(undefined)).toEqual({ params: {}, json: "{}" });
    expect(checkParams(null)).toEqual({ params: {}, json: "{}" });
  });

  it.each([
    ["an array", [1, 2], "an array"],
    ["a string", "x", "string"],
    ["a number", 5, "number"],
    ["a boolean", true, "boolean"],
  ])("refuses %s", (_case, value, got) => {
    const err = refusal(() => checkParams(value));
    expect(err.field).toBe("params");
    expect(err.message).toBe(`params: must be a JSON object, got ${got}`);
  });

  it(`allows ${MAX_PARAMS_DEPTH} levels of nesting by default, not ${MAX_PARAMS_DEPTH + 1}`, () => {
    expect(() => checkParams(nested(MAX_PARAMS_DEPTH))).not.toThrow();
    expect(refusal(() => checkParams(nested(MAX_PARAMS_DEPTH + 1))).message).toBe(
      `params: is nested deeper than ${MAX_PARAMS_DEPTH} levels`,
    );
  });

  it("counts arrays as levels too, and checks depth without recursion (200,000 levels)", () => {
    expect(() => checkParams({ a: [[[]]] }, { maxParamsBytes: 100, maxParamsDepth: 4 })).not.toThrow();
    expect(() => checkParams({ a: [[[[]]]] }, { maxParamsBytes: 100, maxParamsDepth: 4 })).toThrow(/deeper than 4/);
    let deep: unknown = {};
    for (let i = 0; i < 200_000; i++) deep = [deep];
    expect(refusal(() => checkParams({ deep })).message).toMatch(/deeper than 32 levels/);
  });

  it("limits the JSON size in bytes (UTF-8), saying both sizes", () => {
    const limits = { maxParamsBytes: 20, maxParamsDepth: MAX_PARAMS_DEPTH };
    expect(() => checkParams({ s: "x".repeat(12) }, limits)).not.toThrow(); // {"s":"xxxxxxxxxxxx"} = 20 bytes
    expect(refusal(() => checkParams({ s: "x".repeat(13) }, limits)).message).toBe(
      "params: is 21 bytes as JSON; the limit is 20",
    );
    expect(refusal(() => checkParams({ s: "é".repeat(7) }, limits)).message).toBe("params: is 22 bytes as JSON; the limit is 20");
  });

  it("has a 1 MiB default size limit", () => {
    expect(DEFAULT_LIMITS.maxParamsBytes).toBe(1024 * 1024);
    expect(() => checkParams({ s: "x".repeat(1024 * 1024 - 8) })).not.toThrow();
    expect(() => checkParams({ s: "x".repeat(1024 * 1024 - 7) })).toThrow(/the limit is 1048576/);
  });
});

describe("checkOptions", () => {
  it("returns only the options given", () => {
    expect(checkOptions(undefined)).toEqual({});
    expect(checkOptions({})).toEqual({});
    expect(
      checkOptions({ timeout: 5, resultTtl: 60, failureTtl: 0.001, ttl: 30, maxAttempts: 3, priority: -1, unique: true }),
    ).toEqual({ timeout: 5, resultTtl: 60, failureTtl: 0.001, ttl: 30, maxAttempts: 3, priority: -1, unique: true });
  });

  it.each([
    ["timeout", { timeout: 0 }, "timeout: must be at least 0.001 seconds (1 ms), got 0"],
    ["timeout", { timeout: 0.0009 }, "timeout: must be at least 0.001 seconds (1 ms), got 0.0009"],
    ["timeout", { timeout: -1 }, "timeout: must be at least 0.001 seconds (1 ms), got -1"],
    ["timeout", { timeout: LIMITS.maxTimeout + 1 }, `timeout: must be at most ${LIMITS.maxTimeout} seconds, got 604801`],
    ["timeout", { timeout: Number.NaN }, "timeout: must be a number of seconds, got NaN"],
    ["timeout", { timeout: Number.POSITIVE_INFINITY }, "timeout: must be a number of seconds, got Infinity"],
    ["result_ttl", { resultTtl: LIMITS.maxTtl + 1 }, `result_ttl: must be at most ${LIMITS.maxTtl} seconds`],
    ["failure_ttl", { failureTtl: 0 }, "failure_ttl: must be at least 0.001 seconds"],
    ["ttl", { ttl: "30" }, 'ttl: must be a number of seconds, got "30"'],
    ["max_attempts", { maxAttempts: 0 }, "max_attempts: must be a whole number from 1 to 100, got 0"],
    ["max_attempts", { maxAttempts: 101 }, "max_attempts: must be a whole number from 1 to 100, got 101"],
    ["max_attempts", { maxAttempts: 1.5 }, "max_attempts: must be a whole number from 1 to 100, got 1.5"],
    ["delay", { delay: 1, startAt: Date.now() }, "delay: give delay or start_at, not both"],
    ["delay", { delay: 0 }, "delay: must be at least 0.001 seconds"],
    ["start_at", { startAt: -1 }, "start_at: must be a time (epoch ms or a Date), got -1"],
    ["start_at", { startAt: new Date(Number.NaN) }, "start_at: must be a time (epoch ms or a Date), got an object"],
    ["start_at", { startAt: Date.now() + (LIMITS.maxTtl + 60) * 1000 }, "start_at: must be at most 1 year ahead"],
    ["priority", { priority: 2 }, "priority: must be 1 (high), 0 (normal) or -1 (low), got 2"],
    ["unique", { unique: "yes" }, "unique: must be true or false"],
    ["idempotency_key", { idempotencyKey: "" }, "idempotency_key: must be 1 to 128 characters long, got 0"],
    ["concurrency_key", { concurrencyKey: "" }, "concurrency_key: must be 1 to 128 characters long, got 0"],
    ["concurrency_key", { concurrencyKey: "x".repeat(129) }, "concurrency_key: must be 1 to 128 characters long, got 129"],
    ["concurrency_key", { concurrencyKey: " customer" }, "concurrency_key: must be printable ASCII characters"],
    ["concurrency_key", { concurrencyKey: "customer\n" }, "concurrency_key: must be printable ASCII characters"],
    ["concurrency_key", { concurrencyKey: 42 }, "concurrency_key: must be a string, got number"],
  ])("refuses a bad %s: %j", (field, options, message) => {
    const err = refusal(() => checkOptions(options as never));
    expect(err.field).toBe(field);
    expect(err.message).toContain(message);
  });

  it("keeps a concurrency key of 1 to 128 printable ASCII characters", () => {
    for (const key of ["c", "customer:42", "a b", "x".repeat(128)]) {
      expect(checkOptions({ concurrencyKey: key })).toEqual({ concurrencyKey: key });
    }
  });

  it("takes start_at as epoch ms or as a Date", () => {
    const at = Date.now() + 60_000;
    expect(checkOptions({ startAt: at })).toEqual({ startAt: at });
    expect(checkOptions({ startAt: new Date(at) })).toEqual({ startAt: at });
    expect(checkOptions({ delay: 2.5 })).toEqual({ delay: 2.5 });
  });
});

describe("checkIdempotencyKey", () => {
  it.each(["k", "order-42", "a b", "~!@#$%^&*()", "x".repeat(128)])("accepts %j", (key) => {
    expect(checkIdempotencyKey(key)).toBe(key);
  });

  it.each([
    ["", "must be 1 to 128 characters long, got 0"],
    ["x".repeat(129), "must be 1 to 128 characters long, got 129"],
    [" lead", "must be printable ASCII characters"],
    ["trail ", "must be printable ASCII characters"],
    ["tab\there", "must be printable ASCII characters"],
    ["é", "must be printable ASCII characters"],
    [null, "must be a string, got null"],
    [["k"], "must be a string, got an array"],
    [7, "must be a string, got number"],
  ])("refuses %j", (key, message) => {
    expect(refusal(() => checkIdempotencyKey(key)).message).toContain(`idempotency_key: ${message}`);
  });
});

describe("checkResult", () => {
  const limits = { maxBytes: 30, maxDepth: 3 };

  it("returns the JSON text; undefined, a function and a symbol are null", () => {
    expect(checkResult({ n: 1 }, limits)).toBe('{"n":1}');
    expect(checkResult(undefined, limits)).toBe("null");
    expect(checkResult(() => 1, limits)).toBe("null");
    expect(checkResult(Symbol("s"), limits)).toBe("null");
    expect(checkResult({ toJSON: () => "as text" }, limits)).toBe('"as text"');
  });

  it.each([
    ["too large", { s: "x".repeat(30) }, "result: is 38 bytes as JSON; the limit is 30"],
    ["too deep", { a: { b: { c: {} } } }, "result: is nested deeper than 3 levels"],
    ["a BigInt", { n: 1n }, "result: is not JSON: Do not know how to serialize a BigInt"],
    [
      "a throwing toJSON",
      {
        toJSON() {
          throw new Error("no\nsecond line");
        },
      },
      "result: is not JSON: no",
    ],
  ])("refuses a result %s", (_case, value, message) => {
    expect(refusal(() => checkResult(value, limits)).message).toBe(message);
  });

  it("refuses a circular result", () => {
    const a: Record<string, unknown> = {};
    a.self = a;
    expect(refusal(() => checkResult(a, { maxBytes: 1000, maxDepth: 1000 })).message).toMatch(
      /^result: is not JSON: .*circular/i,
    );
  });
});

describe("parseBool (settings)", () => {
  it.each(["1", "true", "yes", "on", "TRUE", "Yes", "ON", " on "])("%j is true", (text) => {
    expect(parseBool(text)).toBe(true);
  });

  it.each(["0", "false", "no", "off", "FALSE", "No", "OFF", "\toff\n"])("%j is false", (text) => {
    expect(parseBool(text)).toBe(false);
  });

  it.each(["", "maybe", "2", "y", "n", "enabled", "-1", "tru", "1.0"])("%j is neither", (text) => {
    expect(parseBool(text)).toBeUndefined();
  });
});

describe("describeValue", () => {
  it("renders a bad value briefly and safely", () => {
    expect(describeValue("abc")).toBe('"abc"');
    expect(describeValue("a\nb")).toBe('"a\\nb"');
    expect(describeValue(null)).toBe("null");
    expect(describeValue([1])).toBe("an array");
    expect(describeValue({ secret: "x" })).toBe("an object");
    expect(describeValue(1.5)).toBe("1.5");
    expect(describeValue(undefined)).toBe("undefined");
  });
});
