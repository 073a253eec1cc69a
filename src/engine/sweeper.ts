/**
 * The recovery sweep. Any process may run it; a lock makes one run at a time across all of them.
 * Each period the lock holder sweeps every handler that has a queue (sweep.lua): running tasks
 * whose lease lapsed go back to their queue or fail as lost, due retries are queued, and queued
 * tasks past their queue ttl fail as expired.
 *
 * Cost: one SET NX per period per process, plus, for the holder, one SMEMBERS and one EXISTS over
 * every handler's running, scheduled and expiry sets; only when that finds something, one script
 * per handler. Idle, that is 3 commands per period, whatever the number of handlers.
 */
import { randomBytes } from "node:crypto";
import { type Logger, silentLogger } from "../ops/log.js";
import type { Store } from "../store/store.js";

export interface SweeperOptions {
  /** Time between sweeps (default: 15,000 ms). */
  periodMs?: number;
  /** The workers' lease (default: 10,000 ms): how long they may need to renew after an outage. */
  leaseMs?: number;
  logger?: Logger;
}

export class Sweeper {
  private readonly periodMs: number;
  private readonly leaseMs: number;
  private readonly log: Logger;
  private readonly owner = randomBytes(8).toString("hex");
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    private readonly store: Store,
    options: SweeperOptions = {},
  ) {
    this.periodMs = options.periodMs ?? 15_000;
    this.leaseMs = options.leaseMs ?? 10_000;
    this.log = options.logger ?? silentLogger;
  }

  start(): void {
    if (this.timer) return;
    // Processes started together spread their attempts over the period.
    const first = Math.floor(Math.random() * this.periodMs);
    const tick = () => {
      this.running = this.sweepOnce().finally(() => (this.running = undefined));
    };
    this.timer = setTimeout(() => {
      tick();
      this.timer = setInterval(tick, this.periodMs);
      this.timer.unref();
    }, first);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One sweep if this process gets the lock. Returns whether it swept. */
  async sweepOnce(): Promise<boolean> {
    try {
      if (!(await this.store.takeSweepLock(this.owner, this.periodMs))) return false;
      const handlers = await this.store.queries.queuedHandlers();
      this.log.debug("sweeping", { handlers: handlers.length });
      if (!(await this.store.anyToSweep(handlers))) return true;
      for (const handler of handlers) {
        const r = await this.store.sweep(handler, this.leaseMs);
        if (r.recovered + r.lost + r.promoted + r.expired > 0) this.log.info("swept", { handler, ...r });
      }
      return true;
    } catch (err) {
      this.log.warn("recovery sweep failed; next period retries", { error: String(err) });
      return false;
    }
  }
}
