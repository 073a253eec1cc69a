/**
 * The unit tier keeps to its rules: no process, no connection, no listening port (the guard of
 * test/support/unit-guard.ts refuses them), and no unit test imports the helpers that start
 * redis-server or the service.
 */
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

describe("the unit tier", () => {
  it("refuses to start a process, open a connection or listen", () => {
    expect(() => spawn("redis-server")).toThrow(/may not start a process/);
    expect(() => connect(6379, "127.0.0.1")).toThrow(/may not open a connection/);
    expect(() => createServer().listen(0)).toThrow(/may not listen on a port/);
  });

  it("no unit test imports a helper that starts Redis, the service or a process", () => {
    const dir = "test/unit";
    const files = readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".ts"));
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) {
      const text = readFileSync(join(dir, file), "utf8");
      expect(text, file).not.toMatch(/from "\.\.\/support\/(redis|service|process|cluster|workers|python)\.js"/);
    }
  });
});
