/**
 * The original framework's JSON protocol, on the same port as the RPC API:
 * - `POST /baichuan/task_create` and `GET /baichuan/task_get?task_id=...`, with the original's stats;
 * - every handler of this process callable synchronously at its own path (`POST /demo_api/ping`);
 * - `GET /healthz`.
 * Answers are HTTP 200 with a `stat` field (HTTP 400 for an unknown path), with `x-reqid` (the
 * request id, also sent as `x-request-id`) and `x-cost` headers. No request can take the process
 * down: whatever a request sends or a handler returns or throws ends in an answer (at worst
 * ERR_SERVER_EXCEPTION), never in an error thrown out of the request.
 */
import type { IncomingMessage, OutgoingHttpHeaders } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { ServerHealth } from "../api/health.js";
import { type Authenticator, checkGrant, type Grant } from "../core/auth.js";
import { isObject, type JsonObject, type JsonValue, type Task, type TaskOptions } from "../core/domain.js";
import {
  httpStatusOf,
  InvalidArgumentError,
  isBadParamsError,
  isExpected,
  legacyStat,
  publicMessage,
  TaskNotFoundError,
} from "../core/errors.js";
import { checkParams, describeValue, legacyTaskId } from "../core/validate.js";
import type { BaiChuan } from "../engine/baichuan.js";
import { type Logger, newRequestId } from "../ops/log.js";
import { answeredLegacy, requestInfo } from "../ops/request.js";
import type { HandlerContext } from "../worker/handlers.js";
import { runAsHandler } from "../worker/process-guard.js";
import { CANGHAI_PREFIX, canghai, taskInfo } from "./canghai.js";

type Request = IncomingMessage | Http2ServerRequest;
/** What the bridge needs of an HTTP/1.1 or HTTP/2 response. */
interface Response {
  readonly headersSent: boolean;
  writeHead(status: number, headers?: OutgoingHttpHeaders): unknown;
  end(chunk: string): unknown;
}

interface Reply {
  status?: number;
  body: Record<string, unknown>;
}

/** Longest a synchronous handler call may run. */
const SYNC_TIMEOUT_MS = 180_000;

export interface LegacyOptions {
  clientIp: (req: Request) => string;
  log: Logger;
  maxBody: number;
  auth: Authenticator;
  /** What /healthz reports: the status gRPC health checking reports too. */
  health: ServerHealth;
}

export function legacyHandler(bc: BaiChuan, { clientIp, log, maxBody, auth, health }: LegacyOptions) {
  const admin = bc.admin;
  async function route(req: Request, url: URL, body: () => Promise<unknown>): Promise<Reply> {
    const path = url.pathname;
    if (path === "/healthz") {
      // For load balancers: HTTP 503 unless gRPC health checking says SERVING (health.ts).
      const down = health.notServing();
      if (!down) return { body: { stat: "OK" } };
      return { status: 503, body: { stat: legacyStat(down), error: down.message } };
    }
    // Everything but the health check needs a token when tokens are configured.
    const grant = auth.authenticate(header(req, "authorization"));
    if (path.startsWith(CANGHAI_PREFIX)) {
      const input = req.method === "POST" ? await body() : Object.fromEntries(url.searchParams);
      if (!isObject(input)) throw new InvalidArgumentError("body", "must be a JSON object");
      const answer = await canghai(bc, admin, path.slice(CANGHAI_PREFIX.length), input, grant);
      if (answer) return { body: answer };
    }
    if (path === "/baichuan/task_create") {
      if (req.method !== "POST") throw new InvalidArgumentError("method", "task_create takes a POST with a JSON body");
      const key = header(req, "idempotency-key");
      return { body: await taskCreate(await body(), clientIp(req), grant, requestInfo(req)?.id, key) };
    }
    if (path === "/baichuan/task_get") {
      const input = req.method === "POST" ? await body() : Object.fromEntries(url.searchParams);
      if (!isObject(input)) throw new InvalidArgumentError("body", "must be a JSON object with task_id");
      return { body: await taskGet(input.task_id, grant) };
    }
    const handler = bc.handlers.get(path);
    if (handler) {
      checkGrant(grant, path);
      const params = req.method === "POST" ? await body() : Object.fromEntries(url.searchParams);
      return { body: await callHandler(path, params, req) };
    }
    return { status: 400, body: { stat: "ERR_NOT_FOUND", error: `no API at ${path}` } };
  }

  async function taskCreate(
    input: unknown,
    ip: string,
    grant: Grant,
    requestId: string | undefined,
    keyHeader: string | undefined,
  ): Promise<JsonObject> {
    if (!isObject(input))
      throw new InvalidArgumentError("body", 'must be a JSON object: {"handler": "/demo_api/ping", "params": {}}');
    const options: TaskOptions = {};
    for (const [field, key] of [
      ["timeout", "timeout"],
      ["result_ttl", "resultTtl"],
      ["failure_ttl", "failureTtl"],
      ["ttl", "ttl"],
    ] as const) {
      if (input[field] !== undefined && input[field] !== null) options[key] = seconds(input[field], field);
    }
    if (input.max_attempts !== undefined && input.max_attempts !== null) {
      const n = input.max_attempts;
      options.maxAttempts = (typeof n === "string" && /^\d+$/.test(n) ? Number(n) : n) as number;
    }
    const unique = input.msg_create_unique ?? input.unique;
    if (unique !== undefined) options.unique = flag(unique);
    // The idempotency key: the `Idempotency-Key` header or the `idempotency_key` field (the same, if both).
    const key = input.idempotency_key ?? keyHeader;
    if (keyHeader !== undefined && input.idempotency_key !== undefined && input.idempotency_key !== keyHeader) {
      throw new InvalidArgumentError("idempotency_key", "differs from the Idempotency-Key header: send one, or the same in both");
    }
    if (key !== undefined && key !== null) options.idempotencyKey = key as string;
    if (input.concurrency_key !== undefined && input.concurrency_key !== null) {
      options.concurrencyKey = input.concurrency_key as string; // checked with the other options
    }
    const { id, deduplicated, replayed } = await bc.enqueue(input.handler as string, input.params, options, {
      ip,
      requestId,
      requireKnownHandler: true,
      grant,
    });
    const data: JsonObject = { task_id: id };
    if (deduplicated) data.deduplicated = true;
    if (replayed) data.replayed = true;
    return { stat: "OK", data };
  }

  async function taskGet(value: unknown, grant: Grant): Promise<JsonObject> {
    // Any id no task has answers ERR_MSG_NOT_EXIST, whatever its form; so does, for a token limited
    // to some handlers, a task of another handler (the same answer: see checkTaskGrant).
    const notExist = { stat: "ERR_MSG_NOT_EXIST", task_info: {} };
    const taskId = legacyTaskId(value);
    if (taskId === undefined) return notExist;
    let task: Task;
    try {
      task = await bc.getTask(taskId, grant);
    } catch (err) {
      if (err instanceof TaskNotFoundError) return notExist;
      throw err;
    }
    const info = taskInfo(task);
    switch (task.status) {
      case "queued":
        return { stat: "ERR_MSG_IN_QUEUED", task_info: info };
      case "started":
        return { stat: "ERR_MSG_IN_STARTED", task_info: info };
      case "finished": {
        const result = parseResult(task.rawResult);
        if (!result) return { stat: "ERR_MSG_RESULT_FAILED", task_info: info };
        // `data` carries the result: task_info does not repeat it (a result is never twice in one answer).
        delete info.result;
        return { stat: result.stat as string, data: result.data ?? null, task_info: info };
      }
      default:
        return { stat: "ERR_MSG_EXE_FAILED", error: task.error ?? "task failed", task_info: info };
    }
  }

  async function callHandler(path: string, input: unknown, req: Request): Promise<JsonObject> {
    if (!isObject(input)) throw new InvalidArgumentError("params", "must be a JSON object");
    // The checks CreateTask makes: the same params a task may have, no bigger, no deeper.
    const { params } = checkParams(input, bc.limits);
    const handler = bc.handlers.get(path)!;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error("the call ran longer than its timeout")), SYNC_TIMEOUT_MS);
    const onClose = () => controller.abort(new Error("the client went away"));
    req.once("close", onClose);
    const ctx: HandlerContext = {
      taskId: "",
      handler: path,
      signal: controller.signal,
      log: log.child({ handler: path }),
      progress: async () => {}, // no task to report on
    };
    try {
      // In the handler's scope, as the worker runs it (process-guard.ts).
      const data = (await runAsHandler({ taskId: "", handler: path }, () => handler(params, ctx))) as JsonValue | undefined;
      // The handler's object is spread into the answer (as the original did) unless that would
      // replace `stat` with something that is not a stat.
      const spreadable = isObject(data) && (data.stat === undefined || typeof data.stat === "string");
      return spreadable ? { stat: "OK", ...data } : { stat: "OK", data: data ?? null };
    } catch (err) {
      if (isBadParamsError(err)) return { stat: "ERR_BAD_PARAMS", error: failureText(err) };
      logSafely(log.warn, "handler failed", { handler: path }, err);
      return { stat: "ERR_SERVER_EXCEPTION", error: failureText(err) };
    } finally {
      clearTimeout(timer);
      req.off("close", onClose);
    }
  }

  async function answer(req: Request, res: Response): Promise<void> {
    const started = performance.now();
    const reqid = requestInfo(req)?.id ?? newRequestId();
    let reply: Reply;
    try {
      reply = await route(req, requestUrl(req.url), () => readJson(req, maxBody));
    } catch (err) {
      if (!isExpected(err)) logSafely(log.error, "legacy request failed", { path: req.url }, err);
      const body: Record<string, unknown> = { stat: legacyStat(err) };
      body.error = isExpected(err) ? (err as Error).message : "internal error";
      // Refused credentials get the HTTP statuses proxies and clients understand.
      const status = httpStatusOf(err, 200);
      reply = { status, body };
    }
    let text: string;
    try {
      text = JSON.stringify(reply.body);
    } catch (err) {
      // A handler's answer that is no JSON: circular, a BigInt, a throwing toJSON, nested too deep.
      logSafely(log.warn, "the answer cannot be written as JSON", { path: req.url }, err);
      reply = { body: { stat: "ERR_SERVER_EXCEPTION", error: "the handler's answer cannot be written as JSON" } };
      text = JSON.stringify(reply.body);
    }
    answeredLegacy(req, String(reply.body.stat)); // for the access log and metrics
    if (res.headersSent) return;
    res.writeHead(reply.status ?? 200, {
      ...(reply.status === 401 ? { "www-authenticate": "Bearer" } : {}),
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(text),
      "x-reqid": reqid,
      "x-cost": ((performance.now() - started) / 1000).toFixed(6),
    });
    res.end(text);
  }

  return async function handle(req: Request, res: Response): Promise<void> {
    try {
      await answer(req, res);
    } catch (err) {
      // The last line of defence: the server does not wait on this promise, and a rejection left
      // unhandled would end the process.
      logSafely(log.error, "legacy request failed", { path: req.url }, err);
      try {
        if (!res.headersSent) {
          res.writeHead(200, { "content-type": "application/json; charset=utf-8" });
          res.end('{"stat":"ERR_SERVER_EXCEPTION","error":"internal error"}');
        }
      } catch {
        // The connection is gone: nothing left to answer.
      }
    }
  };
}

/** What a caller is told of a handler's failure: its message without paths or stack frames. */
function failureText(err: unknown): string {
  try {
    if (err instanceof Error && typeof err.message === "string") return publicMessage(err.message);
  } catch {
    // An error whose message cannot be read (a Proxy, a throwing getter).
  }
  return "the handler failed";
}

/** Log an error without ever throwing: a handler may throw anything, even what a logger cannot write. */
function logSafely(write: Logger["warn"], msg: string, fields: Record<string, unknown>, err: unknown): void {
  try {
    write(msg, { ...fields, error: err });
  } catch {
    try {
      write(msg, { ...fields, error: "an error that cannot be logged" });
    } catch {
      // Nothing more to do.
    }
  }
}

/** The request's path and query; `//x` is a path here, not a host. */
function requestUrl(raw: string | undefined): URL {
  try {
    return new URL(`http://localhost${raw?.startsWith("/") ? raw : `/${raw ?? ""}`}`);
  } catch {
    throw new InvalidArgumentError("path", "is not a valid URL path");
  }
}

function header(req: Request, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** Read a JSON body of at most `limit` bytes. */
async function readJson(req: Request, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new InvalidArgumentError("body", `is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") throw new InvalidArgumentError("body", "is empty: expected a JSON object");
  try {
    return JSON.parse(text);
  } catch {
    throw new InvalidArgumentError("body", "is not valid JSON");
  }
}

function parseResult(raw: string | undefined): JsonObject | undefined {
  if (raw === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(raw);
    return isObject(parsed) && typeof parsed.stat === "string" ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** A number of seconds, as a JSON number or a decimal string ("900", "0.5"). */
function seconds(value: unknown, field: string): number {
  if (typeof value === "number") return value;
  if (typeof value === "string" && /^\d+(\.\d+)?$/.test(value)) return Number(value);
  throw new InvalidArgumentError(field, `must be a number of seconds, got ${describeValue(value)}`);
}

/** The original's yes/no flags: "yes", true, 1. */
function flag(value: unknown): boolean {
  if (value === true || value === 1 || value === "yes" || value === "true" || value === "1") return true;
  if (value === false || value === 0 || value === "no" || value === "false" || value === "0" || value === "") return false;
  throw new InvalidArgumentError("msg_create_unique", 'must be "yes" or "no"');
}
