import { describe, expect, it } from "vitest";
import type { MeteredEvent } from "../domain/usage.js";
import { RecentEvents } from "./recent-events.js";

const ev = (sequence: bigint): MeteredEvent => ({ tenant: "t", sequence, customerId: "c", type: "x", timestampUs: 0n, properties: {} });
const block = (from: number, n: number) => Array.from({ length: n }, (_, i) => ev(BigInt(from + i)));
const seqs = (es: MeteredEvent[]) => es.map((e) => Number(e.sequence));

describe("RecentEvents (the aggregator's memory of its own commits)", () => {
  it("gives the consecutive run right after the cursor, across blocks, up to max, and stops at a gap", () => {
    const r = new RecentEvents(1_000);
    r.remember(block(1, 3), "e1");
    r.remember(block(4, 2), "e1");
    r.remember(block(8, 2), "e1"); // 6-7: another writer's or a rollback's gap
    expect(seqs(r.runAfter(0n, 100, "e1"))).toEqual([1, 2, 3, 4, 5]);
    expect(seqs(r.runAfter(2n, 2, "e1"))).toEqual([3, 4]);
    expect(seqs(r.runAfter(5n, 100, "e1"))).toEqual([]); // 6 is not remembered: all read
    expect(seqs(r.runAfter(7n, 100, "e1"))).toEqual([8, 9]);
  });

  it("keeps blocks in sequence order whatever order commits resolve in", () => {
    const r = new RecentEvents(1_000);
    r.remember(block(4, 2), "e1");
    r.remember(block(1, 3), "e1");
    expect(seqs(r.runAfter(0n, 100, "e1"))).toEqual([1, 2, 3, 4, 5]);
  });

  it("drops every block of another epoch (a restarted or failed-over database may have lost them)", () => {
    const r = new RecentEvents(1_000);
    r.remember(block(1, 3), "e1");
    r.remember(block(4, 2), "e2");
    expect(seqs(r.runAfter(3n, 100, "e2"))).toEqual([4, 5]);
    expect(r.size).toBe(2); // e1's block is gone
    expect(seqs(r.runAfter(0n, 100, "e2"))).toEqual([]);
    expect(seqs(r.runAfter(3n, 100, "e3"))).toEqual([]);
    expect(r.size).toBe(0);
  });

  it("forgets what the cursor passed, and holds at most its bound (oldest blocks first)", () => {
    const r = new RecentEvents(5);
    r.remember(block(1, 3), "e1");
    r.remember(block(4, 2), "e1");
    r.forgetThrough(3n);
    expect(r.size).toBe(2);
    r.remember(block(6, 4), "e1"); // 6 > 5: the oldest block goes
    expect(r.size).toBe(4);
    expect(seqs(r.runAfter(3n, 100, "e1"))).toEqual([]); // 4-5 evicted: read from the table
    expect(seqs(r.runAfter(5n, 100, "e1"))).toEqual([6, 7, 8, 9]);
  });

  it("walks many single-event blocks in one pass", () => {
    const r = new RecentEvents(100_000);
    for (let i = 1; i <= 20_000; i++) r.remember([ev(BigInt(i))], "e1");
    const run = r.runAfter(0n, 20_000, "e1");
    expect(run).toHaveLength(20_000);
    expect(run.every((e, i) => e.sequence === BigInt(i + 1))).toBe(true);
  });
});
