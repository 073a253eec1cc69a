/**
 * What the listener knows of each request while it runs (its id, when it came, who answered it),
 * shared by the listener, the RPC implementations and the legacy bridge without them importing
 * each other.
 */
import { createContextKey } from "@connectrpc/connect";

/** What the listener knows of a request while it runs. */
export interface RequestInfo {
  /** The caller's `x-request-id` when sane (log.ts), else a new one; echoed as `x-request-id`. */
  readonly id: string;
  /** performance.now() when the request arrived. */
  readonly started: number;
  /** Who answered it; unset for requests refused before a service saw them. */
  kind?: "rpc" | "legacy" | "metrics";
  /** The legacy stat or gRPC code name it was answered with. */
  stat?: string;
  /** A plain-gRPC WatchTask stream (grpc-watch.ts): counted by the listener, not the interceptor. */
  leanWatch?: boolean;
  /** The client's address, read when the request arrived (the socket may be gone when it ends). */
  readonly ip: string;
}

const requests = new WeakMap<object, RequestInfo>();

/** The listener's hook: `info` is what it knows of `req` from now on. */
export function trackRequest(req: object, info: RequestInfo): void {
  requests.set(req, info);
}

/** The listener's record of a request (undefined for a request the listener did not see). */
export function requestInfo(req: object): RequestInfo | undefined {
  return requests.get(req);
}

/** The legacy bridge's hook: the stat it answered `req` with. */
export function answeredLegacy(req: object, stat: string): void {
  const info = requests.get(req);
  if (!info) return;
  info.kind = "legacy";
  info.stat = stat;
}

/** The request's record, for RPC implementations and interceptors (set in the server's contextValues). */
export const kRequest = createContextKey<RequestInfo | undefined>(undefined, { description: "request id and outcome" });
