/**
 * A real local Redis Cluster for tests: `redis-server` processes on free loopback ports (never the shared
 * 6379), each with its own temp dir, joined with `redis-cli --cluster create`, plus helpers to fail a
 * master over by hand or to kill it and wait for its replica to take over.
 *
 * Every wait polls with short sleeps and is bounded; a timeout names what was not ready and shows the
 * last CLUSTER INFO seen. Processes never outlive the test run: `destroy()` kills them (also when
 * `startCluster` fails), a process `exit` hook kills whatever is left, and each server has a tiny
 * watchdog (`sh`) that SIGKILLs it when this process dies without running its exit hooks.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Cluster, Redis } from "ioredis";
import { freePort, isListening } from "./net.js";

export interface ClusterOptions {
  /** Masters, each serving an equal share of the 16384 slots (default 3; redis-cli needs at least 3). */
  masters?: number;
  /** Replicas of each master (default 1). */
  replicasPerMaster?: number;
  /** `cluster-node-timeout` in ms (default 1000): how fast a dead master is noticed. */
  nodeTimeoutMs?: number;
}

export interface ClusterNode {
  port: number;
  role: "master" | "replica";
  pid: number;
}

export interface TestCluster {
  /** `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`: the live masters as of now, in start order. */
  readonly url: string;
  /** The live nodes, in start order; roles are updated by `failover`/`killMaster`/`refresh`, killed nodes removed. */
  readonly nodes: ClusterNode[];
  /** An ioredis Cluster client (`{ redisOptions: { maxRetriesPerRequest: 3 } }`) for assertions. */
  readonly client: Cluster;
  /** Port of the master serving `slot`, as last seen by startCluster/failover/killMaster/refresh. */
  masterOf(slot: number): number;
  /** Manual failover (`CLUSTER FAILOVER` on a replica of `masterPort`); resolves with the new master's port. */
  failover(masterPort: number): Promise<number>;
  /** SIGKILL the master; resolves with the port of the replica promoted in its place. */
  killMaster(masterPort: number): Promise<number>;
  /** Wait until the cluster is healthy again and re-read roles and slot owners (after changing it by other means). */
  refresh(): Promise<void>;
  /** Kill every process and remove the temp dirs. Safe to call twice. */
  destroy(): Promise<void>;
}

const SLOTS = 16384;
/** How many times the bounds of a quiet machine the harness waits (a busy 2-core one is slower). */
const BUSY = 4;
const HOST = "127.0.0.1";

export async function startCluster(options: ClusterOptions = {}): Promise<TestCluster> {
  const cluster = new LocalCluster({
    masters: count(options.masters, 3, 1, "masters"),
    replicasPerMaster: count(options.replicasPerMaster, 1, 0, "replicasPerMaster"),
    nodeTimeoutMs: count(options.nodeTimeoutMs, 1000, 1, "nodeTimeoutMs"),
  });
  try {
    await cluster.start();
    return cluster;
  } catch (error) {
    await cluster.destroy().catch(() => {});
    throw error;
  }
}

function count(value: number | undefined, fallback: number, min: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min)
    throw new Error(`startCluster: ${name} must be an integer >= ${min}, got ${value}`);
  return value;
}

// ---- process bookkeeping ----------------------------------------------------------------------

/** Synchronous killers of every cluster not yet destroyed, run when this process exits. */
const exitKillers = new Set<() => void>();
let exitHookInstalled = false;
function onProcessExit(kill: () => void): void {
  exitKillers.add(kill);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const k of exitKillers) k();
  });
}

/** Ports handed out and not yet released, so that parallel picks never collide within this process. */
const portsInUse = new Set<number>();
async function pickPort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await freePort();
    if (port !== 6379 && !portsInUse.has(port)) {
      portsInUse.add(port);
      return port;
    }
  }
  throw new Error("could not find a free loopback port");
}

/**
 * `sh` that SIGKILLs `pid` and removes `dir` once its stdin reaches end of file, which happens when this
 * process dies, however it dies (the pipe is close-on-exec, so no other child holds it open). Killed
 * first whenever the server is stopped on purpose.
 */
function watchdog(pid: number, dir: string): ChildProcess {
  const dog = spawn("sh", ["-c", 'read _; kill -9 "$0" 2>/dev/null; sleep 0.2; rm -rf "$1"', String(pid), dir], {
    stdio: ["pipe", "ignore", "ignore"],
    detached: false,
  });
  dog.on("error", () => {});
  dog.stdin?.on("error", () => {});
  dog.unref();
  (dog.stdin as Socket | null)?.unref();
  return dog;
}

function exited(child: ChildProcess): boolean {
  return child.pid === undefined || child.exitCode !== null || child.signalCode !== null;
}

async function killAndWait(child: ChildProcess): Promise<void> {
  if (exited(child)) return;
  const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGKILL");
  await Promise.race([gone, sleep(5000)]);
  if (!exited(child)) throw new Error(`process ${child.pid} survived SIGKILL for 5 s`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function tail(path: string, chars = 1500): string {
  try {
    const text = readFileSync(path, "utf8");
    return text.length > chars ? `...${text.slice(-chars)}` : text;
  } catch {
    return "(no log)";
  }
}

function run(command: string, args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, killSignal: "SIGKILL" }, (error, stdout, stderr) => {
      // biome-ignore lint/suspicious/noControlCharactersInRegex: strip redis-cli's ANSI colours
      const output = `${stdout}${stderr}`.replace(/\u001b\[[0-9;]*m/g, "");
      const code = error ? (typeof error.code === "number" ? error.code : null) : 0;
      resolve({ code, output: error && code === null ? `${output}\n${error.message}` : output });
    });
  });
}

// ---- one server -------------------------------------------------------------------------------

interface Server {
  port: number;
  busPort: number;
  dir: string;
  child: ChildProcess;
  dog: ChildProcess | undefined;
  /** A plain connection for CLUSTER INFO / CLUSTER SLOTS / INFO replication. */
  admin: Redis;
  alive: boolean;
  spawnError?: Error;
  node: ClusterNode;
}

function adminClient(port: number): Redis {
  const admin = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    connectTimeout: 1000,
    commandTimeout: 2000,
    retryStrategy: () => 100,
  });
  admin.on("error", () => {});
  return admin;
}

// ---- what a node says about the cluster --------------------------------------------------------

interface Range {
  start: number;
  end: number;
  port: number;
}

interface View {
  port: number;
  clusterInfo: string;
  role: "master" | "replica";
  /** For a replica: the port of its master and whether the replication link is up. */
  masterPort?: number;
  linkUp: boolean;
  ranges: Range[];
}

interface Problem {
  port?: number;
  text: string;
}

function field(text: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, "m").exec(text)?.[1]?.trim();
}

async function observe(server: Server): Promise<View> {
  try {
    const [clusterInfo, slots, replication] = await Promise.all([
      server.admin.call("CLUSTER", "INFO") as Promise<string>,
      server.admin.call("CLUSTER", "SLOTS") as Promise<unknown[][]>,
      server.admin.info("replication"),
    ]);
    const ranges = slots
      .map((entry) => ({ start: Number(entry[0]), end: Number(entry[1]), port: Number((entry[2] as unknown[])[1]) }))
      .sort((a, b) => a.start - b.start);
    const role = field(replication, "role") === "master" ? "master" : "replica";
    const view: View = {
      port: server.port,
      clusterInfo: clusterInfo.replace(/\r/g, "").trim(),
      role,
      linkUp: field(replication, "master_link_status") === "up",
      ranges,
    };
    if (role === "replica") view.masterPort = Number(field(replication, "master_port"));
    return view;
  } catch (error) {
    throw new Error(`${HOST}:${server.port} did not answer: ${(error as Error).message}`);
  }
}

/** Why these views are not a healthy cluster, or undefined when they are. */
function problemOf(views: View[]): Problem | undefined {
  if (views.length === 0) return { text: "no live node" };
  for (const v of views) {
    const state = field(v.clusterInfo, "cluster_state");
    if (state !== "ok") return { port: v.port, text: `${HOST}:${v.port} reports cluster_state:${state}` };
    for (const name of ["cluster_slots_assigned", "cluster_slots_ok"]) {
      const value = field(v.clusterInfo, name);
      if (value !== String(SLOTS)) return { port: v.port, text: `${HOST}:${v.port} reports ${name}:${value}` };
    }
    let next = 0;
    for (const r of v.ranges) {
      if (r.start !== next) return { port: v.port, text: `${HOST}:${v.port} CLUSTER SLOTS: slot ${next} is not covered` };
      next = r.end + 1;
    }
    if (next !== SLOTS) return { port: v.port, text: `${HOST}:${v.port} CLUSTER SLOTS: slot ${next} is not covered` };
  }
  const first = views[0]!;
  const layout = (v: View) => v.ranges.map((r) => `${r.start}-${r.end}@${r.port}`).join(" ");
  for (const v of views) {
    if (layout(v) !== layout(first)) {
      return {
        port: v.port,
        text: `${HOST}:${v.port} sees slots [${layout(v)}] but ${HOST}:${first.port} sees [${layout(first)}]`,
      };
    }
  }
  const byPort = new Map(views.map((v) => [v.port, v]));
  for (const r of first.ranges) {
    const owner = byPort.get(r.port);
    if (owner?.role !== "master") {
      return { text: `slots ${r.start}-${r.end} are served by ${HOST}:${r.port}, which is not a live master of this cluster` };
    }
  }
  for (const v of views) {
    if (v.role === "master" && !first.ranges.some((r) => r.port === v.port)) {
      return { port: v.port, text: `master ${HOST}:${v.port} serves no slots` };
    }
    if (v.role !== "replica") continue;
    if (byPort.get(v.masterPort ?? -1)?.role !== "master") {
      return { port: v.port, text: `replica ${HOST}:${v.port} follows ${HOST}:${v.masterPort}, which is not a live master` };
    }
    if (!v.linkUp) return { port: v.port, text: `replica ${HOST}:${v.port}: master_link_status is not up` };
  }
  return undefined;
}

// ---- the cluster ------------------------------------------------------------------------------

class LocalCluster implements TestCluster {
  readonly nodes: ClusterNode[] = [];
  client!: Cluster;
  private readonly servers: Server[] = [];
  private ranges: Range[] = [];
  private destroying: Promise<void> | undefined;
  private readonly killAllSync = () => {
    for (const s of this.servers) {
      s.dog?.kill("SIGKILL");
      if (!exited(s.child)) s.child.kill("SIGKILL");
    }
  };

  constructor(private readonly options: Required<ClusterOptions>) {
    onProcessExit(this.killAllSync);
  }

  get url(): string {
    const masters = this.nodes.filter((n) => n.role === "master").map((n) => `${HOST}:${n.port}`);
    return `redis+cluster://${masters.join(",")}`;
  }

  async start(): Promise<void> {
    const { masters, replicasPerMaster } = this.options;
    const total = masters * (1 + replicasPerMaster);
    const launched = await Promise.allSettled(Array.from({ length: total }, () => this.launch()));
    const failed = launched.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    for (const r of launched) this.nodes.push((r as PromiseFulfilledResult<Server>).value.node);

    const created = await run(
      "redis-cli",
      [
        "--cluster",
        "create",
        ...this.nodes.map((n) => `${HOST}:${n.port}`),
        "--cluster-replicas",
        String(replicasPerMaster),
        "--cluster-yes",
      ],
      20_000,
    );
    if (created.code !== 0) throw new Error(`redis-cli --cluster create failed (exit ${created.code}):\n${created.output}`);

    await this.settle("startCluster", BUSY * (15_000 + 5 * this.options.nodeTimeoutMs), (views) => {
      const masterViews = views.filter((v) => v.role === "master");
      if (masterViews.length !== masters) return { text: `${masterViews.length} masters, expected ${masters}` };
      for (const m of masterViews) {
        const replicas = views.filter((v) => v.masterPort === m.port).length;
        if (replicas !== replicasPerMaster) {
          return { port: m.port, text: `master ${HOST}:${m.port} has ${replicas} replicas, expected ${replicasPerMaster}` };
        }
      }
      return undefined;
    });

    this.client = new Cluster(
      this.nodes.filter((n) => n.role === "master").map((n) => ({ host: HOST, port: n.port })),
      { redisOptions: { maxRetriesPerRequest: 3 } },
    );
    this.client.on("error", () => {});
    const client = this.client;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`startCluster: the ioredis Cluster client was not ready after ${BUSY * 10} s (status ${client.status})`),
          ),
        BUSY * 10_000,
      );
      client.once("ready", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  masterOf(slot: number): number {
    if (!Number.isInteger(slot) || slot < 0 || slot >= SLOTS)
      throw new Error(`masterOf: ${slot} is not a slot (0..${SLOTS - 1})`);
    const range = this.ranges.find((r) => r.start <= slot && slot <= r.end);
    if (!range) throw new Error(`masterOf: no master known for slot ${slot}`);
    return range.port;
  }

  async failover(masterPort: number): Promise<number> {
    const { replicas, owned } = await this.masterWithReplicas("failover", masterPort);
    const target = this.server(replicas[0]!)!;
    // A manual failover gives up after 5 s when the master and replica cannot agree in time (a
    // busy machine): ask again, a few times.
    for (let attempt = 1; ; attempt++) {
      const [role] = (await target.admin.call("ROLE")) as string[];
      if (role !== "master") await target.admin.call("CLUSTER", "FAILOVER");
      try {
        await this.settle(
          `failover of ${HOST}:${masterPort} to ${HOST}:${target.port}`,
          10_000 + 5 * this.options.nodeTimeoutMs,
          (views) => {
            const promoted = views.find((v) => v.port === target.port);
            const old = views.find((v) => v.port === masterPort);
            if (promoted?.role !== "master") return { port: target.port, text: `${HOST}:${target.port} is still a replica` };
            if (old?.role !== "replica" || old.masterPort !== target.port) {
              return { port: masterPort, text: `${HOST}:${masterPort} has not become a replica of ${HOST}:${target.port}` };
            }
            return this.movedTo(views, owned, [target.port]);
          },
        );
        break;
      } catch (err) {
        if (attempt >= BUSY) throw err;
      }
    }
    await this.refreshClient();
    return target.port;
  }

  async killMaster(masterPort: number): Promise<number> {
    const { replicas, owned } = await this.masterWithReplicas("killMaster", masterPort);
    await this.kill(this.server(masterPort)!);
    const views = await this.settle(
      `promotion of a replica of killed master ${HOST}:${masterPort}`,
      BUSY * (15_000 + 10 * this.options.nodeTimeoutMs),
      (views) => this.movedTo(views, owned, replicas),
    );
    await this.refreshClient();
    const slot = owned[0]!.start;
    return views[0]!.ranges.find((r) => r.start <= slot && slot <= r.end)!.port;
  }

  async refresh(): Promise<void> {
    await this.settle("refresh", BUSY * (10_000 + 5 * this.options.nodeTimeoutMs));
    await this.refreshClient();
  }

  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      this.client?.disconnect();
      await Promise.all(this.servers.map((s) => this.kill(s)));
      for (const s of this.servers) {
        rmSync(s.dir, { recursive: true, force: true });
        portsInUse.delete(s.port);
        portsInUse.delete(s.busPort);
      }
      exitKillers.delete(this.killAllSync);
    })();
    return this.destroying;
  }

  // ---- internals ----

  private server(port: number): Server | undefined {
    return this.servers.find((s) => s.alive && s.port === port);
  }

  /** Start one redis-server and wait until it answers as itself; retried on a new port if it dies (port taken). */
  private async launch(): Promise<Server> {
    let lastError: Error | undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (this.destroying) throw new Error("startCluster: destroyed while starting");
      const port = await pickPort();
      const busPort = await pickPort();
      const dir = mkdtempSync(join(tmpdir(), `baichuan-cluster-${port}-`));
      const child = spawn(
        "redis-server",
        [
          "--port",
          String(port),
          "--bind",
          HOST,
          "--protected-mode",
          "no",
          "--cluster-enabled",
          "yes",
          "--cluster-config-file",
          join(dir, `nodes-${port}.conf`),
          // The bus port defaults to port + 10000, which is above 65535 for most ephemeral ports.
          "--cluster-port",
          String(busPort),
          "--cluster-node-timeout",
          String(this.options.nodeTimeoutMs),
          // Let a replica take over however long ago it last heard from its master.
          "--cluster-replica-validity-factor",
          "0",
          "--appendonly",
          "no",
          "--save",
          "",
          // Full syncs start at once (the default waits 5 s for more replicas).
          "--repl-diskless-sync-delay",
          "0",
          "--dir",
          dir,
          "--logfile",
          join(dir, "redis.log"),
        ],
        { stdio: "ignore", detached: false },
      );
      const server: Server = {
        port,
        busPort,
        dir,
        child,
        dog: undefined,
        admin: adminClient(port),
        alive: true,
        node: { port, role: "master", pid: child.pid ?? -1 },
      };
      child.on("error", (error) => {
        server.spawnError = error;
      });
      this.servers.push(server);
      if (child.pid !== undefined) server.dog = watchdog(child.pid, dir);
      try {
        await this.waitServing(server);
        return server;
      } catch (error) {
        lastError = error as Error;
        await this.kill(server);
        if (server.spawnError) break;
      }
    }
    throw lastError ?? new Error("startCluster: redis-server did not start");
  }

  private async waitServing(server: Server): Promise<void> {
    const deadline = Date.now() + BUSY * 10_000;
    let last = "not listening";
    for (;;) {
      if (server.spawnError) throw new Error(`startCluster: cannot run redis-server: ${server.spawnError.message}`);
      if (exited(server.child)) {
        const how = server.child.signalCode ?? `code ${server.child.exitCode}`;
        throw new Error(
          `startCluster: redis-server on port ${server.port} exited (${how}):\n${tail(join(server.dir, "redis.log"))}`,
        );
      }
      if (await isListening(HOST, server.port, 200)) {
        try {
          const pid = field(await server.admin.info("server"), "process_id");
          if (pid === String(server.child.pid)) return;
          last = `port ${server.port} is answered by another process (pid ${pid})`;
        } catch (error) {
          last = (error as Error).message;
        }
      }
      if (Date.now() > deadline) {
        throw new Error(`startCluster: redis-server on port ${server.port} not serving after ${BUSY * 10} s: ${last}`);
      }
      await sleep(20);
    }
  }

  /** SIGKILL a server (its watchdog first) and forget it. */
  private async kill(server: Server): Promise<void> {
    server.dog?.kill("SIGKILL");
    if (server.alive) {
      server.alive = false;
      server.admin.disconnect();
      const i = this.nodes.indexOf(server.node);
      if (i !== -1) this.nodes.splice(i, 1);
    }
    await killAndWait(server.child);
  }

  /** A healthy cluster's view; checks `masterPort` is a live master with a replica. */
  private async masterWithReplicas(what: string, masterPort: number): Promise<{ replicas: number[]; owned: Range[] }> {
    if (!this.server(masterPort)) throw new Error(`${what}: ${HOST}:${masterPort} is not a live node of this cluster`);
    const views = await this.settle(`${what}(${masterPort}): waiting for a healthy cluster first`, BUSY * 10_000);
    const master = views.find((v) => v.port === masterPort);
    if (master?.role !== "master") throw new Error(`${what}: ${HOST}:${masterPort} is a replica, not a master`);
    const replicas = views.filter((v) => v.role === "replica" && v.masterPort === masterPort).map((v) => v.port);
    if (replicas.length === 0) throw new Error(`${what}: master ${HOST}:${masterPort} has no replica to take over`);
    return { replicas, owned: views[0]!.ranges.filter((r) => r.port === masterPort) };
  }

  /** A problem unless every slot range in `owned` is now served by one of `ports`. */
  private movedTo(views: View[], owned: Range[], ports: number[]): Problem | undefined {
    for (const r of owned) {
      for (const v of views) {
        const now = v.ranges.find((x) => x.start <= r.start && r.start <= x.end);
        if (!now || !ports.includes(now.port)) {
          return { port: v.port, text: `${HOST}:${v.port} still sees slots ${r.start}-${r.end} on ${HOST}:${now?.port}` };
        }
      }
    }
    return undefined;
  }

  /**
   * Poll every live node until together they form a healthy cluster (cluster_state:ok, all slots covered by
   * live masters, every node agreeing on slot owners, every replica's link up) and `extra` has no objection;
   * then record roles and slot owners.
   */
  private async settle(what: string, timeoutMs: number, extra?: (views: View[]) => Problem | undefined): Promise<View[]> {
    const deadline = Date.now() + timeoutMs;
    let reason = "no node answered";
    let lastInfo = "(none)";
    for (;;) {
      const live = this.servers.filter((s) => s.alive);
      try {
        const views = await Promise.all(live.map(observe));
        const problem = problemOf(views) ?? extra?.(views);
        if (!problem) {
          for (const v of views) this.server(v.port)!.node.role = v.role;
          this.ranges = views[0]!.ranges;
          return views;
        }
        reason = problem.text;
        const shown = views.find((v) => v.port === problem.port) ?? views[0];
        if (shown) lastInfo = `from ${HOST}:${shown.port}:\n${shown.clusterInfo}`;
      } catch (error) {
        reason = (error as Error).message;
      }
      if (Date.now() >= deadline) {
        throw new Error(`${what}: cluster not ready after ${timeoutMs} ms: ${reason}\nlast CLUSTER INFO ${lastInfo}`);
      }
      await sleep(50);
    }
  }

  /** Make the ioredis client re-read the slot owners now rather than on its next MOVED or failed command. */
  private async refreshClient(): Promise<void> {
    if (!this.client) return;
    await new Promise<void>((resolve) => this.client.refreshSlotsCache(() => resolve()));
  }
}
