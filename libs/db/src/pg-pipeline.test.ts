import { createRequire } from "node:module";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { prepareValue } from "./pg-pipeline.js";

const pgUtils = createRequire(import.meta.url)("pg/lib/utils.js") as { prepareValue: (v: unknown) => unknown };

describe("prepareValue (pg parameters)", () => {
  it("encodes arrays of strings and nulls exactly as pg's prepareValue does", () => {
    const element = fc.oneof(fc.string({ unit: "binary", maxLength: 12 }), fc.constantFrom('"', "\\", "NULL", ",", "{}", ""), fc.constant(null));
    fc.assert(
      fc.property(fc.array(element, { maxLength: 30 }), (a) => {
        expect(prepareValue(a)).toBe(pgUtils.prepareValue(a));
      }),
      { numRuns: 3_000 },
    );
  });

  it("leaves every other value to pg (numbers, bigints, nested arrays, buffers, dates, mixed arrays)", () => {
    const values: unknown[] = [1, 2n, "s", null, true, [1, 2], ["a", 1n], [["a"], ["b"]], [Buffer.from("x")], new Date(0), { a: 1 }, [new Date(0)], [undefined, "u"]];
    for (const v of values) expect(prepareValue(v)).toEqual(pgUtils.prepareValue(v));
  });
});
