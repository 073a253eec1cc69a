/**
 * The layers of src/ and the rules between them, checked in CI (`npm run lint:deps`).
 *
 *   app, cli           start-up, configuration; the command line (a client only)
 *   http               the one-port listener: routing, bodies, CORS, telemetry, dashboard
 *   legacy             the JSON bridge and the original's admin URLs
 *   api                TaskService, AdminService, health, reflection, the lean gRPC watch path
 *   ops/metrics        metrics of the engine's work
 *   engine             BaiChuan: creates, reads, watches, admin queries, the sweeper
 *   worker             running handlers, leases, the process guard
 *   store              Redis: keys, scripts, connections, subscriptions
 *   core, ops/log, ops/request   the vocabulary everything shares
 *
 * A layer imports only layers below it. No import cycles, type-only imports included.
 */
const below = (...layers) => layers.map((l) => `^src/${l}/`).join("|");

module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "Files that import each other, directly or through others (type imports count too).",
      from: { path: "^src/" },
      to: { circular: true },
    },
    {
      name: "core-is-the-bottom",
      severity: "error",
      comment: "core/ and ops/log, ops/request import nothing else from src/.",
      from: { path: "^src/core/|^src/ops/(log|request)\\.ts$" },
      to: { path: "^src/", pathNot: "^src/core/|^src/ops/(log|request)\\.ts$" },
    },
    {
      name: "store-below-worker",
      severity: "error",
      from: { path: "^src/store/" },
      to: { path: below("worker", "engine", "api", "legacy", "http", "app", "cli") + "|^src/ops/metrics" },
    },
    {
      name: "worker-below-engine",
      severity: "error",
      from: { path: "^src/worker/" },
      to: { path: below("engine", "api", "legacy", "http", "app", "cli") + "|^src/ops/metrics" },
    },
    {
      name: "engine-below-api",
      severity: "error",
      from: { path: "^src/engine/" },
      to: { path: below("api", "legacy", "http", "app", "cli") + "|^src/ops/metrics" },
    },
    {
      name: "store-private-to-engine",
      severity: "error",
      comment: "Above the engine, Redis is reached through BaiChuan only (app reads the Redis URL's settings).",
      from: { path: "^src/(api|legacy|http|ops|cli)/" },
      to: { path: "^src/store/" },
    },
    {
      name: "app-store-url-only",
      severity: "error",
      from: { path: "^src/app/" },
      to: { path: "^src/store/", pathNot: "^src/store/redis-url\\.ts$" },
    },
    {
      name: "api-below-legacy-and-http",
      severity: "error",
      from: { path: "^src/api/" },
      to: { path: below("legacy", "http", "app", "cli") },
    },
    {
      name: "legacy-below-http",
      severity: "error",
      from: { path: "^src/legacy/" },
      to: { path: below("http", "app", "cli") },
    },
    {
      name: "http-below-app",
      severity: "error",
      from: { path: "^src/http/" },
      to: { path: below("app", "cli") },
    },
    {
      name: "cli-is-a-client",
      severity: "error",
      comment: "The command line speaks to a server through the typed client, as any caller would.",
      from: { path: "^src/cli/" },
      to: { path: "^src/", pathNot: "^src/cli/|^src/client\\.ts$" },
    },
    {
      name: "no-test-code-in-src",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^test/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^gen/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default"] },
  },
};
