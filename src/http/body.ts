/**
 * Request bodies read before they are answered. An answer sent while the client is still sending
 * makes HTTP/2 reset the stream (and HTTP/1.1 close a connection with unread bytes, which the
 * kernel turns into a reset); some clients (curl) then lose the answer. So what a request sends is
 * read first, and what is not wanted (over the body limit, or refused) is read and dropped, for at
 * most DRAIN_MS, as nginx's lingering close does after its answer.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { constants, type Http2ServerRequest, type Http2ServerResponse } from "node:http2";

type NodeRequest = IncomingMessage | Http2ServerRequest;
type NodeResponse = ServerResponse | Http2ServerResponse;

/** Longest a body that is not wanted is read and dropped before the answer; past it the request is reset. */
export const DRAIN_MS = 10_000;

/**
 * A request whose body was not read whole is closed once answered: HTTP/2 resets the stream with
 * NO_ERROR (RFC 9113 8.1: the answer is complete, the rest of the request is not wanted); HTTP/1.1
 * closes the connection (server.ts: an answer to an incomplete request is not kept alive).
 */
export function closeAfterAnswer(res: NodeResponse): void {
  if ("stream" in res) res.stream.once("finish", () => res.stream.close(constants.NGHTTP2_NO_ERROR));
}

/** The request body, read once; when the reader stops early, `stoppedEarly` is called (instead of a reset). */
export function bodyOf(req: NodeRequest, stoppedEarly: () => void): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]() {
      const it = req.iterator({ destroyOnReturn: false }) as AsyncIterator<Uint8Array>;
      return {
        next: () => it.next(),
        async return() {
          await it.return?.();
          stoppedEarly();
          return { done: true, value: undefined };
        },
      };
    },
  };
}

const drains = new WeakMap<NodeRequest, Promise<boolean>>();

/**
 * Read and drop what is left of a request body. Resolves true once it ended, false when that
 * takes longer than DRAIN_MS or the request closed first.
 */
export function drain(req: NodeRequest): Promise<boolean> {
  if (req.readableEnded) return Promise.resolve(true);
  let draining = drains.get(req);
  if (draining) return draining;
  draining = new Promise<boolean>((resolve) => {
    const done = (whole: boolean) => {
      clearTimeout(timer);
      req.off("readable", onReadable);
      req.off("end", onEnd);
      req.off("close", onClose);
      resolve(whole);
    };
    // Paused-mode reads: they work whatever mode the stream was left in (an iterator that
    // stopped early keeps it paused, and resume() would do nothing then).
    const onReadable = () => {
      while (req.read() !== null);
    };
    const onEnd = () => done(true);
    const onClose = () => done(req.readableEnded);
    const timer = setTimeout(() => done(false), DRAIN_MS);
    req.on("readable", onReadable);
    req.once("end", onEnd);
    req.once("close", onClose);
    onReadable();
  });
  drains.set(req, draining);
  return draining;
}

/**
 * The first `keep` bytes of a body, the rest drained; `whole`: it ended within DRAIN_MS (false
 * too when the client went away while sending: `req.errored` tells).
 */
export async function readBody(req: NodeRequest, keep: number): Promise<{ chunks: Buffer[]; whole: boolean }> {
  const chunks: Buffer[] = [];
  let kept = 0;
  try {
    for await (const chunk of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
      chunks.push(chunk.length > keep - kept ? chunk.subarray(0, keep - kept) : chunk);
      kept += chunk.length;
      if (kept >= keep) break;
    }
  } catch {
    return { chunks, whole: false }; // the client went away while sending
  }
  return { chunks, whole: await drain(req) };
}
