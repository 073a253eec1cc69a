/**
 * One sharded pub/sub connection per process (on a Redis Cluster: one per master, since a shard
 * channel lives on its slot's master), shared by every watcher and the worker's wake-ups.
 * Channels are reference counted: the first listener subscribes, the last one leaving unsubscribes.
 */
import type { Redis } from "ioredis";
import { ClusterPubSub } from "./cluster-pubsub.js";

export type MessageListener = (message: string) => void;

/** Longest a subscription waits for the subscriber connection to come back. */
const RECONNECT_WAIT_MS = 2000;

interface Channel {
  listeners: Set<MessageListener>;
  /** Resolves once Redis confirmed the subscription. */
  ready: Promise<void>;
}

export class Subscriptions {
  private readonly channels = new Map<string, Channel>();
  private readonly resyncListeners = new Set<() => void>();
  private readonly downListeners = new Set<() => void>();

  private readonly source: Source;

  /** `conn`: the subscriber connection to one Redis, or ClusterPubSub on a Redis Cluster. */
  constructor(conn: Redis | ClusterPubSub) {
    this.source = conn instanceof ClusterPubSub ? clusterNodes(conn) : singleNode(conn);
    conn.on("smessage", (channel: string, message: string) => {
      const entry = this.channels.get(channel);
      if (!entry) return;
      for (const listener of entry.listeners) listener(message);
    });
    // Messages sent while a subscriber connection was down are lost (ioredis subscribes again by
    // itself after a reconnect; ClusterPubSub also moves channels to new masters): everyone
    // re-reads what they follow.
    this.source.onResync(() => {
      for (const listener of this.resyncListeners) listener();
    });
    this.source.onDown(() => {
      for (const listener of this.downListeners) listener();
    });
  }

  /** Listen to a channel; resolves once subscribed, with the function that stops listening. */
  async subscribe(channel: string, listener: MessageListener): Promise<() => void> {
    // While disconnected, wait a little for the connection to come back (it reconnects on its own,
    // often a moment after the command connection), then fail rather than queue the subscription
    // for an unknown time.
    if (!this.source.ready() && !(await this.reconnected())) throw new Error("the subscriber connection is not ready");
    let entry = this.channels.get(channel);
    if (!entry) {
      const created: Channel = { listeners: new Set(), ready: Promise.resolve() };
      created.ready = this.source.subscribe(channel).then(
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
        this.source.unsubscribe(channel).catch(() => {
          // The connection is gone; nothing is left to release.
        });
      }
    };
  }

  private reconnecting: Promise<void> | undefined;

  /** True once the subscriber connection is ready again, false after RECONNECT_WAIT_MS without. */
  private async reconnected(): Promise<boolean> {
    // One promise (one listener on the connection) for every caller waiting through this outage.
    this.reconnecting ??= this.source.nextReady().finally(() => (this.reconnecting = undefined));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), RECONNECT_WAIT_MS)));
    const ready = await Promise.race([this.reconnecting.then(() => true), late]);
    clearTimeout(timer);
    return ready && this.source.ready();
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

/** What Subscriptions needs of its connection(s). */
interface Source {
  ready(): boolean;
  /** Resolves when the connection is ready next. */
  nextReady(): Promise<void>;
  subscribe(channel: string): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  onResync(listener: () => void): void;
  onDown(listener: () => void): void;
}

function singleNode(conn: Redis): Source {
  return {
    ready: () => conn.status === "ready",
    nextReady: () => new Promise((resolve) => conn.once("ready", () => resolve())),
    subscribe: (channel) => conn.ssubscribe(channel),
    unsubscribe: (channel) => conn.sunsubscribe(channel),
    onResync(listener) {
      let connectedOnce = conn.status === "ready";
      conn.on("ready", () => {
        if (connectedOnce) listener();
        connectedOnce = true;
      });
    },
    onDown: (listener) => conn.on("close", listener),
  };
}

function clusterNodes(pubsub: ClusterPubSub): Source {
  return {
    ready: () => pubsub.ready,
    nextReady: () => pubsub.nextReady(),
    subscribe: (channel) => pubsub.subscribe(channel),
    unsubscribe: (channel) => pubsub.unsubscribe(channel),
    onResync: (listener) => pubsub.on("resync", listener),
    onDown: (listener) => pubsub.on("down", listener),
  };
}
