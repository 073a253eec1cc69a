/**
 * Checks of everything a caller sends, shared by the RPC service, the legacy bridge and the
 * library. Each check throws InvalidArgumentError naming the field and saying what is expected;
 * nothing reaches Redis before it passes.
 */

import {
  isObject,
  type JsonObject,
  LIMITS,
  MAX_QUEUE_LIMIT,
  type QueueLimits,
  TASK_ID_LENGTH,
  type TaskOptions,
} from "./domain.js";
import { InvalidArgumentError } from "./errors.js";

/** `/module/function`: two segments of letters, digits, `_`, `-`, `.`; at most 100 characters each. */
const HANDLER_RE = /^\/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/;

/** A task id: 20 hex characters; or the original framework's 16, which no task here has (see checkTaskId). */
const TASK_ID_RE = new RegExp(`^(?:[0-9A-Fa-f]{${TASK_ID_LENGTH}}|[0-9A-Fa-f]{16})$`);

/** Longest task id the legacy URLs look up (longer ones are refused). */
export const MAX_LEGACY_TASK_ID_LENGTH = 256;

/**
 * Deepest nesting of arrays and objects allowed in params. Each level is two protobuf messages
 * (Struct and Value) and protobuf decoders stop at 100, so deeper params could be stored but not
 * read back by standard binary clients.
 */
export const MAX_PARAMS_DEPTH = 32;

/** Limits on what callers send; every one configurable (see config.ts). */
export interface Limits {
  /** Largest params, as JSON bytes (default: 1 MiB). */
  maxParamsBytes: number;
  /** Deepest nesting of params (default and ceiling: 32). */
  maxParamsDepth: number;
  /** Longest handler path, in characters (default: 128; the shape allows at most 202). */
  maxHandlerLength: number;
  /** Most tasks one handler's queue may hold; 0 for no limit (default: 1,000,000). */
  maxQueued: number;
  /** Largest result a handler may return, as JSON bytes (default: 1 MiB, as params). */
  maxResultBytes: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxParamsBytes: 1024 * 1024,
  maxParamsDepth: MAX_PARAMS_DEPTH,
  maxHandlerLength: 128,
  maxQueued: 1_000_000,
  maxResultBytes: 1024 * 1024,
};

export function isHandlerName(name: string): boolean {
  return HANDLER_RE.test(name);
}

export function checkHandlerName(value: unknown, maxLength = DEFAULT_LIMITS.maxHandlerLength, field = "handler"): string {
  if (typeof value !== "string" || value === "") {
    throw new InvalidArgumentError(field, "is required: a handler path such as /demo_api/ping");
  }
  if (value.length > maxLength) {
    throw new InvalidArgumentError(field, `is ${value.length} characters long; the limit is ${maxLength}`);
  }
  if (!HANDLER_RE.test(value)) {
    throw new InvalidArgumentError(
      field,
      `${describeValue(value)} is not a handler path: expected /module/function, each part 1-100 letters, digits, '_', '-' or '.'`,
    );
  }
  return value;
}

/**
 * A task id: 20 hex characters (either case); returned upper case. The original framework's ids,
 * 16 hex characters, are well-formed too: no task here has one, so looking one up finds nothing
 * (NOT_FOUND), as for any id that does not exist.
 */
export function checkTaskId(value: unknown, field = "task_id"): string {
  if (typeof value !== "string" || value === "") {
    throw new InvalidArgumentError(field, "is required: the id CreateTask returned");
  }
  if (!TASK_ID_RE.test(value)) {
    throw new InvalidArgumentError(field, `${describeValue(value)} is not a task id: expected ${TASK_ID_LENGTH} hex characters`);
  }
  return value.toUpperCase();
}

/**
 * A task id sent to a legacy URL (task_get, msg_info, delete_msg). The original answered "no such
 * task" for any id it had no task for, whatever its form: a well-formed id is returned upper case,
 * any other string of 1 to 256 characters returns undefined (no task has it: the caller answers
 * as for a task that does not exist), and a missing, empty, non-string or longer value is refused.
 */
export function legacyTaskId(value: unknown, field = "task_id"): string | undefined {
  if (typeof value !== "string" || value === "") {
    throw new InvalidArgumentError(field, "is required: the id task_create returned");
  }
  if (value.length > MAX_LEGACY_TASK_ID_LENGTH) {
    throw new InvalidArgumentError(field, `is ${value.length} characters long; the limit is ${MAX_LEGACY_TASK_ID_LENGTH}`);
  }
  return TASK_ID_RE.test(value) ? value.toUpperCase() : undefined;
}

/**
 * Params: a JSON object within the size limit and nesting depth. Returns the JSON text to store.
 */
export function checkParams(
  value: unknown,
  limits: Pick<Limits, "maxParamsBytes" | "maxParamsDepth"> = DEFAULT_LIMITS,
  field = "params",
): { params: JsonObject; json: string } {
  if (value === undefined || value === null) return { params: {}, json: "{}" };
  if (!isObject(value)) {
    throw new InvalidArgumentError(field, `must be a JSON object, got ${Array.isArray(value) ? "an array" : typeof value}`);
  }
  checkDepth(value, limits.maxParamsDepth, field);
  const json = JSON.stringify(value);
  const bytes = Buffer.byteLength(json);
  if (bytes > limits.maxParamsBytes) {
    throw new InvalidArgumentError(field, `is ${bytes} bytes as JSON; the limit is ${limits.maxParamsBytes}`);
  }
  return { params: value, json };
}

/**
 * What a handler returned, as the JSON text to store: within the size limit and nesting depth (the
 * same checks as params, so every client can read it back). Throws InvalidArgumentError (field
 * `result`) when it is too large, too deep, or cannot be written as JSON (a circular object, a
 * BigInt, a throwing toJSON).
 */
export function checkResult(value: unknown, limits: { maxBytes: number; maxDepth: number }): string {
  // Most results are a primitive or one flat plain object or array: no depth to check, and nothing
  // with a toJSON to call (a member's own toJSON, a Date's, runs in JSON.stringify as usual).
  let flat: string | undefined;
  try {
    if (isFlat(value)) flat = JSON.stringify(value) ?? "null";
  } catch {
    // a getter or toJSON that throws: the full path below says so
  }
  if (flat !== undefined) return checkSize(flat, limits.maxBytes);
  // The depth is checked as JSON.stringify walks (after toJSON), so nothing deeper is ever walked.
  const depths = new WeakMap<object, number>();
  function replacer(this: unknown, _key: string, member: unknown): unknown {
    if (typeof member === "object" && member !== null) {
      const depth = (depths.get(this as object) ?? 0) + 1;
      if (depth > limits.maxDepth) throw new InvalidArgumentError("result", `is nested deeper than ${limits.maxDepth} levels`);
      depths.set(member, depth);
    }
    return member;
  }
  let json: string | undefined;
  try {
    json = JSON.stringify(value, replacer);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    const reason = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new InvalidArgumentError("result", `is not JSON: ${reason}`);
  }
  return checkSize(json ?? "null", limits.maxBytes); // null: undefined, a function or a symbol
}

function checkSize(json: string, maxBytes: number): string {
  // A string's UTF-8 size is at most 3 bytes per UTF-16 unit: a short one needs no count.
  const bytes = json.length * 3 <= maxBytes ? 0 : Buffer.byteLength(json);
  if (bytes > maxBytes) throw new InvalidArgumentError("result", `is ${bytes} bytes as JSON; the limit is ${maxBytes}`);
  return json;
}

/** A primitive, or a plain object or array whose members are all primitives (not bigints, not functions). */
function isFlat(value: unknown): boolean {
  if (typeof value !== "object" || value === null) return typeof value !== "bigint";
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== Array.prototype) return false;
  for (const key in value) {
    const member = (value as Record<string, unknown>)[key];
    const type = typeof member;
    if ((type === "object" && member !== null) || type === "bigint" || type === "function") return false;
  }
  return true;
}

function checkDepth(root: unknown, maxDepth: number, field: string): void {
  // Iterative, so hostile nesting cannot overflow the stack.
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop()!;
    if (typeof value !== "object" || value === null) continue;
    if (depth > maxDepth) {
      throw new InvalidArgumentError(field, `is nested deeper than ${maxDepth} levels`);
    }
    for (const child of Array.isArray(value) ? value : Object.values(value)) stack.push([child, depth + 1]);
  }
}

/** A duration option in seconds: finite, at least 1 ms, at most `max`. */
function checkSeconds(value: unknown, field: string, max: number): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new InvalidArgumentError(field, `must be a number of seconds, got ${describeValue(value)}`);
  }
  if (value < 0.001) throw new InvalidArgumentError(field, `must be at least 0.001 seconds (1 ms), got ${value}`);
  if (value > max) throw new InvalidArgumentError(field, `must be at most ${max} seconds, got ${value}`);
  return value;
}

/** Task options, from the library, the RPC (converted to seconds) or the legacy bridge. */
export function checkOptions(options: TaskOptions | undefined): TaskOptions {
  const out: TaskOptions = {};
  if (!options) return out;
  const timeout = checkSeconds(options.timeout, "timeout", LIMITS.maxTimeout);
  const resultTtl = checkSeconds(options.resultTtl, "result_ttl", LIMITS.maxTtl);
  const failureTtl = checkSeconds(options.failureTtl, "failure_ttl", LIMITS.maxTtl);
  const ttl = checkSeconds(options.ttl, "ttl", LIMITS.maxTtl);
  if (timeout !== undefined) out.timeout = timeout;
  if (resultTtl !== undefined) out.resultTtl = resultTtl;
  if (failureTtl !== undefined) out.failureTtl = failureTtl;
  if (ttl !== undefined) out.ttl = ttl;
  if (options.maxAttempts !== undefined) {
    const n = options.maxAttempts;
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > LIMITS.maxAttempts) {
      throw new InvalidArgumentError(
        "max_attempts",
        `must be a whole number from 1 to ${LIMITS.maxAttempts}, got ${describeValue(n)}`,
      );
    }
    out.maxAttempts = n;
  }
  if (options.delay !== undefined && options.startAt !== undefined) {
    throw new InvalidArgumentError("delay", "give delay or start_at, not both");
  }
  const delay = checkSeconds(options.delay, "delay", LIMITS.maxTtl);
  if (delay !== undefined) out.delay = delay;
  if (options.startAt !== undefined) {
    const at = options.startAt instanceof Date ? options.startAt.getTime() : options.startAt;
    if (typeof at !== "number" || !Number.isFinite(at) || at < 0) {
      throw new InvalidArgumentError("start_at", `must be a time (epoch ms or a Date), got ${describeValue(options.startAt)}`);
    }
    if (at > Date.now() + LIMITS.maxTtl * 1000) throw new InvalidArgumentError("start_at", "must be at most 1 year ahead");
    out.startAt = at;
  }
  if (options.priority !== undefined) {
    if (options.priority !== 1 && options.priority !== 0 && options.priority !== -1) {
      throw new InvalidArgumentError(
        "priority",
        `must be 1 (high), 0 (normal) or -1 (low), got ${describeValue(options.priority)}`,
      );
    }
    out.priority = options.priority;
  }
  if (options.idempotencyKey !== undefined) out.idempotencyKey = checkIdempotencyKey(options.idempotencyKey);
  if (options.concurrencyKey !== undefined) out.concurrencyKey = checkConcurrencyKey(options.concurrencyKey);
  if (options.unique !== undefined) {
    if (typeof options.unique !== "boolean") throw new InvalidArgumentError("unique", "must be true or false");
    out.unique = options.unique;
  }
  return out;
}

/** Slowest rate limit, in starts per second: slower ones would overflow the bucket's timers. */
export const MIN_RATE = 0.000001;

/** The fields of QueueLimits as callers name them (the RPC's JSON names). */
const QUEUE_LIMIT_FIELDS = {
  ratePerSecond: "rate_per_second",
  burst: "burst",
  maxRunning: "max_running",
  maxRunningPerKey: "max_running_per_key",
} as const satisfies Record<keyof QueueLimits, string>;

/**
 * A handler's limits: each absent (0, no limit) or a number from 0 to 1,000,000, a whole number but
 * for the rate, which may not be below MIN_RATE unless 0. Anything else (an unknown field too) is
 * refused, naming the field.
 */
export function checkQueueLimits(value: unknown, field = "limits"): QueueLimits {
  if (value === undefined || value === null) value = {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidArgumentError(field, `must be an object of limits, got ${describeValue(value)}`);
  }
  const given = value as Record<string, unknown>;
  for (const key of Object.keys(given)) {
    if (!Object.hasOwn(QUEUE_LIMIT_FIELDS, key)) {
      throw new InvalidArgumentError(`${field}.${key}`, `is not a limit (${Object.keys(QUEUE_LIMIT_FIELDS).join(", ")})`);
    }
  }
  const out = {} as QueueLimits;
  for (const [key, name] of Object.entries(QUEUE_LIMIT_FIELDS) as Array<[keyof QueueLimits, string]>) {
    const n = given[key] ?? 0;
    const whole = key !== "ratePerSecond";
    if (typeof n !== "number" || !Number.isFinite(n) || n < 0 || n > MAX_QUEUE_LIMIT || (whole && !Number.isInteger(n))) {
      throw new InvalidArgumentError(
        name,
        `must be ${whole ? "a whole number" : "a number"} from 0 (no limit) to ${MAX_QUEUE_LIMIT}, got ${describeValue(n)}`,
      );
    }
    if (!whole && n > 0 && n < MIN_RATE) {
      throw new InvalidArgumentError(
        name,
        `must be 0 (no limit) or at least ${MIN_RATE} (one start in about 11.6 days), got ${n}`,
      );
    }
    out[key] = n;
  }
  return out;
}

/** Longest idempotency key, in characters. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 128;

/** Longest concurrency key, in characters. */
export const MAX_CONCURRENCY_KEY_LENGTH = 128;

/** Printable ASCII, no space at either end. */
const KEY_TEXT_RE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

/** An idempotency key: 1 to 128 printable ASCII characters, no space at either end. */
export function checkIdempotencyKey(value: unknown, field = "idempotency_key"): string {
  return checkKeyText(value, field, MAX_IDEMPOTENCY_KEY_LENGTH);
}

/** A concurrency key: 1 to 128 printable ASCII characters, no space at either end. */
export function checkConcurrencyKey(value: unknown, field = "concurrency_key"): string {
  return checkKeyText(value, field, MAX_CONCURRENCY_KEY_LENGTH);
}

/** A caller's key (idempotency, concurrency): 1 to `max` printable ASCII characters, no space at either end. */
function checkKeyText(value: unknown, field: string, max: number): string {
  if (typeof value !== "string") {
    throw new InvalidArgumentError(
      field,
      `must be a string, got ${value === null ? "null" : Array.isArray(value) ? "an array" : typeof value}`,
    );
  }
  if (value.length === 0 || value.length > max) {
    throw new InvalidArgumentError(field, `must be 1 to ${max} characters long, got ${value.length}`);
  }
  if (!KEY_TEXT_RE.test(value)) {
    throw new InvalidArgumentError(
      field,
      "must be printable ASCII characters (letters, digits, punctuation; no space at either end)",
    );
  }
  return value;
}

/** A short, safe rendering of a bad value for an error message. */
export function describeValue(value: unknown): string {
  if (typeof value === "string") {
    const shown = value.length > 40 ? `${value.slice(0, 40)}…` : value;
    return JSON.stringify(shown);
  }
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : String(value);
}

/** `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off` in any case (settings); undefined for anything else. */
export function parseBool(text: string): boolean | undefined {
  const t = text.trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(t)) return true;
  if (["0", "false", "no", "off"].includes(t)) return false;
  return undefined;
}
