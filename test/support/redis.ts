/**
 * Real redis-server processes for tests, each on a free loopback port, never the shared 6379.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { freePort, isListening } from "./net.js";

export interface TestRedis {
  port: number;
  url: string;
  /** A plain client for inspecting keys. */
  client: Redis;
  /** Stop the server (SIGKILL when `crash`), keeping its data dir. */
  stop(crash?: boolean): Promise<void>;
  /** Start it again on the same port and data dir. */
  restart(): Promise<void>;
  /** Stop it and remove its data. */
  destroy(): Promise<void>;
}

export async function startRedis(extraArgs: string[] = []): Promise<TestRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "baichuan-redis-"));
  let child: ChildProcess | undefined;

  const launch = async () => {
    child = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", ...extraArgs],
      { stdio: "ignore" },
    );
    for (let i = 0; i < 200; i++) {
      if (await isListening("127.0.0.1", port, 100)) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`redis-server on port ${port} did not start`);
  };
  await launch();
  const client = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 1 });
  client.on("error", () => {});
  await client.connect();

  const stop = async (crash = false) => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill(crash ? "SIGKILL" : "SIGTERM");
    await exited;
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    client,
    stop,
    restart: launch,
    async destroy() {
      client.disconnect();
      await stop(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
