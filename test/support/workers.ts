/**
 * Worker processes for fault tests: the real service binary, worker-only, with the fault handlers
 * of test/fixtures/handlers (`/faults/*`), a 1 s lease and a 1 s sweep; and a library client in
 * the test process that runs the recovery sweep often.
 */
import { BaiChuan } from "../../src/engine/baichuan.js";
import { type ServiceProcess, startProcess } from "./process.js";
import type { TestRedis } from "./redis.js";

export const FAULT_HANDLERS = "test/fixtures/handlers";

export function startWorker(redis: TestRedis, env: Record<string, string> = {}): ServiceProcess {
  return startProcess({
    BAICHUAN_REDIS_URL: redis.url,
    BAICHUAN_API: "0",
    BAICHUAN_HANDLERS_DIR: FAULT_HANDLERS,
    BAICHUAN_LEASE_SECONDS: "1",
    BAICHUAN_SWEEP_SECONDS: "1",
    BAICHUAN_CONCURRENCY: "100",
    ...env,
  });
}

/** A library client in the test process, running the recovery sweep often. */
export async function observer(redis: TestRedis): Promise<BaiChuan> {
  const bc = await BaiChuan.connect({ redis: redis.url });
  bc.startSweeper({ periodMs: 250, leaseMs: 1000 }); // the workers' lease (BAICHUAN_LEASE_SECONDS 1)
  return bc;
}
