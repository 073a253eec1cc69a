/**
 * The local Redis Cluster harness (test/support/cluster.ts): it starts 3 masters with a replica each,
 * routes keys, fails over by hand, survives a killed master, and leaves no process or directory behind.
 *
 * What the harness reports is checked against the servers themselves, over plain connections.
 */
import { readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keySlot } from "../src/store/keys.js";
import { startCluster, type TestCluster } from "./support/cluster.js";
import { isListening } from "./support/net.js";

const HOST = "127.0.0.1";

let cluster: TestCluster;
let startupMs = 0;
/** Every node as started: [port, pid]. */
let started: Array<{ port: number; pid: number }> = [];
const plain = new Map<number, Redis>();

beforeAll(async () => {
  const t0 = performance.now();
  cluster = await startCluster();
  startupMs = performance.now() - t0;
  console.info(`startCluster() took ${Math.round(startupMs)} ms`);
  started = cluster.nodes.map(({ port, pid }) => ({ port, pid }));
});

afterAll(async () => {
  for (const c of plain.values()) c.disconnect();
  await cluster?.destroy();
});

/** A plain (non-cluster) connection to one node: a key it does not serve is answered with MOVED. */
function node(port: number): Redis {
  let c = plain.get(port);
  if (!c) {
    c = new Redis({ host: HOST, port, maxRetriesPerRequest: 1, connectTimeout: 1000 });
    c.on("error", () => {});
    plain.set(port, c);
  }
  return c;
}

function field(text: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, "m").exec(text)?.[1]?.trim();
}

async function replication(
  port: number,
): Promise<{ role: string | undefined; masterPort: string | undefined; link: string | undefined }> {
  const info = await node(port).info("replication");
  return { role: field(info, "role"), masterPort: field(info, "master_port"), link: field(info, "master_link_status") };
}

/** The ports of the replicas that, by their own INFO replication, follow `masterPort`. */
async function replicasOf(masterPort: number): Promise<number[]> {
  const out: number[] = [];
  for (const n of cluster.nodes) {
    const r = await replication(n.port);
    if (r.role === "slave" && r.masterPort === String(masterPort)) out.push(n.port);
  }
  return out;
}

async function clusterStates(): Promise<string[]> {
  return Promise.all(
    cluster.nodes.map(async (n) => field((await node(n.port).call("CLUSTER", "INFO")) as string, "cluster_state")!),
  );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/** Pids of live redis-server processes whose parent is this test process. */
function redisChildren(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // pid (comm) state ppid ...
      const m = /^\d+ \((.*)\) (\S) (\d+)/.exec(stat);
      if (m && m[1] === "redis-server" && m[2] !== "Z" && Number(m[3]) === process.pid) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids.sort();
}

function harnessDirs(ports: number[]): string[] {
  return readdirSync(tmpdir()).filter((d) => ports.some((p) => d.startsWith(`baichuan-cluster-${p}-`)));
}

describe("startCluster()", () => {
  it("starts 3 masters with 1 replica each, all live, in a few seconds", async () => {
    expect(startupMs).toBeLessThan(15_000);
    expect(cluster.nodes).toHaveLength(6);
    const masters = cluster.nodes.filter((n) => n.role === "master").map((n) => n.port);
    const replicas = cluster.nodes.filter((n) => n.role === "replica").map((n) => n.port);
    expect(masters).toHaveLength(3);
    expect(replicas).toHaveLength(3);
    const ports = cluster.nodes.map((n) => n.port);
    expect(new Set(ports).size).toBe(6);
    expect(ports).not.toContain(6379);
    for (const n of cluster.nodes) {
      expect(alive(n.pid), `pid ${n.pid}`).toBe(true);
      expect(field(await node(n.port).info("server"), "process_id"), `${n.port}`).toBe(String(n.pid));
    }
    expect(redisChildren()).toEqual(cluster.nodes.map((n) => n.pid).sort());

    expect(cluster.url).toBe(`redis+cluster://${masters.map((p) => `${HOST}:${p}`).join(",")}`);
  });

  it("every node says it is part of a healthy cluster with the harness's roles, each master followed by one replica", async () => {
    expect(await clusterStates()).toEqual(Array(6).fill("ok"));
    const followed: number[] = [];
    for (const n of cluster.nodes) {
      const info = (await node(n.port).call("CLUSTER", "INFO")) as string;
      expect(field(info, "cluster_slots_ok"), `${n.port}`).toBe("16384");
      expect(field(info, "cluster_known_nodes"), `${n.port}`).toBe("6");
      const r = await replication(n.port);
      expect(r.role, `${n.port}`).toBe(n.role === "master" ? "master" : "slave");
      if (n.role === "replica") {
        expect(r.link, `${n.port}`).toBe("up");
        followed.push(Number(r.masterPort));
      }
    }
    const masters = cluster.nodes.filter((n) => n.role === "master").map((n) => n.port);
    expect(followed.sort()).toEqual([...masters].sort());
    // The client sees the same masters.
    expect(
      cluster.client
        .nodes("master")
        .map((r) => r.options.port)
        .sort(),
    ).toEqual([...masters].sort());
  });
});

describe("keys", () => {
  it("a key written through client is readable, through client and on the master masterOf names", async () => {
    const key = "harness:{rw}key";
    const value = `v-${Math.random()}`;
    expect(await cluster.client.set(key, value)).toBe("OK");
    expect(await cluster.client.get(key)).toBe(value);
    const slot = keySlot(key);
    expect(await cluster.client.cluster("KEYSLOT", key)).toBe(slot);
    expect(await node(cluster.masterOf(slot)).get(key)).toBe(value);
  });

  it("keys with different hash tags land on different masters, as masterOf says", async () => {
    const owners = new Map<string, number>();
    for (const tag of "abcdefghijklmnop") {
      const key = `harness:{${tag}}spread`;
      const slot = keySlot(key);
      expect(await cluster.client.cluster("KEYSLOT", key), key).toBe(slot);
      await cluster.client.set(key, tag);
      const master = cluster.masterOf(slot);
      owners.set(tag, master);
      // A plain connection to any other node would answer MOVED.
      expect(await node(master).get(key), key).toBe(tag);
    }
    const masters = cluster.nodes.filter((n) => n.role === "master").map((n) => n.port);
    expect([...new Set(owners.values())].sort()).toEqual([...masters].sort());
    // The same tag always lands on the same master.
    expect(cluster.masterOf(keySlot("other:{a}key"))).toBe(owners.get("a"));
    expect(() => cluster.masterOf(16384)).toThrow(/not a slot/);
    expect(() => cluster.masterOf(-1)).toThrow(/not a slot/);
  });
});

describe("failover(masterPort)", () => {
  it("makes the replica the master and the master its replica; the key stays readable", async () => {
    const key = "harness:{fo}key";
    const value = `v-${Math.random()}`;
    await cluster.client.set(key, value);
    const slot = keySlot(key);
    const oldMaster = cluster.masterOf(slot);
    const [replica] = await replicasOf(oldMaster);
    expect(replica).toBeDefined();

    const newMaster = await cluster.failover(oldMaster);

    expect(newMaster).toBe(replica);
    expect(cluster.nodes.find((n) => n.port === newMaster)?.role).toBe("master");
    expect(cluster.nodes.find((n) => n.port === oldMaster)?.role).toBe("replica");
    expect(await replication(newMaster)).toMatchObject({ role: "master" });
    expect(await replication(oldMaster)).toEqual({ role: "slave", masterPort: String(newMaster), link: "up" });
    expect(cluster.masterOf(slot)).toBe(newMaster);
    expect(cluster.url).toContain(`${HOST}:${newMaster}`);
    expect(cluster.url).not.toContain(`${HOST}:${oldMaster}`);
    expect(await clusterStates()).toEqual(Array(6).fill("ok"));

    expect(await cluster.client.get(key)).toBe(value);
    expect(await node(newMaster).get(key)).toBe(value);
    await expect(node(oldMaster).get(key)).rejects.toThrow(/MOVED/);
  });
});

describe("killMaster(masterPort)", () => {
  it("SIGKILLs the master, promotes its replica, and the slot takes writes again", async () => {
    const key = "harness:{km}key";
    const slot = keySlot(key);
    const victim = cluster.masterOf(slot);
    const victimPid = cluster.nodes.find((n) => n.port === victim)!.pid;
    const [replica] = await replicasOf(victim);
    expect(replica).toBeDefined();
    await cluster.client.set(key, "before");
    expect(await node(victim).call("WAIT", 1, 2000)).toBe(1); // the replica has it

    const promoted = await cluster.killMaster(victim);

    expect(promoted).toBe(replica);
    expect(alive(victimPid)).toBe(false);
    expect(await isListening(HOST, victim, 300)).toBe(false);
    node(victim).disconnect();
    expect(cluster.nodes.map((n) => n.port)).not.toContain(victim);
    expect(cluster.nodes).toHaveLength(5);
    expect(cluster.nodes.filter((n) => n.role === "master")).toHaveLength(3);
    expect(cluster.nodes.find((n) => n.port === promoted)?.role).toBe("master");
    expect(await replication(promoted)).toMatchObject({ role: "master" });
    expect(cluster.masterOf(slot)).toBe(promoted);
    expect(cluster.url).not.toContain(`${HOST}:${victim}`);
    expect(await clusterStates()).toEqual(Array(5).fill("ok"));

    expect(await cluster.client.get(key)).toBe("before");
    expect(await cluster.client.set(key, "after")).toBe("OK");
    expect(await node(promoted).get(key)).toBe("after");
  });
});

describe("cleanup", () => {
  it("a failing startCluster leaves no process or directory behind", async () => {
    const before = redisChildren();
    const dirsBefore = readdirSync(tmpdir())
      .filter((d) => d.startsWith("baichuan-cluster-"))
      .sort();
    // redis-cli refuses to create a cluster of fewer than 3 masters, after the servers were started.
    await expect(startCluster({ masters: 2, replicasPerMaster: 0 })).rejects.toThrow(/redis-cli --cluster create failed/);
    expect(redisChildren()).toEqual(before);
    expect(
      readdirSync(tmpdir())
        .filter((d) => d.startsWith("baichuan-cluster-"))
        .sort(),
    ).toEqual(dirsBefore);
  });

  it("destroy() kills every redis-server of the cluster and removes its directories", async () => {
    const ports = started.map((n) => n.port);
    expect(harnessDirs(ports)).toHaveLength(6);
    expect(started.filter((n) => alive(n.pid))).toHaveLength(5); // one was killed by killMaster

    await cluster.destroy();

    for (const n of started) {
      expect(alive(n.pid), `pid ${n.pid}`).toBe(false);
      expect(await isListening(HOST, n.port, 300), `port ${n.port}`).toBe(false);
    }
    expect(redisChildren()).toEqual([]);
    expect(harnessDirs(ports)).toEqual([]);
    await cluster.destroy(); // twice is fine
  });
});
