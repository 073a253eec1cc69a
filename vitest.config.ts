import { defineConfig } from "vitest/config";

/**
 * Two tiers, both run by `npm test`:
 * - unit (`npm run test:unit`): test/unit/, pure logic and the RPC layer in this process; no child
 *   processes, no Redis, no listening socket;
 * - integration: test/*.test.ts, against real redis-server processes and real listeners.
 * `npm run test:soak` runs the soak and load tests at full size (see test/support/soak.ts).
 */
export default defineConfig({
  test: {
    // Generous: tests wait on events, and a busy 2-core machine may be many times slower than a
    // quiet one; a bound is only there to end a test that hangs.
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: "forks",
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: { name: "unit", include: ["test/unit/**/*.test.ts"], setupFiles: ["test/support/unit-guard.ts"] },
      },
      { extends: true, test: { name: "integration", include: ["test/*.test.ts"] } },
    ],
  },
});
