/**
 * One sharded pub/sub connection per process (on a Redis Cluster: one per master, since a shard
 * channel lives on its slot's master), shared by every watcher and the worker's wake-ups.
 * Channels are reference counted: the first listener subscribes, the last one leaving unsubscribes.
 */
import { Cluster, type Redis } from "ioredis";

export type MessageListener = (message: string) => void;

interface Channel {
  listeners: Set<MessageListener>;
  /** Resolves once Redis confirmed the subscription. */
  ready: Promise<void>;
}

export class Subscriptions {
  private readonly channels = new Map<string, Channel>();
  private readonly resyncListeners = new Set<() => void>();
  private readonly downListeners = new Set<() => void>();
  private connectedOnce = false;

  constructor(private readonly conn: Redis | Cluster) {
    conn.on("smessage", (channel: string, message: string) => {
      const entry = this.channels.get(channel);
      if (!entry) return;
      for (const listener of entry.listeners) listener(message);
    });
    // ioredis re-subscribes by itself after a reconnect; messages sent while the connection was
    // down are lost, so everyone re-reads what they follow. On a cluster the per-master subscriber
    // connections come and go with failovers: "subscribersReady" says every channel is subscribed
    // again on the current masters (a lost master is not an outage of the whole store: only
    // "close", when every node is gone, is).
    const resync = () => {
      if (this.connectedOnce) for (const listener of this.resyncListeners) listener();
      this.connectedOnce = true;
    };
    const down = () => {
      for (const listener of this.downListeners) listener();
    };
    conn.on("ready", resync);
    conn.on("close", down);
    if (conn instanceof Cluster) conn.on("subscribersReady", resync);
    if (conn.status === "ready") this.connectedOnce = true;
  }

  /** Listen to a channel; resolves once subscribed, with the function that stops listening. */
  async subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    // While disconnected, fail at once rather than queue the subscription for an unknown time.
    if (this.conn.status !== "ready") throw new Error(`subscriber connection is ${this.conn.status}`);
    let entry = this.channels.get(channel);
    if (!entry) {
      const created: Channel = { listeners: new Set(), ready: Promise.resolve() };
      created.ready = this.conn.ssubscribe(channel).then(
        () => undefined,
        (err: unknown) => {
          if (this.channels.get(channel) === created) this.channels.delete(channel);
          throw err;
        },
      );
      this.channels.set(channel, created);
      entry = created;
    }
    entry.listeners.add(listener);
    try {
      await entry.ready;
    } catch (err) {
      entry.listeners.delete(listener);
      throw err;
    }
    const current = entry;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      current.listeners.delete(listener);
      if (current.listeners.size === 0 && this.channels.get(channel) === current) {
        this.channels.delete(channel);
        this.conn.sunsubscribe(channel).catch(() => {
          // The connection is gone; nothing is left to release.
        });
      }
    };
  }

  /** Called after each reconnect of the subscriber connection. */
  onResync(listener: () => void): () => void {
    this.resyncListeners.add(listener);
    return () => this.resyncListeners.delete(listener);
  }

  /** Called when the subscriber connection drops (messages may be lost until the next resync). */
  onDown(listener: () => void): () => void {
    this.downListeners.add(listener);
    return () => this.downListeners.delete(listener);
  }

  /** Channels subscribed now (for tests and metrics). */
  get size(): number {
    return this.channels.size;
  }
}
