import { describe, expect, it } from "vitest";
import { createCoalescer } from "./coalescer.js";

const tick = () => new Promise((r) => setTimeout(r, 0));

/** A batch function whose batches finish when the test says so; records what ran and how many at once. */
function controlled() {
  const batches: string[][] = [];
  const open: Array<() => void> = [];
  let running = 0;
  let maxRunning = 0;
  const run = async (_tenant: string, items: string[]) => {
    batches.push(items);
    running++;
    maxRunning = Math.max(maxRunning, running);
    await new Promise<void>((r) => open.push(r));
    running--;
    return items.map((x) => `${x}!`);
  };
  return {
    run,
    batches,
    get maxRunning() {
      return maxRunning;
    },
    /** Lets the oldest running batch finish. */
    async finishOne() {
      open.shift()?.();
      await tick();
    },
    async finishAll() {
      while (open.length > 0) await this.finishOne();
    },
  };
}

describe("coalescer", () => {
  it("runs one batch at a time by default: what queues meanwhile forms the next batch", async () => {
    const c = controlled();
    const q = createCoalescer(c.run, 100);
    const ps = ["a", "b", "c", "d"].map((x) => q.submit("t", x));
    await tick();
    expect(c.batches).toEqual([["a"]]);
    await c.finishOne();
    expect(c.batches).toEqual([["a"], ["b", "c", "d"]]);
    await c.finishAll();
    expect(await Promise.all(ps)).toEqual(["a!", "b!", "c!", "d!"]);
    expect(c.maxRunning).toBe(1);
  });

  it("pipelines up to inFlightMax batches per tenant, and tenants do not share batches", async () => {
    const c = controlled();
    const q = createCoalescer(c.run, 100, { inFlightMax: 2 });
    const ps = ["a", "b", "c", "d", "e"].map((x) => q.submit("t", x));
    const other = q.submit("u", "z");
    await tick();
    // "a" started alone, "b" started beside it (second slot); c, d, e wait for a free slot.
    expect(c.batches).toEqual([["a"], ["b"], ["z"]]);
    await c.finishOne();
    expect(c.batches.slice(3)).toEqual([["c", "d", "e"]]);
    await c.finishAll();
    expect(await Promise.all([...ps, other])).toEqual(["a!", "b!", "c!", "d!", "e!", "z!"]);
    expect(c.maxRunning).toBe(3); // two for t, one for u
  });

  it("never has two batches with one key in flight: an item whose key is running waits, in order; one batch may hold a key many times", async () => {
    const c = controlled();
    const q = createCoalescer(c.run, 100, { inFlightMax: 3, keyOf: (x: string) => x.split(":")[0]! });
    const ps = ["k:1", "k:2", "j:1", "k:3", "j:2", "i:1"].map((x) => q.submit("t", x));
    await tick();
    // Each submit starts a batch while a slot is free, unless its key is running: k:2 and k:3 wait
    // for k:1, j:2 for j:1.
    expect(c.batches).toEqual([["k:1"], ["j:1"], ["i:1"]]);
    await c.finishOne(); // k:1 done: k:2 and k:3 run together (j:2 still waits for j:1)
    expect(c.batches.slice(3)).toEqual([["k:2", "k:3"]]);
    await c.finishOne(); // j:1 done: j:2 runs
    expect(c.batches.slice(4)).toEqual([["j:2"]]);
    await c.finishAll();
    expect(await Promise.all(ps)).toEqual(["k:1!", "k:2!", "j:1!", "k:3!", "j:2!", "i:1!"]);
    expect(c.batches.length).toBe(5);
  });

  it("starts a batch beyond the first in flight only once extraBatchMin items wait", async () => {
    const c = controlled();
    const q = createCoalescer(c.run, 100, { inFlightMax: 2, extraBatchMin: 3 });
    const ps = ["a", "b", "c"].map((x) => q.submit("t", x));
    await tick();
    expect(c.batches).toEqual([["a"]]); // b, c: too few for a second batch
    ps.push(q.submit("t", "d"));
    await tick();
    expect(c.batches).toEqual([["a"], ["b", "c", "d"]]);
    await c.finishAll();
    expect(await Promise.all(ps)).toEqual(["a!", "b!", "c!", "d!"]);
  });

  it("keeps batches at batchMax and rejects every item of a failed batch only", async () => {
    let n = 0;
    const q = createCoalescer(async (_t: string, items: number[]) => {
      n++;
      if (items.includes(3)) throw new Error("bad batch");
      expect(items.length).toBeLessThanOrEqual(2);
      return items.map((x) => x * 10);
    }, 2);
    const rs = await Promise.allSettled([1, 2, 3, 4, 5].map((x) => q.submit("t", x)));
    // Batches [1], [2, 3] (fails: both rejected), [4, 5].
    expect(rs.map((r) => (r.status === "fulfilled" ? r.value : "x"))).toEqual([10, "x", "x", 40, 50]);
    expect(n).toBe(3);
  });

  it("refuses a non-positive inFlightMax or batchMax", () => {
    expect(() => createCoalescer(async () => [], 1, { inFlightMax: 0 })).toThrow(/inFlightMax/);
    expect(() => createCoalescer(async () => [], 0)).toThrow(/batchMax/);
    expect(() => createCoalescer(async () => [], 1, { extraBatchMin: 0 })).toThrow(/extraBatchMin/);
  });
});
