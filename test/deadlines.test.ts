/**
 * Deadlines and cancellation of server streams on every path: WatchTask over Connect (HTTP/1.1 and
 * HTTP/2), gRPC-Web, gRPC with gzip (served by Connect) and plain gRPC (the lean path), and the
 * health Watch. A stream whose deadline passes ends with DEADLINE_EXCEEDED, never OK; the metrics
 * count it so, and count a stream its client canceled as CANCELED.
 *
 * The deadline is sent as a header only (the clients set no timer of their own), so the code the
 * client reports is the one the server sent.
 */
import { type Client, Code, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../gen/baichuan/v1/task_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { eventually, failureOf, gate, PROTOCOLS, type Protocol, startService, type TestService } from "./support/service.js";

const hold = gate();
let svc: TestService;
let gzipClient: Client<typeof TaskService>;

beforeAll(async () => {
  svc = await startService({ handlers: { "/test/hold": async () => hold.opened } });
  gzipClient = createClient(TaskService, createGrpcTransport({ baseUrl: svc.baseUrl, sendCompression: compressionGzip }));
});
afterAll(async () => {
  hold.open();
  await svc?.close();
});

/** The deadline header of a protocol: 300 ms. */
function deadline(protocol: Protocol | "grpc-gzip"): Record<string, string> {
  return protocol.startsWith("connect") ? { "connect-timeout-ms": "300" } : { "grpc-timeout": "300m" };
}

/** Follow a stream to its end: the messages seen and the code it ended with (undefined: OK). */
async function follow(stream: AsyncIterable<unknown>): Promise<{ messages: number; code: Code | undefined }> {
  let messages = 0;
  const [code] = await failureOf(
    (async () => {
      for await (const _ of stream) messages++;
    })(),
  );
  return { messages, code };
}

async function rpcCount(method: string, code: string, service = "baichuan.v1.TaskService"): Promise<number> {
  const text = await (await fetch(`${svc.baseUrl}/metrics`)).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`baichuan_rpc_requests_total{service="${service}",method="${method}",code="${code}"}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

describe("a WatchTask stream whose deadline passes ends with DEADLINE_EXCEEDED", () => {
  const paths = [...PROTOCOLS, "grpc-gzip"] as const;
  it.each(paths)("over %s", async (protocol) => {
    const { taskId } = await svc.clients.grpc.createTask({ handler: "/test/hold" });
    const client = protocol === "grpc-gzip" ? gzipClient : svc.clients[protocol];
    const before = await rpcCount("WatchTask", "DEADLINE_EXCEEDED");
    const end = await follow(client.watchTask({ taskId }, { headers: deadline(protocol) }));
    expect(end).toEqual({ messages: 1, code: Code.DeadlineExceeded });
    await eventually(async () => (await rpcCount("WatchTask", "DEADLINE_EXCEEDED")) === before + 1);
  });
});

describe("a health Watch stream whose deadline passes ends with DEADLINE_EXCEEDED", () => {
  it.each(["grpc", "connect-h1"] as const)("over %s", async (protocol) => {
    const transport =
      protocol === "grpc"
        ? createGrpcTransport({ baseUrl: svc.baseUrl })
        : createConnectTransport({ baseUrl: svc.baseUrl, httpVersion: "1.1" });
    const health = createClient(Health, transport);
    const before = await rpcCount("Watch", "DEADLINE_EXCEEDED", "grpc.health.v1.Health");
    const end = await follow(health.watch({ service: "" }, { headers: deadline(protocol) }));
    expect(end).toEqual({ messages: 1, code: Code.DeadlineExceeded });
    await eventually(async () => (await rpcCount("Watch", "DEADLINE_EXCEEDED", "grpc.health.v1.Health")) === before + 1);
  });
});

describe("a WatchTask stream its client cancels is counted CANCELED", () => {
  it.each(PROTOCOLS)("over %s, canceled at once or after its first message", async (protocol) => {
    const { taskId } = await svc.clients.grpc.createTask({ handler: "/test/hold" });
    const before = await watchCounts();
    const watch = (signal: AbortSignal, seen?: () => void) =>
      follow(
        (async function* () {
          for await (const m of svc.clients[protocol].watchTask({ taskId }, { signal })) {
            seen?.();
            yield m;
          }
        })(),
      );
    // Canceled at once, or a few milliseconds in: some before the server read the request.
    for (let ms = 0; ms < 10; ms++) {
      const controller = new AbortController();
      const end = watch(controller.signal);
      await new Promise((resolve) => setTimeout(resolve, ms));
      controller.abort();
      expect((await end).code).toBe(Code.Canceled);
    }
    // Canceled once its first message came.
    const controller = new AbortController();
    const seen = gate();
    const end = watch(controller.signal, seen.open);
    await seen.opened;
    controller.abort();
    expect((await end).code).toBe(Code.Canceled);
    const after = await eventually(async () => {
      const now = await watchCounts();
      return (now.CANCELED ?? 0) > (before.CANCELED ?? 0) ? now : undefined;
    });
    // Every stream that reached the server is counted CANCELED, under no other code.
    for (const code of Object.keys(after)) {
      if (code !== "CANCELED") expect(after[code], code).toBe(before[code]);
    }
  });
});

/** WatchTask streams counted, by code. */
async function watchCounts(): Promise<Record<string, number>> {
  const text = await (await fetch(`${svc.baseUrl}/metrics`)).text();
  const counts: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = /^baichuan_rpc_requests_total\{service="baichuan.v1.TaskService",method="WatchTask",code="(\w+)"\} (\d+)$/.exec(
      line,
    );
    if (m) counts[m[1]!] = Number(m[2]);
  }
  return counts;
}
