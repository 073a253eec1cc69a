/**
 * Development default: when BAICHUAN_REDIS_URL is unset and nothing answers on 127.0.0.1:6379,
 * start a private redis-server (data under .baichuan/, append-only file on) that lives and dies
 * with the service.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { type AddressInfo, connect, createServer } from "node:net";
import { resolve } from "node:path";

export interface PrivateRedis {
  url: string;
  stop(): void;
}

/** True when something accepts TCP connections on host:port within `timeoutMs`. */
export function isListening(host: string, port: number, timeoutMs = 300): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host, port });
    const finish = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once("connect", () => finish(true));
    socket.once("error", () => finish(false));
  });
}

export function hasRedisServer(): boolean {
  return spawnSync("redis-server", ["--version"], { stdio: "ignore" }).status === 0;
}

export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => done(port));
    });
  });
}

/** Start redis-server on a free loopback port with its data in `dir`; resolves once it answers. */
export async function startPrivateRedis(dir = ".baichuan"): Promise<PrivateRedis> {
  const dataDir = resolve(dir);
  mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  const child: ChildProcess = spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dataDir,
      "--appendonly",
      "yes",
      "--save",
      "",
      "--protected-mode",
      "yes",
    ],
    { stdio: "ignore" },
  );
  const stop = () => {
    if (child.exitCode === null) child.kill("SIGTERM");
  };
  process.once("exit", stop);
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode}`);
    if (await isListening("127.0.0.1", port, 100)) return { url: `redis://127.0.0.1:${port}/0`, stop };
    await new Promise((r) => setTimeout(r, 50));
  }
  stop();
  throw new Error("redis-server did not start within 5 s");
}
