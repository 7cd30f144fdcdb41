import { describe, expect, it } from "vitest";
import { createKeyedGate, GateWaitTimeout } from "./keyed-gate.js";

const tick = () => new Promise((r) => setTimeout(r, 5));

describe("keyed gate", () => {
  it("runs a call sharing a key after the call in flight, and calls with disjoint keys at once", async () => {
    const gate = createKeyedGate();
    const log: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const first = gate.run(["t\u0000a", "t\u0000b"], async () => {
      log.push("first start");
      await held;
      log.push("first end");
      return 1;
    });
    const retry = gate.run(["t\u0000b"], async () => (log.push("retry"), 2));
    const other = gate.run(["t\u0000c"], async () => (log.push("other"), 3));
    await tick();
    expect(log).toEqual(["first start", "other"]);
    release();
    expect(await Promise.all([first, retry, other])).toEqual([1, 2, 3]);
    expect(log).toEqual(["first start", "other", "first end", "retry"]);
    expect(gate.size()).toBe(0);
  });

  it("frees the keys of a call that throws, and a repeated key in one call is held once", async () => {
    const gate = createKeyedGate();
    await expect(gate.run(["k", "k"], async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(gate.size()).toBe(0);
    expect(await gate.run(["k"], async () => "after")).toBe("after");
  });

  it("lets one waiter at a time take a key freed by the call in flight", async () => {
    const gate = createKeyedGate();
    let inside = 0;
    let most = 0;
    const call = () =>
      gate.run(["k"], async () => {
        inside++;
        most = Math.max(most, inside);
        await tick();
        inside--;
      });
    await Promise.all([call(), call(), call(), call()]);
    expect(most).toBe(1);
  });

  it("is FIFO per key: a later call cannot take a key a waiter on several keys is queued for", async () => {
    // (Before, the waiter on [A, B] looped until both were free at once: each time A was freed a
    // later single-key call on A took it first, so it could starve.)
    const gate = createKeyedGate();
    const log: string[] = [];
    let freeA!: () => void;
    let freeB!: () => void;
    const a = gate.run(["A"], () => new Promise<void>((r) => (freeA = r)));
    const b = gate.run(["B"], () => new Promise<void>((r) => (freeB = r)));
    const both = gate.run(["A", "B"], async () => void log.push("both"));
    const laterA = gate.run(["A"], async () => void log.push("later A"));
    expect(gate.busy("A") && gate.busy("B") && !gate.busy("C")).toBe(true);
    freeA();
    await tick();
    expect(log).toEqual([]); // A is free, but the waiter on [A, B] is ahead of "later A"
    freeB();
    await Promise.all([a, b, both, laterA]);
    expect(log).toEqual(["both", "later A"]);
    expect(gate.size()).toBe(0);
  });

  it("bounds a wait: past waitMs the call runs nothing, leaves its queues and rejects, and the calls behind it go on", async () => {
    const gate = createKeyedGate();
    let freeA!: () => void;
    const a = gate.run(["A"], () => new Promise<void>((r) => (freeA = r)));
    let ran = false;
    const late = gate.run(["A", "B"], async () => void (ran = true), 20);
    const onB = gate.run(["B"], async () => "B after the late call left"); // queued behind it on B
    await expect(late).rejects.toBeInstanceOf(GateWaitTimeout);
    expect(await onB).toBe("B after the late call left");
    expect(ran).toBe(false);
    expect([gate.busy("A"), gate.busy("B")]).toEqual([true, false]);
    freeA();
    await a;
    expect(gate.size()).toBe(0);
  });
});

