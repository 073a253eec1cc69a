/**
 * Time in tests: stored times as epoch ms, and the one kind of sleep tests allow.
 */
import { microsFromIso } from "../../src/core/domain.js";

/** Epoch ms of a stored ISO time (microseconds kept as a fraction); NaN for none. */
export function msFromIso(iso: string | undefined): number {
  return iso ? microsFromIso(iso) / 1000 : Number.NaN;
}

/**
 * Let `ms` pass. Only for a bounded look at something that must NOT happen (a fourth task starting,
 * a repeated message): a test waits for what must happen on its event (a status, a log line).
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
