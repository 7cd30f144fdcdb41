/** The draft loop's variables (INVOICING_DRAFT_LOOP_MS / _BATCH): defaults and both edges of each bound. */
import { describe, expect, it } from "vitest";
import { loadConfig } from "./config.js";
import { DRAFT_LOOP_BATCH_MAX, DRAFT_LOOP_MS_DEFAULT, DRAFT_LOOP_MS_MAX } from "./limits.js";

const base = { NANOBILL_API_KEYS: "*:internal:k", NANOBILL_INTERNAL_API_KEY: "k" };

describe("draft loop configuration", () => {
  it("defaults to a pass every minute of at most 100 drafts", () => {
    const c = loadConfig(base).invoicing;
    expect([c.draftLoopMs, c.draftLoopBatch]).toEqual([DRAFT_LOOP_MS_DEFAULT, 100]);
  });

  it("accepts 0 (off) and the largest interval and batch, and refuses one past each, naming the variable", () => {
    expect(loadConfig({ ...base, INVOICING_DRAFT_LOOP_MS: "0" }).invoicing.draftLoopMs).toBe(0);
    expect(loadConfig({ ...base, INVOICING_DRAFT_LOOP_MS: String(DRAFT_LOOP_MS_MAX) }).invoicing.draftLoopMs).toBe(DRAFT_LOOP_MS_MAX);
    expect(() => loadConfig({ ...base, INVOICING_DRAFT_LOOP_MS: String(DRAFT_LOOP_MS_MAX + 1) })).toThrow(/INVOICING_DRAFT_LOOP_MS/);
    expect(() => loadConfig({ ...base, INVOICING_DRAFT_LOOP_MS: "-1" })).toThrow(/INVOICING_DRAFT_LOOP_MS/);
    expect(loadConfig({ ...base, INVOICING_DRAFT_LOOP_BATCH: String(DRAFT_LOOP_BATCH_MAX) }).invoicing.draftLoopBatch).toBe(DRAFT_LOOP_BATCH_MAX);
    expect(() => loadConfig({ ...base, INVOICING_DRAFT_LOOP_BATCH: String(DRAFT_LOOP_BATCH_MAX + 1) })).toThrow(/INVOICING_DRAFT_LOOP_BATCH/);
    expect(() => loadConfig({ ...base, INVOICING_DRAFT_LOOP_BATCH: "0" })).toThrow(/INVOICING_DRAFT_LOOP_BATCH/);
  });
});
