import { describe, expect, it } from "vitest";
import { createKeyedGate } from "./keyed-gate.js";

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
});
