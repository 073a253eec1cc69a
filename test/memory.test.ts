/**
 * Nothing in Redis grows with the number of tasks ever run: N short tasks with a short result TTL
 * leave the key count and used memory back near where they started.
 *
 * Size: N = 20,000 under `npm test`, 100,000 under `npm run test:soak` (BAICHUAN_SOAK=1);
 * BAICHUAN_MEMORY_TASKS sets another.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { eventually, startService, type TestService } from "./support/service.js";
import { soakSize } from "./support/soak.js";

const N = Math.floor(soakSize("BAICHUAN_MEMORY_TASKS", { quick: 20_000, soak: 100_000 }));

let svc: TestService;
beforeAll(async () => {
  svc = await startService({ demo: false, handlers: { "/mem/noop": () => null }, worker: { concurrency: 100 } });
});
afterAll(async () => {
  await svc?.close();
});

async function usedMemory(): Promise<number> {
  const info = await svc.redis.client.info("memory");
  return Number(/used_memory:(\d+)/.exec(info)![1]);
}

it(`${N.toLocaleString("en")} tasks with result_ttl 1 s: keys and memory return to their starting level`, async () => {
  // Warm up (the queue key, the scripts), then measure the baseline.
  await svc.bc.wait((await svc.bc.enqueue("/mem/noop", {}, { resultTtl: 0.5 })).id);
  await eventually(async () => (await svc.redis.client.keys("mq:msg:*")).length === 0, 60_000);
  const keysBefore = await svc.redis.client.dbsize();
  const memoryBefore = await usedMemory();

  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < N) {
        next++;
        await svc.bc.enqueue("/mem/noop", { n: next }, { resultTtl: 1, failureTtl: 1 });
      }
    }),
  );
  const peakKeys = await svc.redis.client.dbsize();
  expect(peakKeys).toBeGreaterThan(keysBefore + 1000); // the tasks were really there

  await eventually(async () => (await svc.redis.client.dbsize()) <= keysBefore || undefined, 120_000);
  const memoryAfter = await usedMemory();
  console.log(
    `[figures] memory: ${N} tasks; keys ${keysBefore} -> peak ${peakKeys} -> ${await svc.redis.client.dbsize()}; ` +
      `used_memory ${memoryBefore} -> ${memoryAfter} bytes`,
  );
  expect(await svc.redis.client.dbsize()).toBeLessThanOrEqual(keysBefore);
  expect(memoryAfter - memoryBefore).toBeLessThan(2 * 1024 * 1024);
}, 180_000);
