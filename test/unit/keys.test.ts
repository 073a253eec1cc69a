/**
 * Key and channel names (store/keys.ts): the handler's hash tag, task ids that start with it, the
 * shape of every key, and Redis Cluster slots. (redis-layout.test.ts checks what a real Redis ends
 * up holding, and compares keySlot with CLUSTER KEYSLOT.)
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  crc16,
  expiryKey,
  groupKeys,
  groupQueueKey,
  groupQueuePrefix,
  handlerOfQueueKey,
  handlerTag,
  idempotencyClaimKey,
  idempotencyRecordKey,
  keySlot,
  limitsKey,
  newTaskIds,
  QUEUES_KEY,
  queueKey,
  queueKeys,
  SCHEDULE_CHANNEL,
  SCHEDULE_KEY_PREFIX,
  SCHEDULES_DUE_KEY,
  SCHEDULES_KEY,
  SWEEP_LOCK_KEY,
  scheduledKey,
  scheduleKey,
  statsKey,
  TAG_LENGTH,
  TASK_ID_LENGTH,
  taskChannel,
  taskChannelPrefix,
  taskIdOfKey,
  taskKey,
  taskKeyPrefix,
  taskTag,
  uniqueKey,
  WORKERS_KEY,
  wakeChannel,
  wipKey,
  workerKey,
} from "../../src/store/keys.js";

const H = "/demo_api/ping";
const TAG = "7D0B"; // SHA-1("/demo_api/ping") starts 7d0b
const ID = `${TAG}0123456789ABCDEF`;

describe("tags", () => {
  it("a handler's tag is the first 4 hex characters of SHA-1 of its name, upper case", () => {
    expect(createHash("sha1").update(H).digest("hex").slice(0, 4)).toBe(TAG.toLowerCase());
    expect(handlerTag(H)).toBe(TAG);
    for (const h of ["/a/b", "/billing/charge", "/x/百川"]) {
      expect(handlerTag(h)).toBe(createHash("sha1").update(h).digest("hex").slice(0, TAG_LENGTH).toUpperCase());
      expect(handlerTag(h)).toMatch(/^[0-9A-F]{4}$/);
    }
  });

  it("is the same on every call (cached or not)", () => {
    const many = Array.from({ length: 20_000 }, (_, i) => `/m/f${i}`); // past the cache's 10,000 entries
    const first = many.map(handlerTag);
    expect(many.map(handlerTag)).toEqual(first);
  });
});

describe("task ids", () => {
  it("new ids are 20 upper-case hex characters starting with the handler's tag, all different", () => {
    const ids = newTaskIds(H, 1000);
    expect(ids).toHaveLength(1000);
    expect(new Set(ids).size).toBe(1000);
    for (const id of ids) {
      expect(id).toMatch(/^[0-9A-F]{20}$/);
      expect(id).toHaveLength(TASK_ID_LENGTH);
      expect(taskTag(id)).toBe(TAG);
    }
    expect(newTaskIds(H, 0)).toEqual([]);
  });

  it("a task's key and channel come from its id alone, and the id from its key", () => {
    expect(taskKey(ID)).toBe(`mq:msg:{${TAG}}0123456789ABCDEF`);
    expect(taskKeyPrefix(TAG)).toBe(`mq:msg:{${TAG}}`);
    expect(taskIdOfKey(taskKey(ID))).toBe(ID);
    expect(taskIdOfKey("mq:queues")).toBe("");
    expect(taskChannel(ID)).toBe(`mq:events:{${TAG}}0123456789ABCDEF`);
    expect(taskChannelPrefix(TAG)).toBe(`mq:events:{${TAG}}`);
  });
});

describe("schedules' keys", () => {
  it("every schedule key and the channel share the `{sched}` slot, whatever the id", () => {
    expect(scheduleKey("nightly:report")).toBe("mq:schedule:{sched}nightly:report");
    expect(scheduleKey("x")).toBe(`${SCHEDULE_KEY_PREFIX}x`);
    expect(SCHEDULES_KEY).toBe("mq:schedules:{sched}");
    expect(SCHEDULES_DUE_KEY).toBe("mq:schedules:{sched}due");
    const slots = new Set(
      [scheduleKey("a"), scheduleKey("{b}"), SCHEDULES_KEY, SCHEDULES_DUE_KEY, SCHEDULE_CHANNEL].map(keySlot),
    );
    expect(slots.size).toBe(1);
  });
});

describe("a handler's keys", () => {
  it.each([
    [`mq:queue:{${TAG}}${H}`, queueKey],
    [`mq:wip:{${TAG}}${H}`, wipKey],
    [`mq:scheduled:{${TAG}}${H}`, scheduledKey],
    [`mq:expiry:{${TAG}}${H}`, expiryKey],
    [`mq:stats:{${TAG}}${H}`, statsKey],
    [`mq:wake:{${TAG}}${H}`, wakeChannel],
  ] as const)("%s", (expected, fn) => {
    expect(fn(H)).toBe(expected);
  });

  it("three queues by priority, in the order workers take from them", () => {
    expect(queueKeys(H)).toEqual([`mq:queue:{${TAG}}${H}:high`, `mq:queue:{${TAG}}${H}`, `mq:queue:{${TAG}}${H}:low`]);
  });

  it("unique and idempotency keys", () => {
    expect(uniqueKey(H, "abc123")).toBe(`mq:unique:{${TAG}}${H}:abc123`);
    expect(idempotencyRecordKey(H, "order-42")).toBe(`mq:idem:{${TAG}}${H}:order-42`);
    // The claim lives in a slot of the key's own, not the handler's.
    const keyTag = createHash("sha1").update("order-42").digest("hex").slice(0, 4).toUpperCase();
    expect(idempotencyClaimKey("order-42")).toBe(`mq:idemkey:{${keyTag}}order-42`);
  });

  it("concurrency keys: one set per key, then the ring, running counts, grouped set and info", () => {
    expect(groupQueueKey(H, "customer:42")).toBe(`mq:group:{${TAG}}${H}:customer:42`);
    expect(`${groupQueuePrefix(H)}k`).toBe(groupQueueKey(H, "k"));
    expect(groupKeys(H)).toEqual([
      `mq:groupring:{${TAG}}${H}`,
      `mq:grouprun:{${TAG}}${H}`,
      `mq:grouped:{${TAG}}${H}`,
      `mq:groupinfo:{${TAG}}${H}`,
    ]);
  });

  it("the handler a queue key names, and nothing for other keys", () => {
    expect(handlerOfQueueKey(queueKey(H))).toBe(H);
    expect(handlerOfQueueKey(`mq:queue:{${TAG}}/a/b`)).toBe("/a/b"); // whatever the tag
    for (const key of [wipKey(H), `mq:queue:{7d0b}${H}`, `mq:queue:{ABC}${H}`, "mq:queue:/a/b", QUEUES_KEY, taskKey(ID)]) {
      expect(handlerOfQueueKey(key), key).toBeUndefined();
    }
  });

  it("global keys, outside any handler's slot", () => {
    expect([QUEUES_KEY, SWEEP_LOCK_KEY, WORKERS_KEY, workerKey("host:8585:42")]).toEqual([
      "mq:queues",
      "mq:lock:sweep",
      "mq:workers",
      "mq:worker:host:8585:42",
    ]);
  });

  it("every key and channel of a handler and its tasks is in the slot of its tag", () => {
    const slot = keySlot(`{${TAG}}`);
    const keys = [
      queueKey(H),
      ...queueKeys(H),
      wipKey(H),
      scheduledKey(H),
      expiryKey(H),
      statsKey(H),
      wakeChannel(H),
      uniqueKey(H, "d"),
      idempotencyRecordKey(H, "k"),
      ...groupKeys(H),
      limitsKey(H),
      groupQueueKey(H, "{other}"),
      ...newTaskIds(H, 5).flatMap((id) => [taskKey(id), taskChannel(id)]),
    ];
    for (const key of keys) expect(keySlot(key), key).toBe(slot);
  });
});

describe("cluster slots", () => {
  it("crc16 is CRC-16/XMODEM (check value of 123456789: 0x31C3)", () => {
    expect(crc16(Buffer.from("123456789"))).toBe(0x31c3);
    expect(crc16(Buffer.alloc(0))).toBe(0);
  });

  it.each([
    // CLUSTER KEYSLOT examples from Redis's documentation.
    ["somekey", 11058],
    ["foo{hash_tag}", 2515],
    ["foo", 12182],
  ])("keySlot(%j) = %i", (key, slot) => {
    expect(keySlot(key)).toBe(slot);
  });

  it("only the first non-empty {...} counts", () => {
    expect(keySlot("{user1000}.following")).toBe(keySlot("{user1000}.followers"));
    expect(keySlot("{user1000}.following")).toBe(keySlot("user1000"));
    expect(keySlot("a{}b")).toBe(crc16(Buffer.from("a{}b")) % 16384); // empty tag: the whole key
    expect(keySlot("{}{x}")).toBe(crc16(Buffer.from("{}{x}")) % 16384);
    expect(keySlot("a{x}{y}")).toBe(keySlot("x"));
    expect(keySlot("a{x")).toBe(crc16(Buffer.from("a{x")) % 16384); // no closing brace
  });

  it("slots are 0 to 16383", () => {
    for (let i = 0; i < 2000; i++) {
      const slot = keySlot(`key-${i}`);
      expect(slot).toBeGreaterThanOrEqual(0);
      expect(slot).toBeLessThan(16384);
    }
  });
});
