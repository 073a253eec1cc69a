/**
 * Small pieces of the gRPC and gRPC-Web wire formats shared by the listener's adapter
 * (adapter.ts) and WatchTask's lean path (grpc-watch.ts).
 */

/** Which RPC protocol a request speaks, by its content type (and Connect's markers). */
export type RpcProtocol = "grpc" | "grpc-web" | "grpc-web-text" | "connect";

/** The RPC protocol of a request, or undefined for anything else (legacy JSON, the dashboard, ...). */
export function rpcProtocolOf(headers: Record<string, string | string[] | undefined>, method?: string, url?: string) {
  const raw = headers["content-type"];
  if (raw === "application/grpc" || raw === "application/grpc+proto") return "grpc"; // the common case, without parsing
  const type = String(headers["content-type"] ?? "")
    .split(";")[0]!
    .trim()
    .toLowerCase();
  if (/^application\/grpc-web-text(\+\w+)?$/.test(type)) return "grpc-web-text";
  if (/^application\/grpc-web(\+\w+)?$/.test(type)) return "grpc-web";
  if (/^application\/grpc(\+\w+)?$/.test(type)) return "grpc";
  if (/^application\/connect\+\w+$/.test(type) || type === "application/proto") return "connect";
  // Connect's unary JSON looks like the legacy bridge's JSON but for its protocol header; a GET
  // says `connect=v1` in its query.
  if (type === "application/json" && headers["connect-protocol-version"] !== undefined) return "connect";
  if (method === "GET" && /[?&]connect=v1(&|$)/.test(url ?? "")) return "connect";
  return undefined;
}

/** `grpc-message` as gRPC specifies it: UTF-8, bytes outside printable ASCII (and '%') percent-encoded. */
export function grpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * A `grpc-message` percent-encoded as a URI component (Connect's way: `/`, `:` and spaces too,
 * which grpc-js shows as they are) in gRPC's own encoding.
 */
export function reencodeGrpcMessage(value: string): string {
  let text: string;
  try {
    text = decodeURIComponent(value);
  } catch {
    return value; // not percent-encoded by us
  }
  return grpcMessage(text);
}

/** A length-prefixed message: flags byte, 4-byte big-endian length, the bytes. */
export function envelope(flags: number, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + data.length);
  out[0] = flags;
  out.writeUInt32BE(data.length, 1);
  out.set(data, 5);
  return out;
}

/** The flag of gRPC-Web's trailer frame. */
export const TRAILER_FLAG = 0x80;

/** The longest deadline a Node timer can wait for (2^31 - 1 ms, about 24.8 days). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** gRPC's `grpc-timeout` in ms: up to 8 digits and a unit; undefined when it is not one. */
export function grpcTimeoutMs(header: string): number | undefined {
  const m = /^(\d{1,8})([HMSmun])$/.exec(header);
  if (!m) return undefined;
  return Number(m[1]) * { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as "H"];
}
