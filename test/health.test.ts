/**
 * gRPC health checking (`grpc.health.v1.Health`) and /healthz, on the real listener with a real
 * redis-server: the statuses Check answers, what Watch sends across a Redis outage and at shutdown,
 * no token needed, and no Redis round trip per check.
 */
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import type { TestRedis } from "./support/redis.js";
import { codeOf, eventually, startService, type TestService } from "./support/service.js";
import { sleep } from "./support/time.js";

const TASK_SERVICE = "baichuan.v1.TaskService";
const UNKNOWN_SERVICE = "no.such.v1.Service";

type HealthProtocol = "grpc" | "connect";
const HEALTH_PROTOCOLS: HealthProtocol[] = ["grpc", "connect"];

/** Health clients of a service: gRPC (HTTP/2) and Connect (HTTP/1.1). */
function healthClients(svc: TestService): Record<HealthProtocol, Client<typeof Health>> {
  return {
    grpc: createClient(Health, createGrpcTransport({ baseUrl: svc.baseUrl })),
    connect: createClient(Health, createConnectTransport({ baseUrl: svc.baseUrl, httpVersion: "1.1" })),
  };
}

/** A Watch stream read in the background: the statuses received so far, and how it ended. */
interface Followed {
  statuses: Status[];
  /** "ended" when the server ended the stream without error, else the error. */
  ended: Promise<"ended" | ConnectError>;
  settled(): boolean;
  cancel(): void;
}

function follow(client: Client<typeof Health>, service: string): Followed {
  const controller = new AbortController();
  const statuses: Status[] = [];
  let settled = false;
  const ended = (async () => {
    for await (const { status } of client.watch({ service }, { signal: controller.signal })) statuses.push(status);
    return "ended" as const;
  })()
    .catch((err: unknown) => ConnectError.from(err))
    .finally(() => {
      settled = true;
    });
  return { statuses, ended, settled: () => settled, cancel: () => controller.abort() };
}

/** Wait until a stream has received `n` statuses (a longer wait for Redis to come back). */
const received = (w: Followed, n: number) => eventually(() => w.statuses.length >= n || undefined, 60_000);

async function healthz(svc: TestService): Promise<{ status: number; json: any }> {
  const res = await fetch(`${svc.baseUrl}/healthz`);
  return { status: res.status, json: await res.json() };
}

/** Commands Redis has run so far (INFO commandstats), leaving out INFO itself (the test's own). */
async function commandsRun(redis: TestRedis): Promise<number> {
  const info = await redis.client.info("commandstats");
  let total = 0;
  for (const m of info.matchAll(/^cmdstat_([\w|]+):calls=(\d+)/gm)) if (m[1] !== "info") total += Number(m[2]);
  return total;
}

// No worker and no sweeper: nothing else sends Redis commands while a test counts them.
let svc: TestService;
let clients: Record<HealthProtocol, Client<typeof Health>>;
beforeAll(async () => {
  svc = await startService({ worker: false });
  clients = healthClients(svc);
});
afterAll(async () => {
  await svc?.close();
});

describe("Check", () => {
  it.each(HEALTH_PROTOCOLS)('answers SERVING for "" and for baichuan.v1.TaskService over %s', async (protocol) => {
    expect((await clients[protocol].check({ service: "" })).status).toBe(Status.SERVING);
    expect((await clients[protocol].check({ service: TASK_SERVICE })).status).toBe(Status.SERVING);
  });

  it.each(HEALTH_PROTOCOLS)("answers NOT_FOUND for a service the server does not know over %s", async (protocol) => {
    expect(await codeOf(clients[protocol].check({ service: UNKNOWN_SERVICE }))).toBe(Code.NotFound);
    expect(await codeOf(clients[protocol].check({ service: `${TASK_SERVICE}x` }))).toBe(Code.NotFound);
  });

  it("costs no Redis round trip (nor does /healthz)", async () => {
    const before = await commandsRun(svc.redis);
    for (let i = 0; i < 20; i++) {
      await clients.grpc.check({ service: "" });
      await clients.connect.check({ service: TASK_SERVICE });
      expect((await healthz(svc)).status).toBe(200);
    }
    expect(await commandsRun(svc.redis)).toBe(before);
  });

  it("/healthz answers 200 with the legacy body", async () => {
    expect(await healthz(svc)).toEqual({ status: 200, json: { stat: "OK" } });
  });
});

describe("Watch", () => {
  it.each(HEALTH_PROTOCOLS)(
    "sends SERVICE_UNKNOWN for an unknown service and keeps the stream open over %s",
    async (protocol) => {
      const w = follow(clients[protocol], UNKNOWN_SERVICE);
      await received(w, 1);
      await sleep(300); // a bounded look: no second message
      expect(w.statuses).toEqual([Status.SERVICE_UNKNOWN]);
      expect(w.settled()).toBe(false);
      w.cancel();
      const ended = await w.ended;
      expect(ended instanceof ConnectError && ended.code).toBe(Code.Canceled);
    },
  );
});

describe("Watch streams, open to anyone, are bounded", () => {
  it("answers RESOURCE_EXHAUSTED past the server's watcher limit, and takes new ones once some close", async () => {
    const small = await startService({ redis: svc.redis, worker: false, serverLimits: { maxWatchers: 2 } });
    try {
      const c = healthClients(small).grpc;
      const open = [follow(c, ""), follow(c, "")];
      for (const w of open) await received(w, 1);
      const third = follow(c, "");
      const ended = await third.ended;
      expect(ended instanceof ConnectError && ended.code).toBe(Code.ResourceExhausted);
      open[0]!.cancel();
      await open[0]!.ended;
      // The server hears of the cancel a moment later: try until a new stream is taken.
      const again = await eventually(async () => {
        const w = follow(c, "");
        await eventually(() => w.statuses.length > 0 || w.settled() || undefined);
        if (w.statuses.length > 0) return w;
        return undefined;
      });
      expect(again.statuses).toEqual([Status.SERVING]);
      again.cancel();
      open[1]!.cancel();
    } finally {
      await small.close();
    }
  });
});

describe("with bearer tokens configured", () => {
  let secured: TestService;
  beforeAll(async () => {
    secured = await startService({ redis: svc.redis, authTokens: ["a-secret-of-16-chars-or-more"], worker: false });
  });
  afterAll(async () => {
    await secured?.close();
  });

  it("the task service refuses a call without a token (so tokens are on)", async () => {
    expect(await codeOf(secured.clients.grpc.getTask({ taskId: "0000000000000000000000" }))).toBe(Code.Unauthenticated);
  });

  it.each(HEALTH_PROTOCOLS)("Check and Watch need no token over %s", async (protocol) => {
    const client = healthClients(secured)[protocol];
    expect((await client.check({ service: "" })).status).toBe(Status.SERVING);
    expect((await client.check({ service: TASK_SERVICE })).status).toBe(Status.SERVING);
    const w = follow(client, "");
    await received(w, 1);
    expect(w.statuses).toEqual([Status.SERVING]);
    w.cancel();
    await w.ended;
  });

  it("/healthz needs no token", async () => {
    expect((await healthz(secured)).status).toBe(200);
  });
});

describe("at shutdown", () => {
  it("Watch streams get NOT_SERVING, then end with UNAVAILABLE when the server closes", async () => {
    const closing = await startService({ redis: svc.redis, worker: false });
    try {
      const closingClients = healthClients(closing);
      const server = follow(closingClients.grpc, "");
      const tasks = follow(closingClients.connect, TASK_SERVICE);
      const unknown = follow(closingClients.grpc, UNKNOWN_SERVICE);
      await Promise.all([received(server, 1), received(tasks, 1), received(unknown, 1)]);
      await closing.server.close();
      for (const w of [server, tasks, unknown]) {
        const ended = await w.ended;
        expect(ended instanceof ConnectError && ended.code).toBe(Code.Unavailable);
      }
      expect(server.statuses).toEqual([Status.SERVING, Status.NOT_SERVING]);
      expect(tasks.statuses).toEqual([Status.SERVING, Status.NOT_SERVING]);
      expect(unknown.statuses).toEqual([Status.SERVICE_UNKNOWN]);
    } finally {
      await closing.close(); // closing the server again is harmless
    }
  });
});

// Last: it stops the Redis the services above share.
describe("across a Redis outage", () => {
  it("Watch sends SERVING, NOT_SERVING while Redis is down, SERVING once it is back, never the same twice; Check and /healthz agree", async () => {
    const server = follow(clients.grpc, "");
    const tasks = follow(clients.connect, TASK_SERVICE);
    await Promise.all([received(server, 1), received(tasks, 1)]);
    expect(server.statuses).toEqual([Status.SERVING]);
    expect(tasks.statuses).toEqual([Status.SERVING]);

    await svc.redis.stop();
    await Promise.all([received(server, 2), received(tasks, 2)]);
    expect(server.statuses).toEqual([Status.SERVING, Status.NOT_SERVING]);
    expect(tasks.statuses).toEqual([Status.SERVING, Status.NOT_SERVING]);
    for (const protocol of HEALTH_PROTOCOLS) {
      expect((await clients[protocol].check({ service: "" })).status).toBe(Status.NOT_SERVING);
      expect((await clients[protocol].check({ service: TASK_SERVICE })).status).toBe(Status.NOT_SERVING);
    }
    const down = await healthz(svc);
    expect(down.status).toBe(503);
    expect(down.json.stat).toBe("ERR_REDIS_UNAVAILABLE");

    await svc.redis.restart();
    await Promise.all([received(server, 3), received(tasks, 3)]);
    await sleep(300); // time for a repeated or spurious message to show
    expect(server.statuses).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]);
    expect(tasks.statuses).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]);
    expect((await clients.grpc.check({ service: "" })).status).toBe(Status.SERVING);
    expect(await healthz(svc)).toEqual({ status: 200, json: { stat: "OK" } });

    server.cancel();
    tasks.cancel();
    await Promise.all([server.ended, tasks.ended]);
  });
});
