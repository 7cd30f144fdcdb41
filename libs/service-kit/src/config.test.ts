import { describe, expect, it } from "vitest";
import { ConfigError, envBool, envEnum, envFraction, envInt, envRetired, envString, envUrl } from "./config.js";
import { fixedClock } from "./clock.js";
import { createLogger } from "./logger.js";
import { resolveLimits } from "./server.js";

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe("env helpers", () => {
  it("read values, use defaults, and name the variable in every error", () => {
    const env = { PORT: "7001", BAD_PORT: "70x1", BIG: "99999", URL: "postgres://u@h:5432/db", NOT_URL: "::", B: "yes", BB: "maybe", E: "debug" };
    expect(envInt(env, "PORT", 1, { min: 0, max: 65535 })).toBe(7001);
    expect(envInt(env, "MISSING", 5)).toBe(5);
    expect(errorOf(() => envInt(env, "BAD_PORT", 1)).message).toBe('BAD_PORT: must be an integer, got "70x1"');
    expect(errorOf(() => envInt(env, "BIG", 1, { min: 0, max: 65535 })).message).toBe("BIG: must be between 0 and 65535, got 99999");
    expect(envString(env, "URL")).toBe("postgres://u@h:5432/db");
    expect(errorOf(() => envString(env, "NANOBILL_API_KEYS")).variable).toBe("NANOBILL_API_KEYS");
    expect(envUrl(env, "URL")).toBe("postgres://u@h:5432/db");
    expect(envUrl(env, "NO_URL")).toBeUndefined();
    expect(errorOf(() => envUrl(env, "NOT_URL")).message).toContain("NOT_URL: must be a URL");
    // Never the value: a password with an unencoded '#' makes the URL malformed (review finding: it was logged).
    const leaky = errorOf(() => envUrl({ DATABASE_URL: "postgres://svc:Sup3r#Secret@pg:5432/db" }, "DATABASE_URL")).message;
    expect(leaky).not.toContain("Sup3r");
    expect(leaky).toContain("DATABASE_URL: must be a URL");
    expect(envBool(env, "B", false)).toBe(true);
    expect(errorOf(() => envBool(env, "BB", false)).message).toContain("BB:");
    expect(envEnum(env, "E", ["debug", "info"] as const, "info")).toBe("debug");
  });

  it("reads a fraction in [0, 1] written as a decimal, and refuses anything else naming the variable", () => {
    for (const [v, want] of [["0", 0], ["1", 1], ["0.25", 0.25], [".5", 0.5], ["1.000", 1], [" 0.1 ", 0.1]] as const) expect(envFraction({ R: v }, "R", 1)).toBe(want);
    expect(envFraction({}, "R", 0.5)).toBe(0.5);
    for (const bad of ["1.01", "2", "-0", "-0.5", "1e-1", "0x1", "NaN", "Infinity", "50%", "0.1234567890"]) {
      expect(errorOf(() => envFraction({ R: bad }, "R", 1)).message).toBe(`R: must be a decimal between 0 and 1, got "${bad}"`);
    }
  });

  it("refuses a retired variable that is still set, naming it and its replacement", () => {
    const retired = { OLD_KEY: "NEW_KEY" };
    expect(() => envRetired({ NEW_KEY: "k", OLD_KEY: " " }, retired)).not.toThrow();
    const e = errorOf(() => envRetired({ OLD_KEY: "k" }, retired));
    expect(e.variable).toBe("OLD_KEY");
    expect(e.message).toBe("OLD_KEY: is no longer read: set NEW_KEY instead");
  });
});

it("refuses out-of-range server limits naming the limit", () => {
  expect(() => resolveLimits({ readMaxBytes: 0 })).toThrow(/limits.readMaxBytes/);
  expect(() => resolveLimits({ timeoutMsDefault: 120_000, timeoutMsMax: 60_000 })).toThrow(/limits.timeoutMsDefault/);
  expect(resolveLimits({ readMaxBytes: 1024 }).readMaxBytes).toBe(1024);
});

it("logs JSON lines with bigint as a string, child fields, and level filtering", () => {
  const lines: string[] = [];
  const clock = fixedClock(new Date("2026-01-01T00:00:00Z"));
  const log = createLogger({ service: "ledger", level: "info", sink: (l) => lines.push(l), clock }).child({ tenant: "tnt_a" });
  log.debug("hidden");
  log.info("posted", { amountNanos: 9_223_372_036_854_775_807n });
  log.error("failed", { err: new Error("boom") });
  expect(lines).toHaveLength(2);
  expect(JSON.parse(lines[0]!)).toEqual({
    ts: "2026-01-01T00:00:00.000Z",
    level: "info",
    service: "ledger",
    msg: "posted",
    tenant: "tnt_a",
    amountNanos: "9223372036854775807",
  });
  expect(JSON.parse(lines[1]!).err.stack).toContain("boom");
});

it("runs shutdown hooks last-registered first, and keeps going when one fails", async () => {
  const { onShutdown, runShutdownHooks } = await import("./lifecycle.js");
  const order: string[] = [];
  onShutdown(async () => void order.push("db"));
  onShutdown(async () => {
    order.push("broken");
    throw new Error("hook failed");
  });
  onShutdown(async () => void order.push("server"));
  const lines: string[] = [];
  await runShutdownHooks(createLogger({ service: "t", sink: (l) => lines.push(l) }));
  expect(order).toEqual(["server", "broken", "db"]);
  expect(lines.some((l) => l.includes("shutdown hook failed"))).toBe(true);
});
