/**
 * Schedules' pure logic (core/schedule.ts): when the next tick is (every, cron in a time zone,
 * start_at and end_at), what daylight-saving changes do to cron ticks (fixed dates, Europe/Berlin
 * and America/New_York), what a scheduler does with a tick that is late or missed, and the checks
 * of a definition.
 */
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/core/errors.js";
import {
  checkScheduleId,
  checkScheduleSpec,
  MISSED_AFTER_MS,
  nextTick,
  planTick,
  type ScheduleDefinition,
  type ScheduleSpec,
} from "../../src/core/schedule.js";

const at = (iso: string) => Date.parse(iso);
const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());

/** A checked definition with defaults for the rest. */
function def(spec: Partial<ScheduleSpec>): ScheduleDefinition {
  return checkScheduleSpec({ id: "s", handler: "/m/f", ...spec });
}

/** The first `n` ticks after `fromMs`. */
function ticks(d: ScheduleDefinition, anchorMs: number, fromMs: number, n: number): Array<string | undefined> {
  const out: Array<string | undefined> = [];
  let after = fromMs;
  for (let i = 0; i < n; i++) {
    const next = nextTick(d, anchorMs, after);
    out.push(iso(next));
    if (next === undefined) break;
    after = next;
  }
  return out;
}

describe("nextTick: every", () => {
  const created = at("2025-01-01T00:00:00.250Z");

  it("falls on the creation time plus whole intervals, the first strictly after `after`", () => {
    const d = def({ every: 10 });
    expect(iso(nextTick(d, created, created))).toBe("2025-01-01T00:00:10.250Z");
    expect(iso(nextTick(d, created, created + 10_000))).toBe("2025-01-01T00:00:20.250Z");
    expect(iso(nextTick(d, created, created + 10_001))).toBe("2025-01-01T00:00:20.250Z");
    expect(iso(nextTick(d, created, created + 3_600_000 + 5))).toBe("2025-01-01T01:00:10.250Z");
  });

  it("counts from start_at when set: start_at itself is the first tick", () => {
    const d = def({ every: 60, startAt: at("2025-01-01T12:00:00Z") });
    expect(ticks(d, created, created, 2)).toEqual(["2025-01-01T12:00:00.000Z", "2025-01-01T12:01:00.000Z"]);
    expect(iso(nextTick(d, created, at("2025-01-01T12:00:30Z")))).toBe("2025-01-01T12:01:00.000Z");
  });

  it("has no tick after end_at (one exactly at end_at still runs)", () => {
    const d = def({ every: 1, startAt: at("2025-01-01T00:00:00Z"), endAt: at("2025-01-01T00:00:02Z") });
    expect(ticks(d, created, 0, 5)).toEqual([
      "2025-01-01T00:00:00.000Z",
      "2025-01-01T00:00:01.000Z",
      "2025-01-01T00:00:02.000Z",
      undefined,
    ]);
  });

  it("counts real time: a daylight-saving change does not move it", () => {
    const d = def({ every: 3600, startAt: at("2025-03-30T00:00:00Z") });
    expect(ticks(d, 0, at("2025-03-30T00:00:00Z"), 3)).toEqual([
      "2025-03-30T01:00:00.000Z",
      "2025-03-30T02:00:00.000Z",
      "2025-03-30T03:00:00.000Z",
    ]);
  });
});

describe("nextTick: cron", () => {
  it("reads 5 fields in UTC by default, and 6 with seconds first", () => {
    expect(ticks(def({ cron: "*/15 * * * *" }), 0, at("2025-01-01T00:07:00Z"), 2)).toEqual([
      "2025-01-01T00:15:00.000Z",
      "2025-01-01T00:30:00.000Z",
    ]);
    expect(ticks(def({ cron: "*/20 * * * * *" }), 0, at("2025-01-01T00:00:00Z"), 2)).toEqual([
      "2025-01-01T00:00:20.000Z",
      "2025-01-01T00:00:40.000Z",
    ]);
  });

  it("reads the fields as civil time in the time zone", () => {
    expect(iso(nextTick(def({ cron: "0 9 * * *", timeZone: "Asia/Tokyo" }), 0, at("2025-06-01T12:00:00Z")))).toBe(
      "2025-06-02T00:00:00.000Z",
    );
  });

  it("starts at start_at (a tick exactly at start_at counts) and stops at end_at", () => {
    const d = def({ cron: "0 * * * *", startAt: at("2025-01-01T05:00:00Z"), endAt: at("2025-01-01T06:30:00Z") });
    expect(ticks(d, 0, at("2025-01-01T00:00:00Z"), 4)).toEqual([
      "2025-01-01T05:00:00.000Z",
      "2025-01-01T06:00:00.000Z",
      undefined,
    ]);
  });

  describe("across daylight-saving changes (fixed dates)", () => {
    // Europe/Berlin: 2025-03-30 02:00 CET -> 03:00 CEST (02:xx does not exist);
    // 2025-10-26 03:00 CEST -> 02:00 CET (02:xx happens twice).
    const berlin = def({ cron: "30 2 * * *", timeZone: "Europe/Berlin" });

    it("Europe/Berlin spring forward: a daily 02:30 runs at 03:00 CEST that day, then at 02:30 again", () => {
      expect(ticks(berlin, 0, at("2025-03-28T12:00:00Z"), 4)).toEqual([
        "2025-03-29T01:30:00.000Z", // 02:30 CET
        "2025-03-30T01:00:00.000Z", // 03:00 CEST: the first time after the gap
        "2025-03-31T00:30:00.000Z", // 02:30 CEST
        "2025-04-01T00:30:00.000Z",
      ]);
    });

    it("Europe/Berlin fall back: a daily 02:30 runs once, at the first 02:30", () => {
      expect(ticks(berlin, 0, at("2025-10-25T12:00:00Z"), 3)).toEqual([
        "2025-10-26T00:30:00.000Z", // 02:30 CEST; not again at 02:30 CET (01:30Z)
        "2025-10-27T01:30:00.000Z", // 02:30 CET
        "2025-10-28T01:30:00.000Z",
      ]);
    });

    it("Europe/Berlin: an hourly job keeps to real hours (the skipped hour skipped, the repeated one run twice)", () => {
      const hourly = def({ cron: "30 * * * *", timeZone: "Europe/Berlin" });
      expect(ticks(hourly, 0, at("2025-03-30T00:00:00Z"), 3)).toEqual([
        "2025-03-30T00:30:00.000Z", // 01:30 CET
        "2025-03-30T01:30:00.000Z", // 03:30 CEST (02:30 does not exist)
        "2025-03-30T02:30:00.000Z",
      ]);
      expect(ticks(hourly, 0, at("2025-10-26T00:00:00Z"), 3)).toEqual([
        "2025-10-26T00:30:00.000Z", // 02:30 CEST
        "2025-10-26T01:30:00.000Z", // 02:30 CET
        "2025-10-26T02:30:00.000Z", // 03:30 CET
      ]);
    });

    // America/New_York: 2025-03-09 02:00 EST -> 03:00 EDT; 2025-11-02 02:00 EDT -> 01:00 EST.
    const newYork = def({ cron: "30 2 * * *", timeZone: "America/New_York" });

    it("America/New_York spring forward: a daily 02:30 runs at 03:00 EDT that day", () => {
      expect(ticks(newYork, 0, at("2025-03-08T12:00:00Z"), 3)).toEqual([
        "2025-03-09T07:00:00.000Z", // 03:00 EDT
        "2025-03-10T06:30:00.000Z", // 02:30 EDT
        "2025-03-11T06:30:00.000Z",
      ]);
    });

    it("America/New_York fall back: a daily 01:30 runs once, at the first 01:30", () => {
      const early = def({ cron: "30 1 * * *", timeZone: "America/New_York" });
      expect(ticks(early, 0, at("2025-11-01T12:00:00Z"), 2)).toEqual([
        "2025-11-02T05:30:00.000Z", // 01:30 EDT; not again at 01:30 EST (06:30Z)
        "2025-11-03T06:30:00.000Z", // 01:30 EST
      ]);
      expect(ticks(newYork, 0, at("2025-11-01T12:00:00Z"), 1)).toEqual(["2025-11-02T07:30:00.000Z"]);
    });
  });
});

describe("planTick: late and missed ticks", () => {
  const created = at("2025-01-01T00:00:00Z");
  const every10 = { ...def({ every: 10 }), createdMs: created };

  it("a tick on time or late by up to MISSED_AFTER_MS gets its task, and the schedule moves to the tick after it", () => {
    const tick = created + 10_000;
    for (const late of [0, 1, MISSED_AFTER_MS]) {
      expect(planTick({ ...every10, nextRunMs: tick }, tick + late)).toEqual({
        tickMs: tick,
        missed: false,
        create: true,
        nextMs: tick + 10_000,
      });
    }
  });

  it("ticks later than that are missed: one task for them all, then the first tick not missed", () => {
    const tick = created + 10_000;
    const now = created + 77_000; // down from just before the tick at 10 s until 77 s
    expect(planTick({ ...every10, nextRunMs: tick }, now)).toEqual({
      tickMs: tick,
      missed: true,
      create: true,
      nextMs: created + 80_000, // the first tick at or after now - 5 s (72 s): 10 s to 70 s are missed
    });
    expect(planTick({ ...every10, nextRunMs: tick }, tick + MISSED_AFTER_MS + 1).nextMs).toBe(tick + 10_000);
  });

  it("with skipMissed, missed ticks create no task", () => {
    const plan = planTick({ ...every10, skipMissed: true, nextRunMs: created + 10_000 }, created + 100_000);
    expect(plan.missed).toBe(true);
    expect(plan.create).toBe(false);
    expect(plan.nextMs).toBe(created + 100_000);
    // On time, skipMissed changes nothing.
    expect(planTick({ ...every10, skipMissed: true, nextRunMs: created + 10_000 }, created + 10_000).create).toBe(true);
  });
});

describe("checks", () => {
  function refusal(spec: Partial<ScheduleSpec>): string {
    try {
      def(spec);
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidArgumentError);
      return (err as InvalidArgumentError).field;
    }
    throw new Error("no refusal");
  }

  it("refuses each kind of bad definition, naming the field", () => {
    expect(refusal({})).toBe("cron");
    expect(refusal({ cron: "* * * * *", every: 5 })).toBe("every");
    expect(refusal({ every: 0.999 })).toBe("every");
    expect(refusal({ every: Number.NaN })).toBe("every");
    expect(refusal({ every: 400 * 86_400 })).toBe("every");
    expect(refusal({ cron: "not a cron" })).toBe("cron");
    expect(refusal({ cron: "* * * *" })).toBe("cron");
    expect(refusal({ cron: "0 0 0 1 1 * 2030" })).toBe("cron");
    expect(refusal({ cron: "0 0 31 2 *" })).toBe("cron");
    // From the library, any value: a cron that is no string, or a time zone that is none.
    expect(refusal({ cron: 123 as unknown as string })).toBe("cron");
    expect(refusal({ cron: ["* * * * *"] as unknown as string })).toBe("cron");
    expect(refusal({ cron: "* * * * *", timeZone: 5 as unknown as string })).toBe("time_zone");
    expect(refusal({ cron: "0 * * * *", timeZone: "Nowhere/City" })).toBe("time_zone");
    expect(refusal({ cron: "0 * * * *", timeZone: "-05:00" })).toBe("time_zone");
    expect(refusal({ every: 5, timeZone: "UTC" })).toBe("time_zone");
    expect(refusal({ every: 5, startAt: 2000, endAt: 1000 })).toBe("end_at");
    expect(refusal({ every: 5, startAt: Number.POSITIVE_INFINITY })).toBe("start_at");
    expect(refusal({ every: 5, options: { delay: 1 } })).toBe("options.delay");
    expect(refusal({ every: 5, options: { idempotencyKey: "k" } })).toBe("options.idempotency_key");
    expect(refusal({ every: 5, handler: "x" })).toBe("handler");
    expect(refusal({ every: 5, id: "a/b" })).toBe("schedule_id");
  });

  it("keeps what it accepts: the cron text tidied, the time zone as given, every in ms", () => {
    const d = def({ cron: "  0   9 * * 1-5 ", timeZone: "Asia/Kolkata" });
    expect(d.cron).toBe("0 9 * * 1-5");
    expect(d.timeZone).toBe("Asia/Kolkata");
    expect(def({ every: 1.5 }).everyMs).toBe(1500);
    expect(def({ every: 1 }).timeZone).toBe("UTC");
  });

  it("takes ids of 1 to 128 letters, digits, '_', '-', '.' and ':'", () => {
    expect(checkScheduleId("nightly.report:eu-1_a")).toBe("nightly.report:eu-1_a");
    expect(checkScheduleId("x".repeat(128))).toHaveLength(128);
    for (const bad of ["", "x".repeat(129), "a b", "é", "a/b", 5]) {
      expect(() => checkScheduleId(bad)).toThrow(InvalidArgumentError);
    }
  });
});
