/**
 * Many instances on a real Redis Cluster: 2 API-only processes and 3 worker-only processes (the real
 * binary), 50 handlers spread over the cluster's slots. Tasks are created on the first API and
 * watched on the second; in the middle one master is failed over to its replica and one worker
 * process is killed. Every accepted task must end FINISHED, none lost, and the work must spread
 * over the workers and handlers.
 */
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService, TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import * as keys from "../src/store/keys.js";
import { startCluster, type TestCluster } from "./support/cluster.js";
import { freePort } from "./support/net.js";
import { type ServiceProcess, startProcess } from "./support/process.js";

const HANDLERS = Array.from({ length: 50 }, (_, i) => `/scale/h${i}`);
const ROUNDS = 12; // one task per handler per round: 600 tasks

let cluster: TestCluster;
const apis: Array<{ proc: ServiceProcess; url: string }> = [];
const workers: ServiceProcess[] = [];

beforeAll(async () => {
  cluster = await startCluster();
  const common = { BAICHUAN_REDIS_URL: cluster.url, BAICHUAN_LEASE_SECONDS: "1", BAICHUAN_SWEEP_SECONDS: "1" };
  for (let i = 0; i < 3; i++) {
    workers.push(
      startProcess({ ...common, BAICHUAN_API: "0", BAICHUAN_HANDLERS_DIR: "test/fixtures/scale", BAICHUAN_CONCURRENCY: "16" }),
    );
  }
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    const proc = startProcess({ ...common, BAICHUAN_WORKER: "0", BAICHUAN_HOST: "127.0.0.1", BAICHUAN_PORT: String(port) });
    apis.push({ proc, url: `http://127.0.0.1:${port}` });
  }
  await Promise.all([
    ...workers.map((w) => w.waitFor(/"worker started"/, 90_000)),
    ...apis.map((a) => a.proc.waitFor(/"listening"/, 90_000)),
  ]);
}, 90_000);

afterAll(async () => {
  for (const p of [...workers, ...apis.map((a) => a.proc)]) p.kill("SIGKILL");
  await cluster?.destroy();
});

/** Follow a task on `client` to its end, watching again if a stream breaks (as a client would). */
async function follow(client: ReturnType<typeof createClient<typeof TaskService>>, taskId: string) {
  let rewatched = 0;
  for (;;) {
    try {
      let last: TaskStatus | undefined;
      for await (const { task } of client.watchTask({ taskId })) last = task!.status;
      if (last !== undefined) return { status: last, rewatched };
    } catch (err) {
      if (!(err instanceof ConnectError) || ![Code.Unavailable, Code.Internal, Code.Unknown].includes(err.code)) throw err;
    }
    if (++rewatched > 50) throw new Error(`task ${taskId}: gave up watching`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("2 API processes, 3 worker processes, 50 handlers on a 3-master cluster", () => {
  it("runs every accepted task to FINISHED through a master failover and a killed worker, watched on the other API", async () => {
    const creator = createClient(TaskService, createGrpcTransport({ baseUrl: apis[0]!.url }));
    // Watchers on the other API, over two connections.
    const watchers = [0, 1].map(() => createClient(TaskService, createGrpcTransport({ baseUrl: apis[1]!.url })));
    const accepted: Array<{ id: string; i: number }> = [];
    let refused = 0;
    const follows: Array<Promise<{ status: TaskStatus; rewatched: number }>> = [];
    const victimMaster = cluster.masterOf(keys.keySlot(keys.queueKey(HANDLERS[0]!)));
    let newMaster = 0;

    for (let round = 0; round < ROUNDS; round++) {
      const items = HANDLERS.map((handler, h) => ({
        handler,
        params: { i: round * HANDLERS.length + h, ms: 20 },
        options: { maxAttempts: 3 },
      }));
      try {
        const { results } = await creator.createTasks({ tasks: items });
        results.forEach((r, k) => {
          if (r.taskId) {
            accepted.push({ id: r.taskId, i: items[k]!.params.i });
            follows.push(follow(watchers[accepted.length % 2]!, r.taskId));
          } else refused++;
        });
      } catch {
        refused += items.length; // the whole call failed (a retrying client would send it again)
      }
      if (round === 4) {
        newMaster = await cluster.failover(victimMaster); // one master hands over to its replica
        workers[0]!.kill("SIGKILL"); // and one worker process dies with tasks in hand
      }
      await new Promise((r) => setTimeout(r, 100));
    }

    const ends = await Promise.all(follows);
    const statuses = new Map<TaskStatus, number>();
    for (const e of ends) statuses.set(e.status, (statuses.get(e.status) ?? 0) + 1);
    expect(accepted.length).toBeGreaterThanOrEqual(ROUNDS * HANDLERS.length * 0.9);
    expect(Object.fromEntries(statuses)).toEqual({ [TaskStatus.FINISHED]: accepted.length });

    // Read back on the creating API: every result is the task's own.
    const byPid = new Map<number, number>();
    const byHandler = new Map<string, number>();
    for (const { id, i } of accepted) {
      const { task } = await creator.getTask({ taskId: id });
      const result = toJson(ValueSchema, task!.result!) as { i: number; pid: number };
      expect(result.i).toBe(i);
      byPid.set(result.pid, (byPid.get(result.pid) ?? 0) + 1);
      byHandler.set(task!.handler, (byHandler.get(task!.handler) ?? 0) + 1);
    }
    // Work spread: every handler ran all its tasks; the two surviving workers each ran a fair share.
    expect(byHandler.size).toBe(HANDLERS.length);
    const survivors = [workers[1]!.child.pid!, workers[2]!.child.pid!];
    for (const pid of survivors) expect(byPid.get(pid) ?? 0).toBeGreaterThan(accepted.length * 0.2);

    // Nothing is left in any queue or running set, on any shard.
    for (const h of HANDLERS) {
      expect(await cluster.client.llen(keys.queueKey(h))).toBe(0);
      expect(await cluster.client.zcard(keys.wipKey(h))).toBe(0);
    }
    expect(newMaster).not.toBe(victimMaster);
    const rewatched = ends.reduce((n, e) => n + e.rewatched, 0);
    console.log(
      `[figures] scale-out: ${accepted.length} tasks accepted (${refused} refused during the failover), all FINISHED; ` +
        `runs by worker pid: ${JSON.stringify(Object.fromEntries(byPid))}; watches resumed: ${rewatched}`,
    );
  }, 120_000);
});
