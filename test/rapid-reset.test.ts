/**
 * HTTP/2 rapid reset (CVE-2023-44487) against the real listener: an attacker writes raw frames,
 * HEADERS then RST_STREAM(CANCEL) for stream after stream, reconnecting whenever the server closes
 * its connection, while another client makes ordinary calls. Checked: every attacking connection
 * ends with GOAWAY ENHANCE_YOUR_CALM and is closed; the other client's calls stay fast; the access
 * log has no line per reset stream, but one summary line per connection.
 */
import net from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { RESET_BUDGET } from "../src/http/http2-guard.js";
import { createLogger } from "../src/ops/log.js";
import { eventually, startService, type TestService } from "./support/service.js";

const ENHANCE_YOUR_CALM = 11;
/** Calls the other client makes while the attack runs. */
const CALLS = 30;

let svc: TestService;
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  const logger = createLogger("info", {}, (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  svc = await startService({ logger });
});

afterAll(async () => {
  await svc?.close();
});

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

/** An HPACK string literal (not Huffman-coded, shorter than 127 bytes). */
const literal = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s)]);

/** HEADERS of a POST /baichuan.v1.TaskService/GetTask (gRPC), in HPACK without indexing. */
const HEADER_BLOCK = Buffer.concat([
  Buffer.from([0x83, 0x86]), // :method POST, :scheme http
  Buffer.from([0x04]),
  literal("/baichuan.v1.TaskService/GetTask"), // :path
  Buffer.from([0x01]),
  literal("localhost"), // :authority
  Buffer.from([0x0f, 0x10]),
  literal("application/grpc"), // content-type
]);

interface Attack {
  /** GOAWAY frames received: [error code, last stream id]. */
  goaways: Array<[number, number]>;
  streams: number;
  connections: number;
  /** Connections closed by the server after its GOAWAY. */
  closedAfterGoaway: number;
}

/** One attacking connection: HEADERS + RST_STREAM pairs until the server sends GOAWAY or closes. */
async function attackOnce(port: number, attack: Attack, stop: () => boolean): Promise<void> {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  await new Promise((resolve) => socket.once("connect", resolve));
  attack.connections++;
  let goaway = false;
  let closed = false;
  const onClose = new Promise((resolve) => socket.once("close", resolve)).then(() => {
    closed = true;
  });
  let input = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    input = Buffer.concat([input, chunk]);
    while (input.length >= 9) {
      const length = input.readUIntBE(0, 3);
      if (input.length < 9 + length) break;
      const [type, flags] = [input[3], input[4]!];
      const payload = input.subarray(9, 9 + length);
      if (type === 7) {
        attack.goaways.push([payload.readUInt32BE(4), payload.readUInt32BE(0) & 0x7fffffff]);
        goaway = true;
      }
      if (type === 4 && !(flags & 1)) socket.write(frame(4, 1, 0, Buffer.alloc(0))); // SETTINGS ACK
      input = input.subarray(9 + length);
    }
  });
  socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), frame(4, 0, 0, Buffer.alloc(0))]));
  let id = 1;
  while (!goaway && !closed && !stop() && id < 2 ** 30) {
    const frames: Buffer[] = [];
    for (let i = 0; i < 100; i++, id += 2) {
      frames.push(frame(1, 0x4, id, HEADER_BLOCK), frame(3, 0, id, Buffer.from([0, 0, 0, 8]))); // END_HEADERS; CANCEL
      attack.streams++;
    }
    socket.write(Buffer.concat(frames));
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (goaway) {
    // The server closes it; give up after a while (and count it as left open).
    const closedInTime = await Promise.race([onClose.then(() => true), new Promise((r) => setTimeout(() => r(false), 3000))]);
    if (closedInTime) attack.closedAfterGoaway++;
  }
  socket.destroy();
}

it("a rapid reset gets GOAWAY ENHANCE_YOUR_CALM while another client's calls stay fast", async () => {
  const { taskId } = await svc.clients.grpc.createTask({ handler: "/demo_api/ping" });
  const baseline: number[] = [];
  for (let i = 0; i < 20; i++) {
    const started = performance.now();
    await svc.clients.grpc.getTask({ taskId });
    baseline.push(performance.now() - started);
  }
  baseline.sort((a, b) => a - b);
  let done = false;
  const attack: Attack = { goaways: [], streams: 0, connections: 0, closedAfterGoaway: 0 };
  const attacking = (async () => {
    while (!done) await attackOnce(svc.server.port, attack, () => done);
  })();

  // The other client, on its own connection, while the attack runs.
  const durations: number[] = [];
  let connectionsAtStart = 0;
  let connectionsDuringCalls = 0;
  try {
    while (attack.streams < RESET_BUDGET.burst * 3) await new Promise((resolve) => setTimeout(resolve, 10));
    connectionsAtStart = attack.connections;
    for (let i = 0; i < CALLS; i++) {
      const started = performance.now();
      await svc.clients.grpc.getTask({ taskId });
      durations.push(performance.now() - started);
    }
    connectionsDuringCalls = attack.connections - connectionsAtStart;
  } finally {
    done = true;
    await attacking;
  }
  durations.sort((a, b) => a - b);
  const lastIds = attack.goaways.map(([, last]) => last);
  console.log(
    `[figures] rapid reset: ${attack.streams} streams sent on ${attack.connections} connections, each cut after ${Math.min(...lastIds) / 2}-${Math.max(...lastIds) / 2} streams; the other client's calls before: p50 ${baseline[10]!.toFixed(1)} ms, during ${CALLS} calls: p50 ${durations[CALLS / 2]!.toFixed(1)} ms, slowest ${durations.at(-1)!.toFixed(1)} ms`,
  );

  // Every connection that got a GOAWAY was told to calm down, and closed.
  expect(attack.goaways.length).toBeGreaterThanOrEqual(1);
  for (const [code] of attack.goaways) expect(code).toBe(ENHANCE_YOUR_CALM);
  expect(attack.closedAfterGoaway).toBe(attack.goaways.length);
  // The attack went on (new connections told to calm down) all the while the other client's calls
  // ran, and they stayed fast. Generous bounds: the attack's sender and the server share this
  // process, on a machine running other tests; 2-5 s per call was measured without the guard.
  expect(connectionsDuringCalls).toBeGreaterThanOrEqual(2);
  expect(durations[CALLS / 2]!).toBeLessThan(2000);
  expect(durations.at(-1)!).toBeLessThan(10_000);

  // No access line per reset stream; a summary per connection instead.
  const getTaskLines = lines.filter((l) => l.msg === "access" && l.path === "/baichuan.v1.TaskService/GetTask");
  expect(getTaskLines.length).toBeLessThan(CALLS + 50);
  const summaries = () => lines.filter((l) => l.msg === "http2: streams reset by the client before an answer");
  await eventually(() => summaries().length >= attack.goaways.length);
  expect(summaries().reduce((n, l) => n + (l.streams as number), 0)).toBeGreaterThanOrEqual(RESET_BUDGET.burst);
  // One warning per connection told to calm down (the last may have been dropped by the attacker first).
  const warnings = lines.filter((l) => String(l.msg).startsWith("http2: too many streams reset")).length;
  expect(warnings).toBeGreaterThanOrEqual(attack.goaways.length);
  expect(warnings).toBeLessThanOrEqual(attack.connections);
}, 120_000);
