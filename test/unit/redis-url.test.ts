/**
 * Redis URLs (store/redis-url.ts): the original's form with its parameters, TLS, credentials, and
 * Redis Cluster seed lists; each bad URL refused with the reason.
 */
import { describe, expect, it } from "vitest";
import { DEFAULT_REDIS_URL, parseRedisUrl, RedisUrlError } from "../../src/store/redis-url.js";

/** The RedisUrlError parsing `url` throws. */
function refusal(url: string): RedisUrlError {
  try {
    parseRedisUrl(url);
  } catch (err) {
    expect(err).toBeInstanceOf(RedisUrlError);
    return err as RedisUrlError;
  }
  throw new Error(`${url} was accepted`);
}

describe("plain URLs", () => {
  it("the default URL: 127.0.0.1:6379, database 0, 2 s timeouts, no retry", () => {
    expect(parseRedisUrl(DEFAULT_REDIS_URL)).toEqual({
      host: "127.0.0.1",
      port: 6379,
      db: 0,
      commandTimeout: 2000,
      connectTimeout: 2000,
      maxRetriesPerRequest: 0,
    });
  });

  it("the original's form: an empty user, the database, the three parameters", () => {
    const s = parseRedisUrl("redis://@localhost:6380/3?socket_timeout=2.5&socket_connect_timeout=0.2&retry_on_timeout=true");
    expect(s).toMatchObject({ host: "localhost", port: 6380, db: 3, commandTimeout: 2500, connectTimeout: 200 });
    expect(s.maxRetriesPerRequest).toBe(1);
    expect(s.username).toBeUndefined();
    expect(s.password).toBeUndefined();
  });

  it.each([
    ["no port", "redis://example.com", { host: "example.com", port: 6379, db: 0 }],
    ["no host", "redis:///1", { host: "127.0.0.1", port: 6379, db: 1 }],
    ["a trailing slash", "redis://h:1/", { host: "h", port: 1, db: 0 }],
    ["database 15", "redis://h/15", { db: 15 }],
    ["an IPv6 host", "redis://[::1]:6390/2", { host: "::1", port: 6390, db: 2 }],
  ])("%s: %s", (_case, url, expected) => {
    expect(parseRedisUrl(url)).toMatchObject(expected);
  });

  it("credentials, percent-decoded", () => {
    expect(parseRedisUrl("redis://:s%40cret@h:1/0")).toMatchObject({ password: "s@cret" });
    expect(parseRedisUrl("redis://app:pa%3Ass@h:1/0")).toMatchObject({ username: "app", password: "pa:ss" });
  });

  it("rediss:// connects with TLS to the host's name", () => {
    expect(parseRedisUrl("rediss://cache.example:6380/0").tls).toEqual({ servername: "cache.example" });
    expect(parseRedisUrl("redis://cache.example:6380/0").tls).toBeUndefined();
  });

  it("retry_on_timeout takes the settings' booleans; a timeout shorter than 1 ms is 1 ms", () => {
    expect(parseRedisUrl("redis://h/0?retry_on_timeout=off").maxRetriesPerRequest).toBe(0);
    expect(parseRedisUrl("redis://h/0?retry_on_timeout=YES").maxRetriesPerRequest).toBe(1);
    expect(parseRedisUrl("redis://h/0?socket_timeout=0.0001").commandTimeout).toBe(1);
    expect(parseRedisUrl("redis://h/0?socket_timeout=3600").commandTimeout).toBe(3_600_000);
  });
});

describe("cluster URLs", () => {
  it("redis+cluster:// lists the seed nodes; the first is the host", () => {
    const s = parseRedisUrl("redis+cluster://10.0.0.1:7000,10.0.0.2:7001, node-3.example:7002");
    expect(s.clusterNodes).toEqual([
      { host: "10.0.0.1", port: 7000 },
      { host: "10.0.0.2", port: 7001 },
      { host: "node-3.example", port: 7002 },
    ]);
    expect(s).toMatchObject({ host: "10.0.0.1", port: 7000, db: 0 });
    expect(s.tls).toBeUndefined();
  });

  it("credentials and parameters apply to every node; rediss+cluster:// is TLS", () => {
    const s = parseRedisUrl("rediss+cluster://user:pw@a:1,[::1]:2?socket_timeout=1");
    expect(s.clusterNodes).toEqual([
      { host: "a", port: 1 },
      { host: "::1", port: 2 },
    ]);
    expect(s).toMatchObject({ username: "user", password: "pw", commandTimeout: 1000, tls: { servername: "a" } });
  });

  it("a single node is a cluster of one seed; an empty path is allowed", () => {
    expect(parseRedisUrl("redis+cluster://h:7000/").clusterNodes).toEqual([{ host: "h", port: 7000 }]);
  });

  it("a plain URL names no cluster", () => {
    expect(parseRedisUrl("redis://h:7000/0").clusterNodes).toBeUndefined();
  });
});

describe("bad URLs", () => {
  it.each([
    ["not a URL", "localhost:6379", /^scheme must be redis:\/\/, rediss:\/\/ or redis\+cluster:\/\/, got localhost:\/\/$/],
    ["an empty string", "", /^is not a URL: expected redis:\/\/\[:password@\]host:port\/db$/],
    ["a port but no host", "redis://:7000/1", /^is not a URL/],
    ["another scheme", "http://localhost:6379", /^scheme must be .*, got http:\/\/$/],
    ["unix sockets", "unix:///tmp/redis.sock", /^scheme must be .*, got unix:\/\/$/],
    ["database 16", "redis://h/16", /^database must be a number from 0 to 15, got "16"$/],
    ["database -1", "redis://h/-1", /^database must be a number from 0 to 15, got "-1"$/],
    ["a database name", "redis://h/cache", /^database must be a number from 0 to 15, got "cache"$/],
    ["a path", "redis://h/0/1", /^database must be a number from 0 to 15, got "0\/1"$/],
    ["an unknown parameter", "redis://h/0?timeout=1", /^unknown parameter "timeout" \(known: socket_timeout, /],
    ["a socket_timeout that is not a number", "redis://h/0?socket_timeout=fast", /^socket_timeout must be a number of seconds/],
    ["a socket_timeout of 0", "redis://h/0?socket_timeout=0", /^socket_timeout must be a number of seconds between 0 and 3600/],
    ["an empty socket_connect_timeout", "redis://h/0?socket_connect_timeout=", /^socket_connect_timeout must be/],
    ["a socket_connect_timeout over an hour", "redis://h/0?socket_connect_timeout=3601", /^socket_connect_timeout must/],
    ["a retry_on_timeout that is no boolean", "redis://h/0?retry_on_timeout=maybe", /^retry_on_timeout must be true or false/],
    ["a cluster URL without nodes", "redis+cluster://", /^is not a cluster URL: expected redis\+cluster:\/\//],
    ["a cluster node without a port", "redis+cluster://a:1,b", /^cluster node "b" is not host:port$/],
    ["a cluster node on port 0", "redis+cluster://a:0", /^cluster node "a:0" is not host:port$/],
    ["a cluster node on port 65536", "redis+cluster://a:65536", /^cluster node "a:65536" is not host:port$/],
    ["an empty cluster node", "redis+cluster://a:1,,b:2", /^cluster node "" is not host:port$/],
    ["a cluster with a database", "redis+cluster://a:1/2", /^a Redis Cluster has no database number/],
    ["a cluster URL with a fragment", "redis+cluster://a:1#x", /^is not a cluster URL/],
  ])("%s (%s)", (_case, url, reason) => {
    const err = refusal(url);
    expect(err.reason).toMatch(reason);
    expect(err.message).toBe(`bad Redis URL: ${err.reason}`);
  });

  it("a refusal shows at most 60 characters of a bad cluster node", () => {
    const err = refusal(`redis+cluster://${"n".repeat(100)}`);
    expect(err.reason).toBe(`cluster node "${"n".repeat(60)}" is not host:port`);
  });
});
