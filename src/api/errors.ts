/**
 * Every RPC's errors in one place. Implementations throw BaiChuan's own errors (core/errors.ts);
 * this interceptor turns them into Connect codes (toConnectError) for unary calls and for the
 * messages of server streams alike. An error nobody expected (a bug) is logged with its stack
 * and answered INTERNAL "internal error": its text stays in the log, not on the wire.
 */
import type { ConnectError, Interceptor } from "@connectrpc/connect";
import { isExpected, toConnectError } from "../core/errors.js";
import type { Logger } from "../ops/log.js";

export function errorInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const mapped = (err: unknown): ConnectError => {
      if (!isExpected(err)) log.error("rpc failed", { procedure: req.url, error: err });
      return toConnectError(err);
    };
    try {
      const res = await next(req);
      if (!res.stream) return res;
      return { ...res, message: mapStream(res.message, mapped) };
    } catch (err) {
      throw mapped(err);
    }
  };
}

async function* mapStream<T>(
  messages: AsyncIterable<T>,
  mapped: (err: unknown) => ConnectError,
): AsyncGenerator<T, void, undefined> {
  try {
    yield* messages;
  } catch (err) {
    throw mapped(err);
  }
}
