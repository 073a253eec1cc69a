/**
 * Creating tasks: each create is one script call (create.lua) for a handler's batch, made of the
 * creates of one run of the microtask queue, with unique locks and idempotency keys. The first
 * create of a handler adds its queue to `mq:queues` (again every QUEUE_REASSERT_MS, so a Redis that
 * lost its data hears of it).
 */
import { Cluster } from "ioredis";
import { DEFAULTS, decodeTask, isoFromMicros, type Task } from "../core/domain.js";
import { IdempotencyKeyReusedError, QueueFullError, StoreUnavailableError } from "../core/errors.js";
import type { Connection } from "./connection.js";
import * as keys from "./keys.js";
import { CODES } from "./scripts.js";

/** How often a process re-adds the queues it uses to `mq:queues` (see registerQueue). */
const QUEUE_REASSERT_MS = 10_000;

/** What `createTask` stores. Times in seconds. */
export interface NewTask {
  handler: string;
  paramsJson: string;
  timeout: number;
  resultTtl: number;
  failureTtl: number;
  ttl: number | undefined;
  maxAttempts: number;
  /** Most tasks the handler's queue may hold; 0 for no limit. */
  maxQueued: number;
  ip: string;
  /**
   * When the task becomes due: `{ inMs }` from now by Redis's clock (a delay), or `{ atMs }`, an
   * instant the caller named (epoch ms; one already past queues it now); undefined to queue it now.
   */
  due?: { inMs: number } | { atMs: number } | undefined;
  /** 1, 0 or -1. */
  priority?: number;
  /** Id of the request that created the task (field `request_id`), for the worker's log lines. */
  requestId?: string | undefined;
  /** The task's concurrency key (field `concurrency_key`; lua/lib/groups.lua), or undefined for none. */
  concurrencyKey?: string | undefined;
  /** Key of the unique lock when the create is unique. */
  uniqueKey: string | undefined;
  /**
   * The caller's idempotency key, the digest of the params (paramsDigest) and how long the key is
   * remembered (seconds); undefined for a create without a key. `internal`: a key of BaiChuan's
   * own (a schedule's tick), used with one handler only: it is not claimed in a slot of its own.
   */
  idempotency?: { key: string; digest: string; ttl: number; internal?: boolean } | undefined;
  /** The schedule whose tick (epoch ms) creates the task (fields `schedule_id`, `schedule_tick`). */
  schedule?: { id: string; tickMs: number } | undefined;
}

/** A created task's id; for a unique create, possibly the id of the live task it duplicates. */
export interface CreateResult {
  id: string;
  deduplicated: boolean;
  /** True when the idempotency key was used before with the same handler and params: `id` (and `deduplicated`) are that create's answer. */
  replayed: boolean;
}

/** A task's due time as create.lua takes it: `+<ms>` from now, `<epoch ms>`, or undefined for now. */
function dueArg(due: NewTask["due"]): string | undefined {
  if (due === undefined) return undefined;
  return "inMs" in due ? `+${Math.max(1, Math.round(due.inMs))}` : String(Math.round(due.atMs));
}

/** One task as create.lua takes it: a JSON object of strings, without the fields at their defaults. */
function createArg(id: string, handler: string, t: NewTask): string {
  return JSON.stringify({
    id,
    data: t.paramsJson,
    timeout: String(t.timeout),
    result_ttl: String(t.resultTtl),
    ip: t.ip,
    failure_ttl: t.failureTtl === DEFAULTS.failureTtl ? undefined : String(t.failureTtl),
    ttl: t.ttl === undefined ? undefined : String(t.ttl),
    unique: t.uniqueKey,
    max_attempts: t.maxAttempts === DEFAULTS.maxAttempts ? undefined : String(t.maxAttempts),
    due: dueArg(t.due),
    priority: t.priority ? String(t.priority) : undefined,
    request_id: t.requestId,
    concurrency_key: t.concurrencyKey,
    record: t.idempotency ? keys.idempotencyRecordKey(handler, t.idempotency.key) : undefined,
    digest: t.idempotency?.digest,
    schedule_id: t.schedule?.id,
    schedule_tick: t.schedule ? isoFromMicros(t.schedule.tickMs * 1000) : undefined,
  });
}

/**
 * A create's failure, said plainly when its script may have run (it was sent and its answer was
 * lost or late): the caller learns the task may exist, and how to retry safely.
 */
function mayHaveCreated(err: unknown, tasks: NewTask[]): unknown {
  if (!(err instanceof StoreUnavailableError) || !err.mayHaveApplied) return err;
  const what = tasks.length === 1 ? "the task may have been created" : "the tasks may have been created";
  const advice = tasks.every((t) => t.idempotency)
    ? `${what}: retry with the same idempotency key to be safe`
    : `${what}: a retry without an idempotency key may create it twice`;
  return new StoreUnavailableError(err.cause, { detail: err.detail, advice, mayHaveApplied: true });
}

/**
 * A worker of this process that takes new tasks of its handlers at once when it has idle slots
 * (create.lua's claims): the create starts them, and the worker runs them without a fetch.
 */
export interface Claimer {
  /** Worker name (`host:port:pid`) and lease (ms) the claimed tasks are started with. */
  readonly name: string;
  readonly leaseMs: number;
  /** Hold up to `count` idle slots for `handler`'s new tasks; how many it holds (0: claim none). */
  reserve(handler: string, count: number): number;
  /**
   * The create answered (or failed): run the tasks it claimed and free the `reserved` slots.
   * `lost`: no answer came though the script may have run: tasks may have been claimed unseen.
   */
  claimed(handler: string, tasks: Task[], reserved: number, lost: boolean): void;
}

/** A task create.lua may claim: due now, without a queue ttl or a concurrency key. */
function claimable(t: NewTask): boolean {
  return t.due === undefined && t.ttl === undefined && t.concurrencyKey === undefined;
}

type CreateBatch = Array<{ task: NewTask; resolve: (r: CreateResult) => void; reject: (e: unknown) => void }>;

export class Creator {
  /** Handlers whose queue this process added to `mq:queues`, and when (epoch ms). */
  private readonly registeredQueues = new Map<string, number>();
  private readonly creates = new Map<string, CreateBatch>();
  /** This process's worker, while one runs (claims). */
  claimer: Claimer | undefined;

  constructor(private readonly connection: Connection) {
    // Redis may have come back empty (a restart without persistence): say again what we own.
    connection.onReady(() => this.registeredQueues.clear());
  }

  /**
   * Create and queue tasks of one handler, in order, in one script call. Each result is the new id,
   * the id of a live duplicate for a unique create, the earlier answer for an idempotency key used
   * before with the same params, or the error of that item alone (QueueFullError,
   * IdempotencyKeyReusedError).
   *
   * With idempotency keys, two steps: each key is first claimed for this handler in its own slot
   * (claimIdempotencyKeys), then create.lua checks and writes the key's record in the handler's
   * slot, atomically with the task. A create that fails after the claim leaves only the claim,
   * which the next try with the same key and handler passes; one whose create ran but whose answer
   * was lost left the record, which answers the next try.
   */
  async createTasks(handler: string, tasks: NewTask[]): Promise<Array<CreateResult | Error>> {
    await this.registerQueue(handler);
    const results: Array<CreateResult | Error | undefined> = new Array(tasks.length);
    let pending = tasks.map((_, i) => i);
    const keyed = pending.filter((i) => tasks[i]!.idempotency !== undefined && !tasks[i]!.idempotency!.internal);
    if (keyed.length > 0) {
      const owners = await this.claimIdempotencyKeys(
        handler,
        keyed.map((i) => tasks[i]!.idempotency!),
      );
      keyed.forEach((index, k) => {
        if (owners[k] !== handler) results[index] = new IdempotencyKeyReusedError(tasks[index]!.idempotency!.key);
      });
      pending = pending.filter((i) => results[i] === undefined);
    }
    const recordTtl = tasks.find((t) => t.idempotency)?.idempotency?.ttl ?? 0;
    const tag = keys.handlerTag(handler);
    // A random id that is taken (about 1 in 2^64) is drawn again.
    for (let round = 0; round < 5 && pending.length > 0; round++) {
      const ids = keys.newTaskIds(handler, pending.length);
      const claimer = this.claimer;
      let reserved = 0;
      // No claims in a batch with concurrency keys: its tasks take turns with the others (fetch.lua).
      if (claimer && round === 0 && !tasks.some((t) => t.concurrencyKey !== undefined)) {
        let leading = 0; // claims stop at the first task that cannot be claimed
        while (leading < pending.length && claimable(tasks[pending[leading]!]!)) leading++;
        if (leading > 0) reserved = claimer.reserve(handler, leading);
      }
      const args = [
        handler,
        keys.wakeChannel(handler),
        keys.taskKeyPrefix(tag),
        String(tasks[0]!.maxQueued),
        String(recordTtl),
        keys.groupQueuePrefix(handler),
        String(reserved),
        reserved > 0 ? claimer!.name : "",
        reserved > 0 ? String(claimer!.leaseMs) : "0",
        keys.taskChannelPrefix(tag),
      ];
      args.push(...pending.map((index, k) => createArg(ids[k]!, handler, tasks[index]!)));
      const batch = pending.map((i) => tasks[i]!);
      let reply: Array<string | number>;
      try {
        const [answers, claimed] = await this.connection.call(() =>
          this.connection.script<[Array<string | number>, string[]]>(
            "create",
            [
              ...keys.queueKeys(handler),
              keys.expiryKey(handler),
              keys.scheduledKey(handler),
              keys.limitsKey(handler),
              ...keys.groupKeys(handler),
              keys.wipKey(handler),
            ],
            args,
          ),
        );
        reply = answers;
        if (reserved > 0) {
          const started: Task[] = [];
          for (let i = 0; i + 1 < claimed.length; i += 2) {
            started.push(decodeTask(claimed[i]!, JSON.parse(claimed[i + 1]!) as Record<string, string>));
          }
          // Before the callers hear of their tasks: a wait on one finds it running here.
          claimer!.claimed(handler, started, reserved, false);
        }
      } catch (err) {
        if (reserved > 0) claimer!.claimed(handler, [], reserved, err instanceof StoreUnavailableError && err.mayHaveApplied);
        throw mayHaveCreated(err, batch);
      }
      const retry: number[] = [];
      pending.forEach((index, k) => {
        const id = reply[2 * k] as string;
        const code = Number(reply[2 * k + 1]);
        const { ID_TAKEN, QUEUE_FULL, KEY_REUSED, UNIQUE_HIT, REPLAYED_NEW, REPLAYED_UNIQUE_HIT } = CODES.create;
        if (code === ID_TAKEN) retry.push(index);
        else if (code === QUEUE_FULL) results[index] = new QueueFullError(handler, tasks[index]!.maxQueued);
        else if (code === KEY_REUSED) results[index] = new IdempotencyKeyReusedError(tasks[index]!.idempotency!.key);
        else {
          const deduplicated = code === UNIQUE_HIT || code === REPLAYED_UNIQUE_HIT;
          results[index] = { id, deduplicated, replayed: code === REPLAYED_NEW || code === REPLAYED_UNIQUE_HIT };
        }
      });
      pending = retry;
    }
    if (pending.length > 0) throw new Error("could not draw free task ids");
    return results as Array<CreateResult | Error>;
  }

  /**
   * Step 1 of creates with idempotency keys: claim each key for `handler`, in the key's own slot
   * (`mq:idemkey:{KTAG}<key>`, for `ttl` seconds). Returns, per key, the handler it belongs to:
   * `handler` when it was free or is already this handler's, another name when it was used with
   * another handler. A read first; a write (SET NX GET, which also settles a race) only for a key
   * not yet claimed, so a retry whose key is claimed writes nothing here.
   */
  private async claimIdempotencyKeys(handler: string, items: Array<{ key: string; ttl: number }>): Promise<string[]> {
    const claimKeys = items.map((item) => keys.idempotencyClaimKey(item.key));
    const owners = await this.each(claimKeys.map((key) => ["get", key]));
    const free = owners.flatMap((owner, i) => (owner === null ? [i] : []));
    if (free.length > 0) {
      const before = await this.each(free.map((i) => ["set", claimKeys[i]!, handler, "EX", String(items[i]!.ttl), "NX", "GET"]));
      free.forEach((i, k) => {
        owners[i] = before[k] ?? handler;
      });
    }
    return owners as string[];
  }

  /**
   * Run single-key commands whose keys may lie on different slots, and return their replies: on
   * one Redis in one pipeline (one write, one round trip), on a cluster each routed to its slot.
   */
  private async each(commands: string[][]): Promise<Array<string | null>> {
    if (this.connection.redis instanceof Cluster) {
      const cluster = this.connection.redis;
      return this.connection.call(() =>
        Promise.all(commands.map(([name, ...args]) => cluster.call(name!, ...args) as Promise<string | null>)),
      );
    }
    const replies = (await this.connection.call(() => this.connection.redis.pipeline(commands).exec())) ?? [];
    return replies.map(([err, reply]) => {
      if (err) throw this.connection.failure(err);
      return reply as string | null;
    });
  }

  /**
   * Create and queue one task (see createTasks). Creates of one handler made together (in one run
   * of the microtask queue: many callers at once) travel in one script call.
   */
  createTask(task: NewTask): Promise<CreateResult> {
    let batch = this.creates.get(task.handler);
    if (!batch) {
      const created: CreateBatch = [];
      this.creates.set(task.handler, created);
      queueMicrotask(() => {
        this.creates.delete(task.handler);
        void this.flushCreates(task.handler, created);
      });
      batch = created;
    }
    const items = batch;
    return new Promise((resolve, reject) => items.push({ task, resolve, reject }));
  }

  /**
   * Send a batch in two or more chunks at once (in order, on one connection): Redis runs the first
   * while this process encodes the next, and the callers of the first can make their next creates
   * while Redis runs the second, so this process and Redis work at the same time.
   */
  private async flushCreates(handler: string, items: CreateBatch): Promise<void> {
    const size = Math.min(500, Math.max(16, Math.ceil(items.length / 2)));
    const chunks: CreateBatch[] = [];
    for (let start = 0; start < items.length; start += size) chunks.push(items.slice(start, start + size));
    await Promise.all(chunks.map((chunk) => this.flushCreateChunk(handler, chunk)));
  }

  private async flushCreateChunk(handler: string, chunk: CreateBatch): Promise<void> {
    try {
      const results = await this.createTasks(
        handler,
        chunk.map((item) => item.task),
      );
      chunk.forEach((item, k) => {
        const result = results[k]!;
        if (result instanceof Error) item.reject(result);
        else item.resolve(result);
      });
    } catch (err) {
      for (const item of chunk) item.reject(err);
    }
  }

  /**
   * Add a handler's queue to `mq:queues`: at most once per QUEUE_REASSERT_MS per handler, so a
   * Redis that lost its data (FLUSHALL, a restart without persistence, a failover to an empty
   * replica) hears of the queue again within that time, and the sweep finds it.
   */
  async registerQueue(handler: string): Promise<void> {
    const at = this.registeredQueues.get(handler);
    if (at !== undefined && Date.now() - at < QUEUE_REASSERT_MS) return;
    await this.connection.call(() => this.connection.redis.sadd(keys.QUEUES_KEY, keys.queueKey(handler)));
    this.registeredQueues.set(handler, Date.now());
  }
}
