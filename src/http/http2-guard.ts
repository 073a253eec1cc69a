/**
 * HTTP/2 rapid reset (CVE-2023-44487): a client that opens streams and resets them at once is not
 * bound by the concurrent-stream limit, and each stream still costs the server a request. Each
 * connection gets a budget of client resets (a token bucket); past it the server sends GOAWAY with
 * ENHANCE_YOUR_CALM and closes the connection. Streams the client reset before they were answered
 * get no access log line of their own (metrics.ts): their number is logged once, when the
 * connection closes.
 */
import { constants, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import type { Logger } from "../ops/log.js";

/** The reset budget of one HTTP/2 connection. */
export const RESET_BUDGET = {
  /** Resets a client may send at once. */
  burst: 200,
  /** Resets given back per second. */
  perSecond: 20,
};

/** Count the client's resets on this session; GOAWAY ENHANCE_YOUR_CALM when it spends its budget. */
export function guardResets(session: ServerHttp2Session, log: Logger, budget = RESET_BUDGET): void {
  const ip = session.socket?.remoteAddress?.replace(/^::ffff:/, "");
  let tokens = budget.burst;
  let refilled = performance.now();
  let resets = 0;
  let unanswered = 0;
  const onReset = (stream: ServerHttp2Stream) => {
    resets++;
    if (!stream.headersSent) unanswered++;
    const now = performance.now();
    tokens = Math.min(budget.burst, tokens + ((now - refilled) / 1000) * budget.perSecond);
    refilled = now;
    if (--tokens >= 0 || session.closed || session.destroyed) return;
    log.warn("http2: too many streams reset by the client (rapid reset): GOAWAY ENHANCE_YOUR_CALM, closing the connection", {
      ip,
      resets,
    });
    // The final GOAWAY carries the code; the socket closes with it (open streams are abandoned).
    session.destroy(new Error("too many streams reset by the client"), constants.NGHTTP2_ENHANCE_YOUR_CALM);
  };
  session.on("stream", (stream: ServerHttp2Stream) => {
    // 'aborted': closed before the server ended its answer. A reset sent by the server itself
    // comes after the answer's end or with the session's own close, so these are the client's.
    stream.once("aborted", () => onReset(stream));
  });
  session.once("close", () => {
    if (unanswered > 0) log.info("http2: streams reset by the client before an answer", { streams: unanswered, ip });
  });
}
