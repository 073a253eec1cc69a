/**
 * The per-minute series of a handler's ended runs, as Redis keeps them: the layout shared by the
 * scripts that write them (lua/lib/minutes.lua, which gets these constants from scripts.ts) and the
 * query that reads them (queries.ts), and the percentiles read off a minute's run time histogram.
 *
 * A minute's hash (keys.statsMinuteKey) holds `finished` and `failed` (tasks that ended so in that
 * minute) and `t<k>`: runs with a run time in bucket k of a fixed log-scale histogram. Bucket 0
 * holds runs under 1 ms; bucket k >= 1 holds [2^((k-1)/4), 2^(k/4)) ms; the last bucket also holds
 * everything longer. A percentile is its bucket's geometric middle, so it is within 9.1% of the
 * true run time (2^(1/8) - 1) for runs of 1 ms to 6.5 h.
 */

/** Histogram buckets per doubling of the run time. */
export const RUN_TIME_BUCKETS_PER_OCTAVE = 4;

/** Buckets in all: 0 (under 1 ms) to 99 (from 2^24.5 ms, about 6.5 h, on). */
export const RUN_TIME_BUCKETS = 100;

/** Minutes a handler's series is kept (GetQueueSeries reads at most this many). */
export const SERIES_MINUTES = 1440;

/** The relative error of a percentile read off the histogram, at most. */
export const RUN_TIME_RESOLUTION = 2 ** (1 / (2 * RUN_TIME_BUCKETS_PER_OCTAVE)) - 1;

/** The run time (seconds) a bucket stands for: its geometric middle (0.5 ms for bucket 0). */
export function bucketSeconds(bucket: number): number {
  if (bucket <= 0) return 0.0005;
  return 2 ** ((bucket - 0.5) / RUN_TIME_BUCKETS_PER_OCTAVE) / 1000;
}

/** The bucket of a run time in seconds, as lib/minutes.lua computes it (for tests and tools). */
export function bucketOf(seconds: number): number {
  const ms = seconds * 1000;
  if (!(ms >= 1)) return 0;
  return Math.min(RUN_TIME_BUCKETS - 1, Math.floor(Math.log2(ms) * RUN_TIME_BUCKETS_PER_OCTAVE) + 1);
}

/** One minute of a handler's runs. */
export interface SeriesPoint {
  /** Start of the minute, epoch ms. */
  minuteMs: number;
  finished: number;
  failed: number;
  /** Run time percentiles in seconds; undefined when no run with a run time ended in the minute. */
  p50: number | undefined;
  p95: number | undefined;
  p99: number | undefined;
}

/** A minute's point from its hash's fields (an empty hash: zeros). */
export function pointOf(minute: number, fields: Record<string, string>): SeriesPoint {
  const counts: number[] = [];
  let runs = 0;
  for (const [name, value] of Object.entries(fields)) {
    const m = /^t(\d{1,3})$/.exec(name);
    const n = Number(value);
    if (!m || !(n > 0)) continue;
    counts[Number(m[1])] = n;
    runs += n;
  }
  const at = (p: number) => percentile(counts, runs, p);
  return {
    minuteMs: minute * 60_000,
    finished: Number(fields.finished) || 0,
    failed: Number(fields.failed) || 0,
    p50: at(0.5),
    p95: at(0.95),
    p99: at(0.99),
  };
}

/** The nearest-rank percentile `p` (0..1) of `runs` runs counted by bucket; undefined for none. */
function percentile(counts: number[], runs: number, p: number): number | undefined {
  if (runs === 0) return undefined;
  const rank = Math.max(1, Math.ceil(p * runs));
  let seen = 0;
  for (let bucket = 0; bucket < counts.length; bucket++) {
    seen += counts[bucket] ?? 0;
    if (seen >= rank) return bucketSeconds(bucket);
  }
  return bucketSeconds(counts.length - 1);
}
