/**
 * The log of Redis refusing writes for lack of memory: such refusals come in bursts (every write
 * fails), so one line at once, then at most one per period counting those seen meanwhile.
 */
import type { Logger } from "../ops/log.js";

/** Shortest time between two log lines about Redis refusing writes for lack of memory. */
export const FULL_LOG_PERIOD_MS = 10_000;

/**
 * Log lines for an error that comes in bursts (Redis out of memory refuses every write): the first
 * one at once, then at most one line per period that counts those seen meanwhile.
 */
export class BurstLog {
  private last = 0;
  private unlogged = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly periodMs: number,
  ) {}

  hit(err: Error): void {
    if (this.timer) {
      this.unlogged++;
      return;
    }
    const wait = this.last + this.periodMs - Date.now();
    if (wait <= 0) {
      this.last = Date.now();
      const reply = err.cause instanceof Error ? err.cause.message : String(err.cause);
      this.log.error("Redis refuses writes: out of memory (maxmemory reached, nothing evicted)", { reply });
      return;
    }
    this.unlogged = 1;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.last = Date.now();
      this.log.error("Redis refuses writes: still out of memory", { refused: this.unlogged, in_seconds: this.periodMs / 1000 });
      this.unlogged = 0;
    }, wait);
    this.timer.unref();
  }
}
