/**
 * The lease table (lease-table.ts): entries the main thread writes, as the keeper thread reads them.
 */
import { describe, expect, it } from "vitest";
import { LeaseTable, LeaseTableReader, type TableMemory } from "../../src/worker/lease-table.js";

function entries(reader: LeaseTableReader): Array<[string, number, number]> {
  const out: Array<[string, number, number]> = [];
  reader.forEach((id, handler, until) => {
    out.push([id, handler, until]);
  });
  return out.sort();
}

describe("lease table", () => {
  it("shows the keeper every started task until it ends, with its handler and deadline", () => {
    const table = new LeaseTable(4, () => {});
    const reader = new LeaseTableReader(table.memory);
    table.start("0a1b2c3d4e5f60718293", 0, 1000);
    table.start("ffffffffffffffffffff", 2, 2000.5);
    expect(entries(reader)).toEqual([
      ["0a1b2c3d4e5f60718293", 0, 1000],
      ["ffffffffffffffffffff", 2, 2000.5],
    ]);
    table.end("0a1b2c3d4e5f60718293");
    table.end("not-started"); // nothing to end: no change
    expect(entries(reader)).toEqual([["ffffffffffffffffffff", 2, 2000.5]]);
    // A task started again (a retry by the same worker) takes its new deadline.
    table.start("ffffffffffffffffffff", 2, 3000);
    expect(entries(reader)).toEqual([["ffffffffffffffffffff", 2, 3000]]);
  });

  it("grows past its capacity, handing the keeper the new memory with every entry in it", () => {
    const moved: TableMemory[] = [];
    const table = new LeaseTable(2, (memory) => moved.push(memory));
    const reader = new LeaseTableReader(table.memory);
    const ids = Array.from({ length: 5 }, (_, i) => `task${String(i).padStart(16, "0")}`);
    for (const [i, id] of ids.entries()) table.start(id, i, i * 10);
    expect(moved.map((m) => m.capacity)).toEqual([4, 8]);
    reader.moved(moved.at(-1)!);
    expect(entries(reader).map(([id]) => id)).toEqual(ids);
    for (const id of ids) table.end(id);
    expect(entries(reader)).toEqual([]);
  });

  it("skips an entry that is being written (odd sequence number) and refuses an id too long", () => {
    const table = new LeaseTable(1, () => {});
    const reader = new LeaseTableReader(table.memory);
    table.start("a", 0, 1);
    const seqs = new Int32Array(table.memory.seqs);
    seqs[0] = seqs[0]! | 1; // as if the main thread were writing it now
    expect(entries(reader)).toEqual([]);
    expect(() => table.start("x".repeat(33), 0, 1)).toThrow(RangeError);
  });
});
