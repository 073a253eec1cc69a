/**
 * Every configurable limit, through the real listener: params size and depth, handler name
 * length, request body size, WatchTask streams per connection and in total, connections, and slow
 * clients (a connection that says nothing, headers that trickle, a watcher that never reads).
 */
import { connect as connectTcp, type Socket } from "node:net";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../gen/baichuan/v1/task_pb.js";
import { eventually, failureOf, postJson, startService, type TestService } from "./support/service.js";

let svc: TestService;
beforeAll(async () => {
  svc = await startService({
    limits: { maxParamsBytes: 200, maxParamsDepth: 3, maxHandlerLength: 20 },
    serverLimits: { maxBodyBytes: 1000, maxWatchers: 4, maxWatchersPerConnection: 2, maxConnections: 40, headersTimeoutMs: 400 },
  });
});
afterAll(async () => {
  await svc?.close();
});

describe("input limits", () => {
  it.each([
    ["params over maxParamsBytes", { handler: "/demo_api/echo", params: { s: "x".repeat(300) } }, "the limit is 200"],
    ["params deeper than maxParamsDepth", { handler: "/demo_api/echo", params: { a: { b: { c: { d: 1 } } } } }, "deeper than 3"],
    ["a handler longer than maxHandlerLength", { handler: `/demo_api/${"p".repeat(30)}`, params: {} }, "the limit is 20"],
  ])("%s: INVALID_ARGUMENT over RPC, ERR_BAD_PARAMS over legacy", async (_name, req, message) => {
    const [code, text] = await failureOf(svc.clients.grpc.createTask(req));
    expect(code).toBe(Code.InvalidArgument);
    expect(text).toContain(message);
    const legacy = await postJson(svc.baseUrl, "/baichuan/task_create", req);
    expect(legacy.json).toMatchObject({ stat: "ERR_BAD_PARAMS" });
    expect(legacy.json.error).toContain(message);
  });

  it("a body over maxBodyBytes: RESOURCE_EXHAUSTED over RPC, ERR_BAD_PARAMS over legacy", async () => {
    const big = { handler: "/demo_api/echo", params: { s: "x".repeat(2000) } };
    const [code] = await failureOf(svc.clients["connect-h1"].createTask(big));
    expect(code).toBe(Code.ResourceExhausted);
    const legacy = await postJson(svc.baseUrl, "/baichuan/task_create", big);
    expect(legacy.json.stat).toBe("ERR_BAD_PARAMS");
    expect(legacy.json.error).toContain("larger than 1000 bytes");
  });
});

describe("WatchTask streams", () => {
  /** A client on a connection of its own. */
  const freshClient = () => createClient(TaskService, createGrpcTransport({ baseUrl: svc.baseUrl }));

  it("are limited per connection and in total; closing streams frees their places", async () => {
    const long = async (client: ReturnType<typeof freshClient>) =>
      (await client.createTask({ handler: "/demo_api/sleep", params: { seconds: 5 } })).taskId;
    const a = freshClient();
    const b = freshClient();
    const c = freshClient();
    const controllers: AbortController[] = [];
    const open = async (client: ReturnType<typeof freshClient>) => {
      const controller = new AbortController();
      controllers.push(controller);
      const it = client.watchTask({ taskId: await long(client) }, { signal: controller.signal })[Symbol.asyncIterator]();
      await it.next(); // the first snapshot: the stream is open
      return it;
    };
    try {
      await open(a);
      await open(a);
      const third = a.watchTask({ taskId: await long(a) })[Symbol.asyncIterator]();
      const [perConnection, perConnectionText] = await failureOf(third.next());
      expect(perConnection).toBe(Code.ResourceExhausted);
      expect(perConnectionText).toContain("per connection");

      await open(b);
      await open(b);
      const [total, totalText] = await failureOf(
        c
          .watchTask({ taskId: await long(c) })
          [Symbol.asyncIterator]()
          .next(),
      );
      expect(total).toBe(Code.ResourceExhausted);
      expect(totalText).toContain("its limit");

      controllers[0]!.abort();
      await eventually(async () => {
        const it = c.watchTask({ taskId: await long(c) })[Symbol.asyncIterator]();
        return (
          (await it.next().then(
            () => true,
            () => false,
          )) || undefined
        );
      });
    } finally {
      for (const controller of controllers) controller.abort();
    }
  });
});

describe("slow and stalled clients", () => {
  const rawSocket = () =>
    new Promise<Socket>((resolve, reject) => {
      const s = connectTcp({ host: "127.0.0.1", port: svc.server.port }, () => resolve(s));
      s.once("error", reject);
    });
  const closed = (s: Socket) =>
    new Promise<number>((resolve) => {
      const t0 = Date.now();
      s.once("close", () => resolve(Date.now() - t0));
      s.on("error", () => {});
      s.resume();
    });

  it("closes a connection that sends nothing", async () => {
    const s = await rawSocket();
    expect(await closed(s)).toBeLessThan(5000);
  });

  it("closes an HTTP/1.1 request whose headers trickle in (slowloris)", async () => {
    const s = await rawSocket();
    const done = closed(s);
    s.write("POST /baichuan/task_create HTTP/1.1\r\nHost: x\r\n");
    const timer = setInterval(() => s.writable && s.write("X-Slow: 1\r\n"), 100);
    try {
      expect(await done).toBeLessThan(5000);
    } finally {
      clearInterval(timer);
    }
  });

  it("closes a connection that sends half an HTTP/2 preface", async () => {
    const s = await rawSocket();
    const done = closed(s);
    s.write("PRI * HTTP/2.0\r\n");
    expect(await done).toBeLessThan(5000);
  });

  it("keeps serving others while a watcher never reads its stream", async () => {
    const { taskId } = await svc.clients.grpc.createTask({ handler: "/demo_api/sleep", params: { seconds: 0.2 } });
    const s = await rawSocket();
    s.pause(); // never read
    const body = JSON.stringify({ taskId });
    s.write(
      `POST /baichuan.v1.TaskService/WatchTask HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+json\r\nContent-Length: ${body.length + 5}\r\n\r\n`,
    );
    const frame = Buffer.alloc(5);
    frame.writeUInt32BE(body.length, 1);
    s.write(Buffer.concat([frame, Buffer.from(body)]));
    // Others are served meanwhile.
    const client = createClient(TaskService, createConnectTransport({ baseUrl: svc.baseUrl, httpVersion: "1.1" }));
    for (let i = 0; i < 20; i++) {
      const { taskId: id } = await client.createTask({ handler: "/demo_api/ping" });
      expect((await client.getTask({ taskId: id })).task?.id).toBe(id);
    }
    s.destroy();
  });

  it("refuses connections past maxConnections", async () => {
    const sockets = await Promise.all(Array.from({ length: 40 }, () => rawSocket()));
    try {
      const extra = await rawSocket();
      expect(await closed(extra)).toBeLessThan(300); // closed at once, not after the header timeout
    } finally {
      for (const s of sockets) s.destroy();
    }
  });
});
