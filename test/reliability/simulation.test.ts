import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@nanobill/service-kit";
import { startPlatform, type Platform } from "../../libs/platform/src/platform.js";
import { auditWhenSettled, formatFindings } from "../../libs/platform/src/auditor.js";
import { e2eBackends } from "../e2e/support.js";
import { auditTenant, runWorkload, seedFromEnv } from "./workload.js";

/**
 * A seeded random workload against the in-process platform (real PostgreSQL + Redis when
 * DATABASE_URL / REDIS_URL are set, else embedded PGlite), then the auditor. A failure prints the
 * seed: rerun with NANOBILL_SEED=<seed>.
 */
const backend = e2eBackends().at(-1)!;
const seed = seedFromEnv();
const TENANT = "tnt_sim";

describe(`simulation on ${backend.name} (seed ${seed})`, () => {
  let platform: Platform;
  const key = `nbk_sim_${randomBytes(16).toString("hex")}`;

  beforeAll(async () => {
    platform = await startPlatform({ ...backend.options(), apiKeys: [{ tenant: TENANT, scopes: ["admin"], key }], logger: silentLogger, consumerWaitMs: 100 });
  }, 60_000);
  afterAll(async () => {
    await platform?.close();
    await backend.cleanup();
  }, 30_000);

  it("keeps every nano accounted for after a random workload with duplicates, late events and holds", async () => {
    const c = platform.clients(key);
    const w = await runWorkload(c, {
      seed,
      runId: `s${seed.toString(36)}`,
      customers: 4,
      batches: 15,
      batchEventsMax: 40,
      holds: 12,
      now: new Date(),
    });
    expect(w.accepted, `seed ${seed}`).toBeGreaterThan(0);
    const findings = await auditWhenSettled([auditTenant(TENANT, c, w)], { timeoutMs: 20_000 });
    expect(findings, `seed ${seed} (rerun with NANOBILL_SEED=${seed}):\n${formatFindings(findings)}`).toEqual([]);
  }, 60_000);
});
