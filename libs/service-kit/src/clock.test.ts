import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { clockFromEnv, FILE_CLOCK_REREAD_MS, systemClock } from "./clock.js";

describe("clockFromEnv", () => {
  const dir = mkdtempSync(join(tmpdir(), "nb-clock-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("is the system clock without NANOBILL_TEST_CLOCK_FILE", () => {
    expect(clockFromEnv({})).toBe(systemClock);
  });

  it("adds the file's offset and follows it when the file changes", async () => {
    const file = join(dir, "offset");
    writeFileSync(file, String(3 * 86_400_000));
    const clock = clockFromEnv({ NANOBILL_TEST_CLOCK_FILE: file });
    const ahead = clock.now().getTime() - Date.now();
    expect(ahead).toBeGreaterThan(3 * 86_400_000 - 1_000);
    expect(ahead).toBeLessThan(3 * 86_400_000 + 1_000);
    writeFileSync(file, "0");
    await new Promise((r) => setTimeout(r, FILE_CLOCK_REREAD_MS * 3));
    expect(Math.abs(clock.now().getTime() - Date.now())).toBeLessThan(1_000);
  });

  it("refuses a malformed offset, naming the variable; a missing file is offset 0", () => {
    const bad = join(dir, "bad");
    writeFileSync(bad, "tomorrow");
    expect(() => clockFromEnv({ NANOBILL_TEST_CLOCK_FILE: bad })).toThrow(/NANOBILL_TEST_CLOCK_FILE/);
    const clock = clockFromEnv({ NANOBILL_TEST_CLOCK_FILE: join(dir, "absent") });
    expect(Math.abs(clock.now().getTime() - Date.now())).toBeLessThan(1_000);
  });
});
