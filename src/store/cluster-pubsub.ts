/**
 * Sharded pub/sub on a Redis Cluster: a shard channel lives on the master of its slot, so this
 * keeps one subscriber connection per master (bounded by the number of masters, whatever the
 * number of channels) and subscribes each channel on its slot's master.
 *
 * Masters change (failover, slot migration), so the command connection's slot map, refreshed every
 * `SLOTS_REFRESH_MS` and on every MOVED, is compared with where each channel is subscribed; a
 * channel whose master changed moves to the new one, and the listeners are told to re-read what
 * they follow (messages may have been lost meanwhile). (ioredis's own sharded subscribers keep a
 * subscription on a master that became a replica after a manual failover, which then receives
 * nothing: measured, hence this module.)
 */
import { EventEmitter } from "node:events";
import { type Cluster, Redis, type RedisOptions } from "ioredis";
import { keySlot } from "./keys.js";

/** How often the command connection re-reads the cluster's slot map. */
export const SLOTS_REFRESH_MS = 2000;

interface Node {
  conn: Redis;
  channels: Set<string>;
  /** Closed on purpose (no longer a master): its closing is not an outage. */
  retired: boolean;
}

/** Longest wait for a subscription (a master that just died answers nothing until replaced). */
const SUBSCRIBE_TIMEOUT_MS = 5000;

/**
 * Emits "smessage" (channel, message), "resync" (messages may have been lost: re-read) and "down"
 * (a subscriber connection dropped).
 */
export class ClusterPubSub extends EventEmitter {
  private readonly nodes = new Map<string, Node>();
  /** Where each channel is subscribed: the master's `host:port`. */
  private readonly placed = new Map<string, string>();
  private closed = false;
  private moving: Promise<void> = Promise.resolve();

  constructor(
    private readonly cluster: Cluster,
    private readonly options: RedisOptions,
  ) {
    super();
    cluster.on("refresh", () => {
      this.moving = this.moving.then(() => this.follow()).catch(() => {});
    });
  }

  /** True while the cluster's slot map is known (the command connection is up). */
  get ready(): boolean {
    return this.cluster.status === "ready";
  }

  /** Resolves when the cluster connection is ready next. */
  nextReady(): Promise<void> {
    return new Promise((resolve) => this.cluster.once("ready", () => resolve()));
  }

  /**
   * Subscribe on the channel's master. Placed first, so a failover while it waits moves it; gives
   * up after SUBSCRIBE_TIMEOUT_MS (the caller fails, as on a single Redis that is down).
   */
  async subscribe(channel: string): Promise<void> {
    const at = this.masterOf(channel);
    const node = this.node(at);
    node.channels.add(channel);
    this.placed.set(channel, at);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer to SSUBSCRIBE from ${at}`)), SUBSCRIBE_TIMEOUT_MS);
    });
    try {
      await Promise.race([node.conn.ssubscribe(channel), timeout]);
    } catch (err) {
      await this.unsubscribe(channel).catch(() => {});
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    const at = this.placed.get(channel);
    this.placed.delete(channel);
    if (at === undefined) return;
    const node = this.nodes.get(at);
    node?.channels.delete(channel);
    // Not awaited for long: on a dead node the answer never comes (the connection is replaced).
    await Promise.race([node?.conn.sunsubscribe(channel), new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
  }

  close(): void {
    this.closed = true;
    for (const { conn } of this.nodes.values()) conn.disconnect();
    this.nodes.clear();
  }

  private masterOf(channel: string): string {
    const at = this.cluster.slots[keySlot(channel)]?.[0];
    if (!at) throw new Error(`no master known for the slot of ${channel}`);
    return at;
  }

  /** The subscriber connection to a master, opened on first use. */
  private node(at: string): Node {
    let node = this.nodes.get(at);
    if (!node) {
      const [host, port] = [at.slice(0, at.lastIndexOf(":")), Number(at.slice(at.lastIndexOf(":") + 1))];
      const conn = new Redis({ ...this.options, host, port, db: 0, lazyConnect: false });
      let connectedOnce = false;
      conn.on("smessage", (channel: string, message: string) => this.emit("smessage", channel, message));
      // ioredis subscribes again by itself after a reconnect; messages sent meanwhile are lost.
      conn.on("ready", () => {
        if (connectedOnce) this.emit("resync");
        connectedOnce = true;
      });
      const created: Node = { conn, channels: new Set(), retired: false };
      conn.on("close", () => {
        if (!this.closed && !created.retired) this.emit("down");
      });
      conn.on("error", () => {}); // the command connection reports the same troubles
      node = created;
      this.nodes.set(at, node);
    }
    return node;
  }

  /** Move every channel whose slot has a new master; resync the listeners if any moved. */
  private async follow(): Promise<void> {
    let moved = 0;
    for (const [channel, at] of [...this.placed]) {
      let now: string;
      try {
        now = this.masterOf(channel);
      } catch {
        continue;
      }
      if (now === at || this.closed) continue;
      const old = this.nodes.get(at);
      old?.channels.delete(channel);
      old?.conn.sunsubscribe(channel).catch(() => {});
      try {
        await this.node(now).conn.ssubscribe(channel);
        this.node(now).channels.add(channel);
        this.placed.set(channel, now);
        moved++;
      } catch {
        // The new master is not reachable yet: the next refresh tries again.
      }
    }
    // Connections to nodes that are no longer masters (a master become replica, or gone).
    const masters = new Set(this.cluster.slots.map((owners) => owners?.[0]));
    for (const [at, node] of this.nodes) {
      if (node.channels.size === 0 && !masters.has(at)) {
        node.retired = true;
        node.conn.disconnect();
        this.nodes.delete(at);
      }
    }
    if (moved > 0) this.emit("resync");
  }
}
