/**
 * WatchTask under load, with real clients over all four protocols: WATCHERS streams open at once on
 * one server, then tasks (short random durations, some failing) created steadily for LOAD_SECONDS
 * while streams end and new ones open. Each watcher follows one task; most are opened right after
 * the create, some later (while the task runs, or after it ended).
 *
 * Size: 300 streams, then 10 s of load under `npm test`; 1,000 streams, then 60 s under
 * `npm run test:soak` (BAICHUAN_SOAK=1). BAICHUAN_LOAD_WATCHERS and BAICHUAN_LOAD_SECONDS set others.
 *
 * Build-up: the tasks' handlers wait on a gate until WATCHERS streams are established at once, so
 * the figure is reached however slow the machine is (the streams wait in QUEUED or STARTED); then
 * the gate opens and the churn runs for the period.
 *
 * Checked: every stream ends with exactly one terminal message (FINISHED for sleep, FAILED for fail)
 * and its statuses only move forward; the service's Redis connections do not grow with the number
 * of watchers (they share one subscriber connection); no task channel stays subscribed afterwards.
 */
import http from "node:http";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { type Client, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Task, TaskService, TaskStatus } from "../gen/baichuan/v1/task_pb.js";
import type { JsonObject } from "../src/core/domain.js";
import { eventually, gate, PROTOCOLS, type Protocol, startService, type TestService } from "./support/service.js";
import { soakSize } from "./support/soak.js";
import { storeOf } from "./support/store.js";

const LOAD_SECONDS = soakSize("BAICHUAN_LOAD_SECONDS", { quick: 10, soak: 60 });
const WATCHERS = Math.floor(soakSize("BAICHUAN_LOAD_WATCHERS", { quick: 300, soak: 1000 }));
/** Streams kept open a little over WATCHERS, so that WATCHERS are established at once despite churn. */
const OPEN_TARGET = Math.ceil(WATCHERS * 1.15);
/** Clients per protocol: every HTTP/2 client multiplexes its streams over one connection. */
const CLIENTS_PER_PROTOCOL = 2;
/** Most creates in flight in one wave. */
const WAVE = 100;
/** Share of watchers opened later than right after the create (0.2 - 6 s later). */
const LATE_SHARE = 0.12;
/** Longest the build-up may take (a bound against a hang, within the tasks' 180 s timeout). */
const BUILD_UP_MS = 120_000;
/** Longest a single stream may stay open before it counts as hung (build-up included). */
const STREAM_TIMEOUT_MS = BUILD_UP_MS + 120_000;
const DRAIN_MS = 90_000;
/** Held by the load's handlers until the build-up is done. */
const hold = gate();

let svc: TestService;
let agent: http.Agent;
const watchClients: Array<{ protocol: Protocol; client: Client<typeof TaskService> }> = [];

/** /demo_api/sleep once the gate is open. */
async function loadSleep(params: JsonObject) {
  await hold.opened;
  await new Promise((resolve) => setTimeout(resolve, (params.seconds as number) * 1000));
  return { slept: params.seconds as number };
}

/** /demo_api/fail once the gate is open. */
async function loadFail(params: JsonObject) {
  await hold.opened;
  throw new Error(String(params.message));
}

beforeAll(async () => {
  svc = await startService({ worker: { concurrency: 50 }, handlers: { "/load/sleep": loadSleep, "/load/fail": loadFail } });
  // HTTP/1.1 connections are pooled and kept alive, as browsers and HTTP/1.1 clients do. (With a new
  // connection per stream, some 100 connects a second, this process's busy event loop could not
  // accept them as fast: Node accepts one connection per event loop turn (libuv >= 1.45), the
  // listen queue of 511 overflowed, the kernel dropped the handshakes, and calls failed with
  // ECONNRESET or "socket hang up" before the server ever saw them.) The server keeps idle
  // connections 65 s, longer than any idle time here, so a reused connection is never one it closes.
  agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
  const baseUrl = svc.baseUrl;
  for (let i = 0; i < CLIENTS_PER_PROTOCOL; i++) {
    for (const protocol of PROTOCOLS) {
      const transport = {
        grpc: () => createGrpcTransport({ baseUrl }),
        "connect-h2": () => createConnectTransport({ baseUrl, httpVersion: "2" }),
        "connect-h1": () => createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } }),
        "grpc-web": () => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } }),
      }[protocol]();
      watchClients.push({ protocol, client: createClient(TaskService, transport) });
    }
  }
});

afterAll(async () => {
  agent?.destroy();
  await svc?.close();
});

/** Redis connections open now (CLIENT LIST, this test's own inspection connection included). */
async function redisConnections(): Promise<number> {
  const list = (await svc.redis.client.call("CLIENT", "LIST")) as string;
  return list.split("\n").filter((l) => l.trim() !== "").length;
}

async function taskChannels(): Promise<number> {
  return ((await svc.redis.client.call("PUBSUB", "SHARDCHANNELS", "mq:events:*")) as string[]).length;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Watch {
  taskId: string;
  handler: "/load/sleep" | "/load/fail";
  seconds: number;
  protocol: Protocol;
  late: boolean;
  statuses: TaskStatus[];
  last?: Task;
  /** Client time the terminal message arrived, and its latency from the task's ended_at. */
  latencyMs?: number;
  error?: string;
}

it(
  `${WATCHERS} concurrent WatchTask streams over ${PROTOCOLS.join(", ")}, then tasks created for ${LOAD_SECONDS} s`,
  async () => {
    const connectionsBefore = await redisConnections();
    const subscriptionsBefore = storeOf(svc.bc).subscriptions.size; // the worker's wake channels
    const watches: Watch[] = [];
    const problems: string[] = [];
    let issued = 0; // watch calls made and not ended
    let established = 0; // streams that delivered their first message and have not ended
    let maxEstablished = 0;
    const builtUp = gate(); // opened when WATCHERS streams are established at once
    const establishedBy = new Map<Protocol, { now: number; max: number }>(PROTOCOLS.map((p) => [p, { now: 0, max: 0 }]));
    let maxConnections = connectionsBefore;
    let maxChannels = 0;
    let pendingLate = 0;
    let creating = 0;
    const running = new Set<Promise<void>>();
    let next = 0;

    async function watch(w: Watch, client: Client<typeof TaskService>): Promise<void> {
      issued++;
      let first = true;
      try {
        for await (const { task } of client.watchTask({ taskId: w.taskId }, { timeoutMs: STREAM_TIMEOUT_MS })) {
          const now = Date.now();
          if (first) {
            first = false;
            established++;
            maxEstablished = Math.max(maxEstablished, established);
            if (established >= WATCHERS) builtUp.open();
            const by = establishedBy.get(w.protocol)!;
            by.max = Math.max(by.max, ++by.now);
          }
          if (!task) {
            w.error = "a message without a task";
            continue;
          }
          w.statuses.push(task.status);
          w.last = task;
          if (
            (task.status === TaskStatus.FINISHED || task.status === TaskStatus.FAILED) &&
            task.endedAt &&
            w.statuses.length > 1
          ) {
            w.latencyMs = now - timestampMs(task.endedAt);
          }
        }
      } catch (err) {
        const ce = ConnectError.from(err);
        w.error = `${ce.code} ${ce.rawMessage}`;
      } finally {
        issued--;
        if (!first) {
          established--;
          establishedBy.get(w.protocol)!.now--;
        }
      }
    }

    /** Create one task and watch it, at once or a little later. */
    async function createAndWatch(): Promise<void> {
      const n = next++;
      const { protocol, client } = watchClients[n % watchClients.length]!;
      // Creates go over HTTP/2 (one multiplexed connection each), for the same reason as the agent above.
      const creator = svc.clients[n % 2 === 0 ? "grpc" : "connect-h2"];
      const fails = Math.random() < 0.15;
      const seconds = Math.round(Math.random() * 400) / 1000;
      const handler = fails ? "/load/fail" : "/load/sleep";
      const late = Math.random() < LATE_SHARE;
      creating++;
      const { taskId } = await creator
        .createTask({ handler, params: fails ? { message: `fail ${n}` } : { seconds } })
        .finally(() => creating--);
      const w: Watch = { taskId, handler, seconds, protocol, late, statuses: [] };
      watches.push(w);
      if (late) {
        pendingLate++;
        await new Promise((r) => setTimeout(r, 200 + Math.random() * 5800));
        pendingLate--;
      }
      await watch(w, client);
    }

    // Create in waves, keeping OPEN_TARGET watch calls in flight: first until WATCHERS streams are
    // established (the handlers wait meanwhile), then, with the handlers running, for the period.
    let deadline = Number.POSITIVE_INFINITY;
    let buildUpTimer: NodeJS.Timeout | undefined;
    const buildUp = Promise.race([
      builtUp.opened,
      new Promise((resolve) => (buildUpTimer = setTimeout(resolve, BUILD_UP_MS))),
    ]).then(() => {
      clearTimeout(buildUpTimer);
      hold.open();
      deadline = Date.now() + LOAD_SECONDS * 1000;
    });
    const tick = () => new Promise((resolve) => setTimeout(resolve, 50));
    const sampler = setInterval(async () => {
      try {
        maxConnections = Math.max(maxConnections, await redisConnections());
        maxChannels = Math.max(maxChannels, await taskChannels());
      } catch {
        // the inspection connection is busy or closing; the next sample will do
      }
    }, 1000);
    try {
      while (Date.now() < deadline) {
        const wave = Math.min(WAVE, OPEN_TARGET - issued - pendingLate - creating);
        for (let i = 0; i < wave; i++) {
          const p: Promise<void> = createAndWatch()
            .catch((err: unknown) => {
              problems.push(`create failed: ${err instanceof Error ? err.message : String(err)}`);
            })
            .finally(() => running.delete(p));
          running.add(p);
        }
        await (deadline === Number.POSITIVE_INFINITY ? Promise.race([buildUp, tick()]) : tick());
      }
      const drainDeadline = Date.now() + DRAIN_MS;
      while (running.size > 0 && Date.now() < drainDeadline)
        await Promise.race([...running, new Promise((r) => setTimeout(r, 1000))]);
      expect(running.size, "watchers still open after the drain").toBe(0);
    } finally {
      clearInterval(sampler);
    }

    // Every stream: statuses strictly forward, exactly one terminal message, last, matching the handler.
    const firstSeen = { QUEUED: 0, STARTED: 0, terminal: 0 };
    for (const w of watches) {
      const label = `${w.taskId} (${w.handler} over ${w.protocol}${w.late ? ", watched late" : ""})`;
      if (w.error) {
        problems.push(`${label}: stream failed: ${w.error}`);
        continue;
      }
      const terminal = w.statuses.filter((s) => s === TaskStatus.FINISHED || s === TaskStatus.FAILED);
      const expected = w.handler === "/load/fail" ? TaskStatus.FAILED : TaskStatus.FINISHED;
      if (terminal.length !== 1) problems.push(`${label}: ${terminal.length} terminal messages`);
      if (w.statuses.at(-1) !== expected) {
        problems.push(`${label}: last status ${TaskStatus[w.statuses.at(-1) ?? 0]}, expected ${TaskStatus[expected]}`);
      }
      for (let i = 1; i < w.statuses.length; i++) {
        if (!(w.statuses[i]! > w.statuses[i - 1]!)) {
          problems.push(`${label}: statuses ${w.statuses.map((s) => TaskStatus[s]).join(" -> ")}`);
          break;
        }
      }
      if (w.statuses.some((s) => s === TaskStatus.UNSPECIFIED)) problems.push(`${label}: an UNSPECIFIED status`);
      if (expected === TaskStatus.FINISHED && w.last?.status === expected) {
        const slept = w.last.result?.kind.case === "structValue" ? w.last.result.kind.value.fields.slept?.kind.value : undefined;
        if (slept !== w.seconds) problems.push(`${label}: result slept=${String(slept)}, expected ${w.seconds}`);
      }
      if (expected === TaskStatus.FAILED && w.last?.status === expected && w.last.errorCode !== "ERR_SERVER_EXCEPTION") {
        problems.push(`${label}: error_code ${w.last.errorCode}`);
      }
      const s0 = w.statuses[0];
      if (s0 === TaskStatus.QUEUED) firstSeen.QUEUED++;
      else if (s0 === TaskStatus.STARTED) firstSeen.STARTED++;
      else firstSeen.terminal++;
    }

    const latencies = watches
      .map((w) => w.latencyMs)
      .filter((x): x is number => x !== undefined)
      .sort((a, b) => a - b);
    const connectionsAfter = await redisConnections();
    const perProtocol = PROTOCOLS.map((p) => `${p}=${watches.filter((w) => w.protocol === p).length}`).join(" ");
    console.log(
      [
        `watch load: build-up then ${LOAD_SECONDS} s, ${watches.length} tasks created (${watches.filter((w) => w.handler === "/load/fail").length} failing), ${watches.length} watchers (${perProtocol})`,
        `  max concurrent established streams: ${maxEstablished} (target ${WATCHERS}; per protocol ${PROTOCOLS.map((p) => `${p}=${establishedBy.get(p)!.max}`).join(" ")}); max task channels subscribed: ${maxChannels}`,
        `  first message seen: QUEUED=${firstSeen.QUEUED} STARTED=${firstSeen.STARTED} already ended=${firstSeen.terminal}`,
        `  notification latency (ended_at -> terminal message at the client, ${latencies.length} streams that saw the change live): p50=${percentile(latencies, 50)} ms p99=${percentile(latencies, 99)} ms max=${latencies.at(-1)} ms`,
        `  Redis connections: before=${connectionsBefore} max during=${maxConnections} after=${connectionsAfter}`,
      ].join("\n"),
    );

    expect(problems.slice(0, 20), `${problems.length} problems`).toEqual([]);
    expect(maxEstablished).toBeGreaterThanOrEqual(WATCHERS);
    // Watchers were opened before the worker started their task, while it ran, and after it ended.
    expect(firstSeen.QUEUED).toBeGreaterThan(0);
    expect(firstSeen.STARTED).toBeGreaterThan(0);
    expect(firstSeen.terminal).toBeGreaterThan(0);
    // One subscriber connection serves every watcher: the count does not follow the watchers.
    expect(maxConnections).toBeLessThanOrEqual(connectionsBefore + 1);
    // Every stream released its subscription.
    await eventually(async () => ((await taskChannels()) === 0 ? true : undefined), 60_000);
    expect(storeOf(svc.bc).subscriptions.size).toBe(subscriptionsBefore);
  },
  BUILD_UP_MS + LOAD_SECONDS * 1000 + DRAIN_MS + 60_000,
);
