/**
 * BaiChuan's connections to Redis: the command connection and the subscriber (per master on a
 * Redis Cluster), the Lua scripts loaded on each, and `call`, which every operation goes through:
 * a deadline (the socket timeout) and Redis's failures said in BaiChuan's words.
 */
import { Cluster, Redis, type RedisOptions, ReplyError } from "ioredis";
import { RedisFullError, StoreUnavailableError } from "../core/errors.js";
import { ClusterPubSub, SLOTS_REFRESH_MS } from "./cluster-pubsub.js";
import * as keys from "./keys.js";
import type { RedisSettings } from "./redis-url.js";
import { SCRIPTS, type ScriptName } from "./scripts.js";
import { Subscriptions } from "./subscriptions.js";

/** Longest wait between two reconnect attempts of a connection (ioredis's default is the same). */
export const RECONNECT_MAX_MS = 2000;

export interface ConnectionOptions {
  /** Hears connection errors (the calls that fail report them too). */
  onError?: (err: Error) => void;
  /** Hears each write Redis refused for lack of memory (the call fails with RedisFullError). */
  onFull?: (err: RedisFullError) => void;
}

export class Connection {
  /** The command connection (a Cluster client on a Redis Cluster). */
  readonly redis: Redis | Cluster;
  /** When the command connection last became ready (epoch ms); 0 before it first did. */
  private readySince = 0;
  /** The command connection became ready again after it was first (an outage, or a failover). */
  private reconnected = false;
  /** The connection settings, for the lease keeper's own connection. */
  readonly options: RedisSettings;
  /** True when connected to a Redis Cluster (commands are routed by slot). */
  readonly isCluster: boolean;
  /** The subscriber connection (one Redis); on a cluster, ClusterPubSub keeps one per master. */
  private readonly subConn: Redis | undefined;
  private readonly clusterPubSub: ClusterPubSub | undefined;
  readonly subscriptions: Subscriptions;
  private readonly readyListeners: Array<() => void> = [];
  private readonly onFull: (err: RedisFullError) => void;

  constructor(options: RedisSettings, { onError = () => {}, onFull = () => {} }: ConnectionOptions = {}) {
    const { clusterNodes, ...redisOptions } = options;
    const common: RedisOptions = {
      ...redisOptions,
      lazyConnect: true,
      enableOfflineQueue: false,
      // Reconnect with a growing delay, capped: never a tight loop while Redis is down.
      retryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 5), RECONNECT_MAX_MS),
    };
    const subscriber: RedisOptions = {
      ...common,
      commandTimeout: undefined,
      maxRetriesPerRequest: null,
      enableOfflineQueue: true,
    };
    this.options = options;
    this.isCluster = clusterNodes !== undefined;
    // No auto-pipelining: it delays every command to the next macrotask, which costs more latency
    // than it saves; commands that travel together are batched by this module (creates, ends).
    if (clusterNodes) {
      // Commands go to the master of their key's slot (the slot map re-read every few seconds and
      // on MOVED); sharded pub/sub keeps one subscriber connection per master (cluster-pubsub.ts).
      const cluster = new Cluster(clusterNodes, {
        lazyConnect: true,
        enableOfflineQueue: false,
        enableAutoPipelining: false,
        scaleReads: "master",
        maxRedirections: 16,
        slotsRefreshInterval: SLOTS_REFRESH_MS,
        clusterRetryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 5), RECONNECT_MAX_MS),
        redisOptions: { ...common, db: 0, lazyConnect: false },
      });
      this.redis = cluster;
      this.subConn = undefined;
      this.clusterPubSub = new ClusterPubSub(cluster, subscriber);
      // A new master (failover) is like a reconnect for the leases of its shard: workers could not
      // renew them while it was away, so the sweep gives them one lease period (see sweep()).
      let masters = "";
      cluster.on("refresh", () => {
        const now = [...new Set(cluster.slots.map((owners) => owners?.[0]))].sort().join(",");
        if (masters !== "" && now !== masters) {
          this.readySince = Date.now();
          this.reconnected = true;
        }
        masters = now;
      });
    } else {
      this.redis = new Redis({ ...common, enableAutoPipelining: false });
      this.subConn = new Redis(subscriber);
      this.clusterPubSub = undefined;
    }
    // Scripts are loaded on each connection (SCRIPT LOAD; on a cluster, on every master) and run by
    // SHA. (ioredis's defineCommand would send the whole script with every pipelined call.)
    this.onFull = onFull;
    this.redis.on("ready", () => {
      if (this.readySince !== 0) this.reconnected = true;
      this.readySince = Date.now();
      for (const listener of this.readyListeners) listener();
      const targets = this.redis instanceof Cluster ? this.redis.nodes("master") : [this.redis];
      for (const target of targets) {
        for (const { lua } of Object.values(SCRIPTS)) target.script("LOAD", lua).catch(() => {});
      }
    });
    this.subscriptions = new Subscriptions(this.clusterPubSub ?? this.subConn!);
    this.redis.on("error", onError);
    this.subConn?.on("error", () => {}); // the same errors as conn's
  }

  /**
   * Hear each time the command connection becomes ready (the first time, and after each outage):
   * Redis may have come back empty (a restart without persistence).
   */
  onReady(listener: () => void): void {
    this.readyListeners.push(listener);
  }

  /**
   * Whether lapsed leases may be recovered now: not within `leaseMs` (plus the longest reconnect
   * delay after an outage) of the command connection becoming ready. Workers could not renew
   * while Redis was away, and every connection (the lease keepers' too) retries at most
   * RECONNECT_MAX_MS apart: a worker may reconnect that much later than this process did.
   */
  mayRecoverLeases(leaseMs: number): boolean {
    const grace = leaseMs + (this.reconnected ? RECONNECT_MAX_MS : 0);
    return Date.now() - this.readySince >= grace;
  }

  private readonly deadlines = new Set<Deadline>();
  private deadlineTimer: NodeJS.Timeout | undefined;

  /** Connect both connections; rejects when Redis does not answer. */
  async connect(): Promise<void> {
    await Promise.all([connectOnce(this.redis), ...(this.subConn ? [connectOnce(this.subConn)] : [])]);
  }

  /** Close both connections: politely (QUIT) when connected, at once otherwise. */
  async close(): Promise<void> {
    const quit = async (c: Redis | Cluster) => {
      if (c.status === "ready")
        await Promise.race([c.quit(), new Promise((resolve) => setTimeout(resolve, 1000))]).catch(() => {});
      c.disconnect();
    };
    this.clusterPubSub?.close();
    await Promise.all([quit(this.redis), ...(this.subConn ? [quit(this.subConn)] : [])]);
  }

  /** Run one of the scripts by its SHA, loading it first if Redis does not know it (NOSCRIPT). */
  async script<T>(name: ScriptName, scriptKeys: string[], args: string[]): Promise<T> {
    const { lua, sha } = SCRIPTS[name];
    try {
      return (await this.redis.evalsha(sha, scriptKeys.length, ...scriptKeys, ...args)) as T;
    } catch (err) {
      if (!(err instanceof ReplyError && (err as Error).message.startsWith("NOSCRIPT"))) throw err;
      // The node does not know it (restarted, or a new master after a failover): EVAL sends the
      // text, and caches it there for the next EVALSHA.
      return (await this.redis.eval(lua, scriptKeys.length, ...scriptKeys, ...args)) as T;
    }
  }

  /** Now by Redis's clock (TIME), epoch ms: the clock every stored time and deadline uses. */
  async timeMs(): Promise<number> {
    const [seconds, micros] = await this.call(() => this.redis.time());
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  }

  /** Round trip to Redis. */
  async ping(): Promise<void> {
    await this.call(() => this.redis.ping());
  }

  /** True while both connections are ready, so Redis is reachable (health.ts); no round trip. */
  isReady(): boolean {
    return this.redis.status === "ready" && (this.subConn?.status ?? "ready") === "ready";
  }

  /**
   * Call `listener` after a connection became ready, dropped or ended (ioredis emits these a tick
   * after the change: read `isReady()` then). Returns the function that stops listening.
   */
  onStateChange(listener: () => void): () => void {
    const events = ["ready", "close", "end"];
    const conns = this.subConn ? [this.redis, this.subConn] : [this.redis];
    for (const conn of conns) for (const event of events) conn.on(event, listener);
    return () => {
      for (const conn of conns) for (const event of events) conn.off(event, listener);
    };
  }

  /** The connection to the node that holds `key`: the master of its slot on a cluster. */
  nodeOf(key: string): Redis {
    if (!(this.redis instanceof Cluster)) return this.redis;
    const owner = this.redis.slots[keys.keySlot(key)]?.[0];
    const node = this.redis.nodes("master").find((n) => `${n.options.host}:${n.options.port}` === owner);
    if (!node) throw new StoreUnavailableError(undefined, { detail: "no master known for a slot" });
    return node;
  }

  /**
   * Run a Redis operation, turning connection failures into StoreUnavailableError, and giving up
   * after the socket timeout (also for operations made of several commands).
   * Deadlines are checked by one coarse timer for all calls, not one timer per call.
   */
  call<T>(op: () => Promise<T>): Promise<T> {
    const limit = this.options.commandTimeout;
    const unavailable = (err: unknown) => this.failure(err);
    if (limit === undefined) return op().catch((err: unknown) => Promise.reject(unavailable(err)));
    return new Promise<T>((resolve, reject) => {
      const entry: Deadline = {
        at: Date.now() + limit,
        // The command was sent: it may run (a paused or slow Redis), its answer comes too late.
        fail: () =>
          reject(
            new StoreUnavailableError(new Error(`Redis did not answer within ${limit} ms`), {
              detail: `no answer within ${limit} ms`,
              mayHaveApplied: true,
            }),
          ),
      };
      this.deadlines.add(entry);
      this.watchDeadlines(limit);
      op().then(
        (value) => {
          this.deadlines.delete(entry);
          resolve(value);
        },
        (err: unknown) => {
          this.deadlines.delete(entry);
          reject(unavailable(err));
        },
      );
    });
  }

  /**
   * What a failed call throws: RedisFullError for an `OOM` reply, StoreUnavailableError (in
   * BaiChuan's words, the client library's error as its cause) when Redis is away or not ready,
   * the error itself otherwise.
   */
  failure(err: unknown): unknown {
    if (err instanceof ReplyError && (err as Error).message.startsWith("OOM")) {
      const full = new RedisFullError(err);
      this.onFull(full);
      return full;
    }
    if (!(err instanceof Error) || err instanceof StoreUnavailableError) return err;
    // A bug in BaiChuan's own code is not Redis being away: it stays what it is (INTERNAL, logged).
    if (err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError || err instanceof SyntaxError) {
      return err;
    }
    if (err instanceof ReplyError) {
      const state = REDIS_STATES.get(err.message.split(" ")[0]!);
      return state ? new StoreUnavailableError(err, { detail: state }) : err;
    }
    // ioredis refuses at once, without sending, while not connected (no offline queue).
    if (/isn't (writeable|ready)/.test(err.message)) return new StoreUnavailableError(err, { detail: "not connected" });
    if (/timed out/i.test(err.message)) {
      const limit = this.options.commandTimeout;
      const detail = limit === undefined ? "no answer in time" : `no answer within ${limit} ms`;
      return new StoreUnavailableError(err, { detail, mayHaveApplied: true });
    }
    return new StoreUnavailableError(err, { detail: "connection lost", mayHaveApplied: true });
  }

  /** Check the deadlines of calls in flight every tenth of the limit, while there are any. */
  private watchDeadlines(limit: number): void {
    if (this.deadlineTimer) return;
    this.deadlineTimer = setInterval(
      () => {
        const now = Date.now();
        for (const entry of this.deadlines) {
          if (entry.at > now) continue;
          this.deadlines.delete(entry);
          entry.fail();
        }
        if (this.deadlines.size === 0) {
          clearInterval(this.deadlineTimer);
          this.deadlineTimer = undefined;
        }
      },
      Math.max(10, Math.floor(limit / 10)),
    );
    this.deadlineTimer.unref();
  }
}

interface Deadline {
  at: number;
  fail: () => void;
}

/** Replies of a Redis that cannot serve now ("try later"), in words for callers. */
const REDIS_STATES = new Map([
  ["LOADING", "loading its data"],
  ["BUSY", "busy running a script"],
  ["MASTERDOWN", "its master is down"],
  ["TRYAGAIN", "the cluster is moving keys"],
  ["CLUSTERDOWN", "the cluster is down"],
  ["READONLY", "a read-only replica answered"],
]);

/** Wait until a connection is ready; ioredis keeps retrying in the background until then. */
async function connectOnce(conn: Redis | Cluster): Promise<void> {
  if (conn.status === "ready") return;
  const ready = new Promise<void>((resolve, reject) => {
    const onReady = () => {
      conn.off("end", onEnd);
      resolve();
    };
    const onEnd = () => {
      conn.off("ready", onReady);
      reject(new StoreUnavailableError(undefined, { detail: "connection closed" }));
    };
    conn.once("ready", onReady);
    conn.once("end", onEnd);
  });
  if (conn.status === "wait") conn.connect().catch(() => {}); // failures reach "error"; retries go on
  await ready;
}
