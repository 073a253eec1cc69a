/**
 * Set up before each unit test file (vitest.config.ts, project "unit"): the unit tier starts no
 * process, opens no connection and listens on no port. Anything that tries throws, naming the rule,
 * so a unit test that would reach Redis (or a product path that would, where the test expects it not
 * to) fails at once instead of waiting on a server that is not there.
 */
import childProcess from "node:child_process";
import { syncBuiltinESMExports } from "node:module";
import net from "node:net";

function refuse(what: string): never {
  throw new Error(`a unit test may not ${what} (test/unit: no processes, no Redis, no sockets; see vitest.config.ts)`);
}

for (const name of ["spawn", "spawnSync", "exec", "execSync", "execFile", "execFileSync", "fork"] as const) {
  (childProcess as unknown as Record<string, unknown>)[name] = () => refuse(`start a process (child_process.${name})`);
}
net.Socket.prototype.connect = function connect(): never {
  return refuse("open a connection");
};
net.Server.prototype.listen = function listen(): never {
  return refuse("listen on a port");
};
// Named imports of node:child_process (`import { spawn } from ...`) see the replacements too.
syncBuiltinESMExports();
