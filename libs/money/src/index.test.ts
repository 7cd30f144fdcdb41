import { describe, expect, it } from "vitest";
import * as money from "./index.js";
import { type Nanos, toNanos } from "./index.js";

describe("@nanobill/money exports", () => {
  it("exports exactly the documented runtime API (docs/platform-apis.md)", () => {
    expect(Object.keys(money).sort()).toEqual([
      "AMOUNT_NANOS_MAX", "CarryAccumulator", "INT64_MAX", "INT64_MIN", "MoneyError", "NANOS_PER_UNIT", "Rate",
      "addNanos", "allocate", "amountNanos", "currency", "divCeil", "divFloor", "divHalfEven", "divRound",
      "formatNanos", "isUnitCode", "mulNanos", "parseDecimalNanos", "roundToMinor", "toNanos",
    ]);
  });

  it("brands Nanos so that a plain bigint is not a Nanos (checked by tsc) while a Nanos is a bigint", () => {
    // @ts-expect-error a plain bigint has not been checked: only @nanobill/money constructs Nanos
    const unchecked: Nanos = 5n;
    const checked: Nanos = toNanos(5n, "amount_nanos");
    const asBigint: bigint = checked;
    expect(asBigint).toBe(unchecked);
  });
});
