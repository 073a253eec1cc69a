/**
 * A server process for the benchmark's over-the-wire scenarios. Prints "port <n>".
 *
 *   server-process.ts real <redis url> [--worker] [--access-log]
 *                                                   BaiChuan's listener (handler /bench/noop known;
 *                                                   its worker runs only with --worker); logs at
 *                                                   level error, or with --access-log as `npm start`
 *                                                   logs (level info: one access line per request),
 *                                                   to an unlinked file
 *   server-process.ts noop                          the same Connect stack on h2c, with a
 *                                                   CreateTask that does nothing: the ceiling
 */
import { mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { createServer } from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { TaskService } from "../gen/baichuan/v1/task_pb.js";
import { library, NOOP } from "./lib.js";

const [mode, url, ...flags] = process.argv.slice(2);
process.on("SIGINT", () => process.exit(0)); // a normal exit, so --cpu-prof writes its profile

async function main(): Promise<void> {
  if (mode === "noop") {
    const handler = connectNodeAdapter({
      routes: (router) =>
        router.service(TaskService, {
          createTask: async () => ({ taskId: "0000000000000000000", deduplicated: false }),
          createTasks: async (req) => ({ results: req.tasks.map(() => ({ taskId: "0000000000000000000" })) }),
          getTask: async () => ({}),
          async *watchTask() {},
        }),
    });
    const server = createServer(handler).listen(0, "127.0.0.1", () => {
      console.log(`port ${(server.address() as AddressInfo).port}`);
    });
    return;
  }
  const { BaiChuan, createLogger, startServer } = await library();
  const log = flags.includes("--access-log") ? accessLogger(createLogger) : createLogger("error");
  const bc = await BaiChuan.connect({ redis: url!, limits: { maxQueued: 0 }, logger: log });
  bc.register(NOOP, () => null);
  bc.register("/bench/hold", (_p, ctx) => new Promise((r) => ctx.signal.addEventListener("abort", r)));
  const server = await startServer(bc, {
    host: "127.0.0.1",
    port: 0,
    log,
    limits: { maxWatchers: 1_000_000, maxWatchersPerConnection: 100_000, maxBodyBytes: 64 * 1024 * 1024 },
  });
  if (flags.includes("--worker")) await bc.startWorker({ concurrency: 50 });
  console.log(`port ${server.port}`);
}

/**
 * The logger `npm start` makes (main.ts), writing synchronously to a file rather than stderr (the
 * file is unlinked at once: the lines are written, and nothing is left behind).
 */
function accessLogger(createLogger: Awaited<ReturnType<typeof library>>["createLogger"]) {
  const dir = mkdtempSync(join(tmpdir(), "bench-log-"));
  const fd = openSync(join(dir, "server.log"), "w");
  rmSync(dir, { recursive: true });
  return createLogger("info", { service: "baichuan" }, (line) => void writeSync(fd, line));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
