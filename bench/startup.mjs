#!/usr/bin/env node
// Start-up time of the service: from spawning COMMAND to its "listening" log line (or the line
// `--until MSG` names, e.g. --until "worker started"), each run on a free port, against one
// redis-server (BAICHUAN_REDIS_URL, or one this script starts and stops). At that line the
// command's whole process group is killed, so the next run starts cold.
// Plain JavaScript, so that the measuring process does not pay for a TypeScript loader itself.
//
//   node bench/startup.mjs --runs 10 -- npm start
//   node bench/startup.mjs --runs 10 -- node --import tsx src/app/main.ts
//   BAICHUAN_API=0 node bench/startup.mjs --until "worker started" -- node dist/src/app/main.js
//
// Prints each run's milliseconds, then min / median / max; `--warmup N` runs first are not counted
// (default 1). On Linux each run also prints the CPU time (user + system, from /proc, 10 ms steps)
// the spawned process had used by then: less swayed than the wall time by other work on the machine
// (of the process spawned: for `npm start`, npm's, not the service's).
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, Socket } from "node:net";

const sep = process.argv.indexOf("--");
if (sep < 0 || sep === process.argv.length - 1) {
  console.error('usage: node bench/startup.mjs [--runs N] [--warmup N] [--until "MSG"] -- COMMAND [ARG ...]');
  process.exit(2);
}
const options = process.argv.slice(2, sep);
const command = process.argv.slice(sep + 1);
const option = (name, fallback) => (options.includes(name) ? Number(options[options.indexOf(name) + 1]) : fallback);
const runs = option("--runs", 10);
const warmup = option("--warmup", 1);
const until = options.includes("--until") ? options[options.indexOf("--until") + 1] : "listening";
const untilLine = `"msg":${JSON.stringify(until)}`;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function answers(port) {
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.once("connect", () => resolve(socket.destroy() || true));
    socket.once("error", () => resolve(false));
    socket.connect(port, "127.0.0.1");
  });
}

let redis;
let redisUrl = process.env.BAICHUAN_REDIS_URL;
if (!redisUrl) {
  const port = await freePort();
  redis = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  while (!(await answers(port))) await new Promise((r) => setTimeout(r, 20));
  redisUrl = `redis://127.0.0.1:${port}/0`;
}

/** User + system CPU milliseconds of process `pid` so far (Linux), or undefined. */
function cpuMs(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime in clock ticks of 10 ms
  } catch {
    return undefined;
  }
}

/** One run: milliseconds from spawn to the awaited log line, and CPU milliseconds used by then. */
async function once() {
  const env = { ...process.env, BAICHUAN_REDIS_URL: redisUrl, BAICHUAN_PORT: String(await freePort()) };
  const started = performance.now();
  const child = spawn(command[0], command.slice(1), { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  let out = "";
  const listening = await new Promise((resolve, reject) => {
    const onData = (chunk) => {
      out += chunk;
      if (out.includes(untilLine)) resolve({ ms: performance.now() - started, cpu: cpuMs(child.pid) });
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code) => reject(new Error(`exited (${code}) before "${until}":\n${out}`)));
  });
  process.kill(-child.pid, "SIGKILL");
  await exited;
  return listening;
}

const times = [];
const cpuTimes = [];
try {
  for (let i = 1 - warmup; i <= runs; i++) {
    const { ms, cpu } = await once();
    if (i > 0) times.push(ms);
    if (i > 0 && cpu !== undefined) cpuTimes.push(cpu);
    console.log(`${i > 0 ? `run ${i}` : "warm-up"}: ${ms.toFixed(0)} ms${cpu === undefined ? "" : `, cpu ${cpu} ms`}`);
  }
} finally {
  redis?.kill();
}
const summary = (values) => {
  const v = [...values].sort((a, b) => a - b);
  const median = v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  return `min ${v[0].toFixed(0)} ms, median ${median.toFixed(0)} ms, max ${v.at(-1).toFixed(0)} ms`;
};
if (times.length === 0) process.exit(0);
console.log(`${command.join(" ")}: to "${until}" ${summary(times)} (${times.length} runs)`);
if (cpuTimes.length > 0) console.log(`CPU time used by then: ${summary(cpuTimes)}`);
