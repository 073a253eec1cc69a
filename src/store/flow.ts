/**
 * A handler's flow limits in Redis (keys.limitsKey, a hash read by every fetch: see
 * lua/lib/limits.lua): writing them, at run time or as the defaults given in code, pausing and
 * resuming, and reading them back with the queued tasks they hold back now. Every change publishes
 * `go` on the handler's wake channel, so held workers look again at once in every process.
 */
import type { QueueLimits } from "../core/domain.js";
import type { Connection } from "./connection.js";
import * as keys from "./keys.js";

/** A handler's limits as stored, whether it is paused, and how many queued tasks are held back now. */
export interface QueueFlow {
  limits: QueueLimits;
  paused: boolean;
  /** Queued tasks held back now by a limit or the pause (all of them while paused or while a limit allows no start). */
  held: number;
}

/** The hash's field of each limit (the contract lua/lib/limits.lua reads). */
const FIELDS = {
  ratePerSecond: "rate",
  burst: "burst",
  maxRunning: "max_running",
  maxRunningPerKey: "max_running_per_key",
} as const satisfies Record<keyof QueueLimits, string>;

export class Flow {
  constructor(private readonly connection: Connection) {}

  /** Replace every limit of a handler (0: none; stored as "0", so defaults in code no longer apply). */
  async setLimits(handler: string, limits: QueueLimits): Promise<void> {
    await this.write(
      handler,
      "set",
      limitPairs(limits, (n) => String(n)),
    );
  }

  /**
   * Write the limits given in code (registry or handler module) where the hash has no value yet:
   * a limit set at run time (SetQueueLimits), even to 0, wins. Limits left out are not written.
   */
  async setDefaultLimits(handler: string, limits: Partial<QueueLimits>): Promise<void> {
    const pairs = limitPairs(limits, (n) => (n === undefined ? undefined : String(n)));
    if (pairs.length > 0) await this.write(handler, "default", pairs);
  }

  /** Pause (no task of the handler starts in any process) or resume. */
  async setPaused(handler: string, paused: boolean): Promise<void> {
    await this.write(handler, "set", ["paused", paused ? "1" : ""]);
  }

  /** A handler's limits, pause and held tasks (queue-flow.lua: one script call). */
  async read(handler: string): Promise<QueueFlow> {
    const [rate, burst, maxRunning, maxRunningPerKey, paused, held] = await this.connection.call(() =>
      this.connection.script<[string, number, number, number, number, number]>(
        "queue-flow",
        [
          keys.limitsKey(handler),
          keys.bucketKey(handler),
          keys.wipKey(handler),
          ...keys.queueKeys(handler),
          keys.groupKeys(handler)[2],
        ],
        [],
      ),
    );
    return {
      limits: { ratePerSecond: Number(rate) || 0, burst, maxRunning, maxRunningPerKey },
      paused: paused === 1,
      held: Math.max(0, held),
    };
  }

  private write(handler: string, mode: "set" | "default", pairs: string[]): Promise<number> {
    return this.connection.call(() =>
      this.connection.script<number>(
        "set-limits",
        [keys.limitsKey(handler), ...keys.groupKeys(handler)],
        [keys.wakeChannel(handler), mode, keys.groupQueuePrefix(handler), ...pairs],
      ),
    );
  }
}

/** field, value, field, value, ... of the limits `format` gives a value for. */
function limitPairs<L extends Partial<QueueLimits>>(limits: L, format: (n: number | undefined) => string | undefined): string[] {
  return (Object.entries(FIELDS) as Array<[keyof QueueLimits, string]>).flatMap(([key, field]) => {
    const value = format(limits[key]);
    return value === undefined ? [] : [field, value];
  });
}
