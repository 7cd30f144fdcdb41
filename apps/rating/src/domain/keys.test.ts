import { describe, expect, it } from "vitest";
import { carryKey, KEY_CACHE_MAX, periodKey, taskKey } from "./state.js";

describe("state keys", () => {
  it("are the parts joined by NUL, the same string for the same parts, distinct otherwise", () => {
    expect(carryKey("t", "c", "ch", "d", "p")).toBe("t\u0000c\u0000ch\u0000d\u0000p");
    expect(periodKey("t", "c", "ch", 1_700_000_000_000)).toBe("t\u0000c\u0000ch\u00001700000000000");
    expect(taskKey("t", "c", "task")).toBe("t\u0000c\u0000task");
    expect(carryKey("t", "c", "ch", "d", "p")).toBe(carryKey("t", "c", "ch", "d", "p"));
    expect(carryKey("t", "c", "ch", "d", "p")).not.toBe(carryKey("t", "c", "ch", "d", "c"));
    // parts are not confused across positions
    expect(periodKey("t", "c1", "x", 5)).not.toBe(periodKey("t", "c", "1x", 5));
  });

  it("stay correct past the cache bound (the cache starts over)", () => {
    for (let i = 0; i <= KEY_CACHE_MAX + 10; i++) carryKey("t", `c${i}`, "ch", "d", "p");
    expect(carryKey("t", "c7", "ch", "d", "p")).toBe("t\u0000c7\u0000ch\u0000d\u0000p");
    expect(carryKey("t", `c${KEY_CACHE_MAX}`, "ch", "d", "p")).toBe(`t\u0000c${KEY_CACHE_MAX}\u0000ch\u0000d\u0000p`);
  });
});
