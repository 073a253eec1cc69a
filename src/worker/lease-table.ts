/**
 * The tasks a worker runs, in memory shared by its main thread and its lease keeper thread: the
 * main thread writes a task's entry as the task starts and clears it as it ends; the keeper reads
 * the whole table at each renewal. No message crosses per start or end: a message wakes the other
 * thread, which cost a worker a tenth of its time when tasks are short.
 *
 * Each entry is guarded by a sequence number (a seqlock): odd while the main thread writes it,
 * even once written, 0 when free. The keeper skips an entry that was being written or changed
 * while it read it; it reads it again at the next renewal, a quarter of a lease later.
 */

/** Longest task id the table holds (ids are 20 characters). */
const ID_BYTES = 32;

/** The shared memory of a table, as it crosses to the keeper thread. */
export interface TableMemory {
  capacity: number;
  /** Per entry: its sequence number (see the file's comment). */
  seqs: SharedArrayBuffer;
  /** Per entry: the index of its handler's running set in the keeper's list. */
  handlers: SharedArrayBuffer;
  /** Per entry: renew its lease until then (epoch ms). */
  untils: SharedArrayBuffer;
  /** Per entry: its task id, ID_BYTES bytes (ASCII), zero-padded. */
  ids: SharedArrayBuffer;
}

function allocate(capacity: number): TableMemory {
  return {
    capacity,
    seqs: new SharedArrayBuffer(capacity * 4),
    handlers: new SharedArrayBuffer(capacity * 4),
    untils: new SharedArrayBuffer(capacity * 8),
    ids: new SharedArrayBuffer(capacity * ID_BYTES),
  };
}

class View {
  readonly seqs: Int32Array;
  readonly handlers: Int32Array;
  readonly untils: Float64Array;
  readonly ids: Uint8Array;
  constructor(readonly memory: TableMemory) {
    this.seqs = new Int32Array(memory.seqs);
    this.handlers = new Int32Array(memory.handlers);
    this.untils = new Float64Array(memory.untils);
    this.ids = new Uint8Array(memory.ids);
  }
}

/** The main thread's side: writes entries. */
export class LeaseTable {
  private view: View;
  private readonly slots = new Map<string, number>();
  private free: number[] = [];

  /** `onGrow`: the table moved to larger memory, to hand to the keeper. */
  constructor(
    capacity: number,
    private readonly onGrow: (memory: TableMemory) => void,
  ) {
    this.view = new View(allocate(capacity));
    for (let i = capacity - 1; i >= 0; i--) this.free.push(i);
  }

  get memory(): TableMemory {
    return this.view.memory;
  }

  /** A task started: renew its lease until `until` (epoch ms), its running set the keeper's `handlerIndex`. */
  start(id: string, handlerIndex: number, until: number): void {
    if (id.length > ID_BYTES) throw new RangeError(`task id longer than ${ID_BYTES} characters: ${id}`);
    let slot = this.slots.get(id);
    if (slot === undefined) {
      if (this.free.length === 0) this.grow();
      slot = this.free.pop()!;
      this.slots.set(id, slot);
    }
    this.write(this.view, slot, id, handlerIndex, until);
  }

  /** A task ended: its lease is no longer renewed. */
  end(id: string): void {
    const slot = this.slots.get(id);
    if (slot === undefined) return;
    this.slots.delete(id);
    Atomics.store(this.view.seqs, slot, 0);
    this.free.push(slot);
  }

  private write(view: View, slot: number, id: string, handlerIndex: number, until: number): void {
    const seq = Atomics.load(view.seqs, slot);
    Atomics.store(view.seqs, slot, seq | 1); // odd: being written
    view.handlers[slot] = handlerIndex;
    view.untils[slot] = until;
    const at = slot * ID_BYTES;
    for (let i = 0; i < ID_BYTES; i++) view.ids[at + i] = i < id.length ? id.charCodeAt(i) : 0;
    Atomics.store(view.seqs, slot, (seq | 1) + 1); // even: written
  }

  /** Move to memory twice as large (the keeper reads the old table until it hears of the new one). */
  private grow(): void {
    const old = this.view;
    const capacity = old.memory.capacity * 2;
    this.view = new View(allocate(capacity));
    for (const [id, slot] of this.slots) this.write(this.view, slot, id, old.handlers[slot]!, old.untils[slot]!);
    for (let i = capacity - 1; i >= old.memory.capacity; i--) this.free.push(i);
    this.onGrow(this.view.memory);
  }
}

/** The keeper's side: reads every entry written, skipping those that change as it reads. */
export class LeaseTableReader {
  private view: View;
  constructor(memory: TableMemory) {
    this.view = new View(memory);
  }

  /** The table moved (LeaseTable's onGrow). */
  moved(memory: TableMemory): void {
    this.view = new View(memory);
  }

  forEach(visit: (id: string, handlerIndex: number, until: number) => void): void {
    const view = this.view;
    for (let slot = 0; slot < view.memory.capacity; slot++) {
      const seq = Atomics.load(view.seqs, slot);
      if (seq === 0 || seq & 1) continue;
      const handlerIndex = view.handlers[slot]!;
      const until = view.untils[slot]!;
      let id = "";
      const at = slot * ID_BYTES;
      for (let i = 0; i < ID_BYTES && view.ids[at + i] !== 0; i++) id += String.fromCharCode(view.ids[at + i]!);
      if (Atomics.load(view.seqs, slot) !== seq) continue; // changed while read: the next renewal
      visit(id, handlerIndex, until);
    }
  }
}
