/**
 * Structured logs with pino: one JSON object per line (on stderr by default), `time` as an ISO
 * string, `level` by name, a level threshold (BAICHUAN_LOG_LEVEL), child loggers that add fields.
 * Errors given as the `error` or `err` field are written with their name, message and stack. Also
 * the request ids that tie a request's access log line (metrics.ts) to the log lines of the tasks
 * it created (`request_id`).
 */
import { randomFillSync } from "node:crypto";
import { type Logger as PinoLogger, pino, stdSerializers, stdTimeFunctions } from "pino";

export type LogFields = Record<string, unknown>;

export type LogLevel = "debug" | "info" | "warn" | "error";

/** What the rest of the code logs with (a thin face over pino, so call sites read `log.info(msg, fields)`). */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
  /**
   * False when lines at `level` are dropped, so a caller can skip preparing them (the access log).
   * Optional: a logger without it is taken to write every level.
   */
  enabled?(level: LogLevel): boolean;
}

/**
 * A logger at `level`, with `base` fields on every line, writing each line to `write` (default:
 * stderr, synchronously).
 */
export function createLogger(
  level: LogLevel = "info",
  base: LogFields = {},
  write: (line: string) => void = (line) => process.stderr.write(line),
): Logger {
  const logger = pino(
    {
      level,
      base,
      messageKey: "msg",
      timestamp: stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { error: serializeError, err: serializeError },
    },
    { write },
  );
  return wrap(logger);
}

function wrap(logger: PinoLogger): Logger {
  return {
    debug: (msg, fields) => logger.debug(fields ?? {}, msg),
    info: (msg, fields) => logger.info(fields ?? {}, msg),
    warn: (msg, fields) => logger.warn(fields ?? {}, msg),
    error: (msg, fields) => logger.error(fields ?? {}, msg),
    child: (fields) => wrap(logger.child(fields)),
    enabled: (level) => logger.isLevelEnabled(level),
  };
}

/** Errors keep their name, message and stack; anything else is written as it is. */
function serializeError(value: unknown): unknown {
  return value instanceof Error ? stdSerializers.err(value) : value;
}

/** A logger that drops everything (library default). */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
  enabled: () => false,
};

/** What a caller may send as `x-request-id`: 1 to 64 of [A-Za-z0-9._-]. */
const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** True for a sane request id (see REQUEST_ID). */
export function isRequestId(value: unknown): value is string {
  return typeof value === "string" && REQUEST_ID.test(value);
}

/** Random bytes for request ids, drawn a block at a time (one call for many ids rather than one each). */
const ID_POOL = Buffer.alloc(8 * 512);
let idOffset = ID_POOL.length;

/** A new request id: 16 upper-case hex characters, the form of the original's `x-reqid`. */
export function newRequestId(): string {
  if (idOffset === ID_POOL.length) {
    randomFillSync(ID_POOL);
    idOffset = 0;
  }
  const id = ID_POOL.toString("hex", idOffset, idOffset + 8).toUpperCase();
  idOffset += 8;
  return id;
}

/**
 * The id of a request: its `x-request-id` header when that is one sane token, a new id otherwise
 * (absent, repeated, too long, or with other characters).
 */
export function requestIdFrom(header: string | string[] | undefined): string {
  const value = Array.isArray(header) ? (header.length === 1 ? header[0] : undefined) : header;
  return isRequestId(value) ? value : newRequestId();
}
