/**
 * What a command runs with: the streams it writes to (CliIO), the exit codes, and the Context built
 * from the global options: the server's URL, a bearer token, and the TaskService, AdminService and
 * ScheduleService clients over the chosen protocol (Connect, gRPC or gRPC-Web).
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { AdminService } from "../../gen/baichuan/v1/admin_pb.js";
import { ScheduleService } from "../../gen/baichuan/v1/schedule_pb.js";
import { TaskService } from "../../gen/baichuan/v1/task_pb.js";
import { retryIdempotentCreates } from "../client.js";
import { DEFAULT_URL, UsageError } from "./args.js";
import { jsonOf } from "./format.js";

/** Exit codes; documented in the top-level help. */
export const EXIT = {
  OK: 0,
  /** The watched task ended FAILED or CANCELED. */
  TASK_FAILED: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  REFUSED: 4,
  UNAVAILABLE: 5,
  INTERRUPTED: 130,
} as const;

/** Where the program reads and writes; the process's streams by default. */
export interface CliIO {
  stdout: { write(chunk: string): unknown; isTTY?: boolean; columns?: number };
  stderr: { write(chunk: string): unknown };
  env: Record<string, string | undefined>;
  /** Aborts the command in flight (Ctrl-C): it ends with exit code 130. */
  signal?: AbortSignal;
}

export interface Context {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
  json: boolean;
  url: string;
  io: CliIO;
  tasks: Client<typeof TaskService>;
  admin: Client<typeof AdminService>;
  schedules: Client<typeof ScheduleService>;
  signal: AbortSignal;
}

/** Longest wait for the answer of a unary call. */
export const CALL_TIMEOUT_MS = 30_000;

/** The options of a unary call: aborted by Ctrl-C, bounded by CALL_TIMEOUT_MS. */
export const callOptions = (ctx: Context) => ({ signal: ctx.signal, timeoutMs: CALL_TIMEOUT_MS });

/** A message as one protobuf JSON document on stdout (--json). */
export function printJson<Desc extends DescMessage>(ctx: Context, schema: Desc, message: MessageShape<Desc>): void {
  ctx.io.stdout.write(`${JSON.stringify(jsonOf(schema, message), null, 2)}\n`);
}

/** A line (or lines) of text on stdout. */
export function out(ctx: Context, text: string): void {
  ctx.io.stdout.write(text.endsWith("\n") || text === "" ? text : `${text}\n`);
}

/** `baichuan: TEXT` on stderr. */
export function note(io: CliIO, text: string): void {
  io.stderr.write(`baichuan: ${text}\n`);
}

export function makeContext(values: Record<string, string | boolean | undefined>, positionals: string[], io: CliIO): Context {
  const url = (values.url as string | undefined) ?? (io.env.BAICHUAN_URL || DEFAULT_URL);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--url: '${url}' is not a URL (for example ${DEFAULT_URL})`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new UsageError(`--url: '${url}' must start with http:// or https://`);
  }
  const token = (values.token as string | undefined) ?? (io.env.BAICHUAN_TOKEN || undefined);
  const protocol = (values.protocol as string | undefined) ?? "connect";
  // Creates with an idempotency key are retried while the server answers UNAVAILABLE (client.ts).
  const interceptors: Interceptor[] = [retryIdempotentCreates(4)];
  if (token) {
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const baseUrl = url.replace(/\/+$/, "");
  let transport: Transport;
  if (protocol === "connect") transport = createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors });
  else if (protocol === "grpc") transport = createGrpcTransport({ baseUrl, interceptors });
  else if (protocol === "grpc-web") transport = createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors });
  else throw new UsageError(`--protocol: '${protocol}' is not one of connect, grpc, grpc-web`);
  return {
    values,
    positionals,
    json: values.json === true,
    url: baseUrl,
    io,
    tasks: createClient(TaskService, transport),
    admin: createClient(AdminService, transport),
    schedules: createClient(ScheduleService, transport),
    signal: io.signal ?? new AbortController().signal,
  };
}
