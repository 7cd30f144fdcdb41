import { afterAll, describe, expect, it } from "vitest";
import { randomUUID } from "node:crypto";
import { createMemoryRealtime } from "./memory.js";
import { createRedisRealtime } from "./redis.js";
import type { RealtimeStore, WalletSnapshot } from "./types.js";
import type { BurnGrant } from "../domain/types.js";
import { startRedisCluster } from "../../../../test/support/redis-cluster.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const cluster = await startRedisCluster();
afterAll(() => cluster.stop());
const stores: Array<{ name: string; make: () => RealtimeStore }> = [
  { name: "memory", make: () => createMemoryRealtime() },
  { name: "redis", make: () => createRedisRealtime({ url: REDIS_URL, prefix: `nbtest:${randomUUID()}:` }) },
  { name: "redis cluster", make: () => createRedisRealtime({ url: cluster.seedUrl, cluster: true, prefix: `nbtest:${randomUUID()}:` }) },
];

function g(id: string, availableNanos: bigint, o: Partial<BurnGrant> = {}): BurnGrant {
  return { id, kind: "purchased", priority: 1, effectiveAtMs: 0, expiresAtMs: null, createdAtMs: 1, availableNanos, scope: { chargeIds: [], models: [] }, ...o };
}
const snap = (grants: BurnGrant[], o: Partial<WalletSnapshot> = {}): WalletSnapshot => ({ grants, overdraftUsedNanos: 0n, overdraftLimitNanos: 0n, uncoveredAllowed: false, ...o });
const ctx = { nowMs: 1_000, chargeId: "chg_1", model: "gpt-x" };

describe.each(stores)("real-time store ($name)", ({ make }) => {
  const rt = make();
  afterAll(async () => {
    await rt.invalidateAll();
    await rt.close();
  });
  let n = 0;
  const w = () => ({ tenant: "tnt_t", walletId: `wal_${++n}` });

  it("answers no_state for a wallet it does not know", async () => {
    expect((await rt.debit(w(), { amountNanos: 1n, mode: "all", ctx })).kind).toBe("no_state");
  });

  it("burns the issue's vector in order B, A, C across grants", async () => {
    const wal = w();
    await rt.load(wal, snap([g("A", 50n), g("B", 20n, { kind: "promotional" }), g("C", 100n, { priority: 2 })]), "gen1");
    const r = await rt.debit(wal, { amountNanos: 120n, mode: "all", ctx });
    expect(r.kind).toBe("ok");
    if (r.kind === "no_state") throw new Error("unreachable");
    expect(r.slices).toEqual([{ grantId: "B", amountNanos: 20n }, { grantId: "A", amountNanos: 50n }, { grantId: "C", amountNanos: 50n }]);
    expect(r.availableAfterNanos).toBe(50n);
    expect(r.gen).toBe("gen1");
  });

  it("counts only grants that can burn now in the available balance it reports (not future, not past expires_at)", async () => {
    const wal = w();
    await rt.load(wal, snap([g("A", 50n), g("F", 1_000n, { effectiveAtMs: 5_000 }), g("X", 10_000n, { expiresAtMs: 900 }), g("S", 7n, { scope: { chargeIds: ["other"], models: [] } })]), "g");
    const r = await rt.debit(wal, { amountNanos: 10n, mode: "all", ctx });
    if (r.kind !== "ok") throw new Error("expected ok");
    expect(r.availableAfterNanos).toBe(47n); // A 40 + S 7 (scope does not matter for the balance)
    const refused = await rt.debit(wal, { amountNanos: 100n, mode: "all", ctx });
    if (refused.kind !== "insufficient") throw new Error("expected insufficient");
    expect(refused.availableAfterNanos).toBe(47n);
    const later = await rt.debit(wal, { amountNanos: 1n, mode: "all", ctx: { ...ctx, nowMs: 6_000 } });
    if (later.kind !== "ok") throw new Error("expected ok");
    expect(later.availableAfterNanos).toBe(1_046n);
  });

  it("does not burn (nor count) an allowance past its period end, wherever it sorts", async () => {
    const wal = w();
    await rt.load(wal, snap([g("AL", 500n, { kind: "allowance", periodEndMs: 900, priority: 0 }), g("P", 100n)]), "g");
    const r = await rt.debit(wal, { amountNanos: 150n, mode: "partial", ctx });
    if (r.kind !== "ok") throw new Error("expected ok");
    expect([r.slices, r.shortfallNanos, r.availableAfterNanos]).toEqual([[{ grantId: "P", amountNanos: 100n }], 50n, 0n]);
    const before = await rt.debit(wal, { amountNanos: 10n, mode: "all", ctx: { ...ctx, nowMs: 800 } });
    if (before.kind !== "ok") throw new Error("expected ok");
    expect(before.slices).toEqual([{ grantId: "AL", amountNanos: 10n }]);
  });

  it("never keeps a negative overdraft counter when more is given back than is used", async () => {
    const wal = w();
    await rt.load(wal, snap([g("A", 0n)], { overdraftUsedNanos: 5n, overdraftLimitNanos: 100n }), "g");
    expect(await rt.credit(wal, "g", [], 1_000_000_000_007n)).toBe("ok");
    expect((await rt.read(wal))!.overdraftUsedNanos).toBe(0n);
    // The room is the whole limit again, and a debit works on the counter as usual.
    const r = await rt.debit(wal, { amountNanos: 100n, mode: "all", ctx });
    if (r.kind !== "ok") throw new Error("expected ok");
    expect([r.overdraftNanos, (await rt.read(wal))!.overdraftUsedNanos]).toEqual([100n, 100n]);
  });

  it("refuses a hold past the balance and changes nothing", async () => {
    const wal = w();
    await rt.load(wal, snap([g("A", 50n)]), "g");
    const r = await rt.debit(wal, { amountNanos: 51n, mode: "all", ctx });
    expect(r.kind).toBe("insufficient");
    expect((await rt.read(wal))!.availableByGrant.get("A")).toBe(50n);
  });

  it("burns partially and reports the shortfall", async () => {
    const wal = w();
    await rt.load(wal, snap([g("A", 50n)]), "g");
    const r = await rt.debit(wal, { amountNanos: 80n, mode: "partial", ctx });
    if (r.kind === "no_state") throw new Error("unreachable");
    expect([r.kind, r.shortfallNanos, r.slices.length]).toEqual(["ok", 30n, 1]);
  });

  it("uses the soft negative room and gives it back on credit", async () => {
    const wal = w();
    await rt.load(wal, snap([g("A", 50n)], { overdraftLimitNanos: 25n }), "g");
    const r = await rt.debit(wal, { amountNanos: 70n, mode: "all", ctx });
    if (r.kind === "no_state") throw new Error("unreachable");
    expect([r.kind, r.overdraftNanos, r.availableAfterNanos]).toEqual(["ok", 20n, -20n]);
    expect((await rt.debit(wal, { amountNanos: 6n, mode: "all", ctx })).kind).toBe("insufficient");
    expect(await rt.credit(wal, r.gen, r.slices, r.overdraftNanos)).toBe("ok");
    const s = (await rt.read(wal))!;
    expect([s.availableByGrant.get("A"), s.overdraftUsedNanos]).toEqual([50n, 0n]);
  });

  it("allows uncovered holds under postpaid overage", async () => {
    const wal = w();
    await rt.load(wal, snap([g("A", 5n)], { uncoveredAllowed: true }), "g");
    const r = await rt.debit(wal, { amountNanos: 8n, mode: "all", ctx });
    if (r.kind === "no_state") throw new Error("unreachable");
    expect([r.kind, r.uncoveredNanos]).toEqual(["ok", 3n]);
  });

  it("skips out-of-scope, future and expired grants", async () => {
    const wal = w();
    await rt.load(
      wal,
      snap([
        g("S", 10n, { priority: 0, scope: { chargeIds: ["chg_2"], models: [] } }),
        g("M", 10n, { priority: 0, scope: { chargeIds: [], models: ["gpt-x", "other"] } }),
        g("F", 10n, { priority: 0, effectiveAtMs: 2_000 }),
        g("E", 10n, { priority: 0, expiresAtMs: 1_000 }),
        g("Z", 10n, { priority: 9 }),
      ]),
      "g",
    );
    const r = await rt.debit(wal, { amountNanos: 15n, mode: "all", ctx });
    if (r.kind === "no_state") throw new Error("unreachable");
    expect(r.slices).toEqual([{ grantId: "M", amountNanos: 10n }, { grantId: "Z", amountNanos: 5n }]);
  });

  it("keeps amounts above 2^53 exact", async () => {
    const wal = w();
    const big = 999_999_999_999_999_999n;
    await rt.load(wal, snap([g("A", big), g("B", 123_456_789_012_345_678n, { priority: 2 })]), "g");
    const r = await rt.debit(wal, { amountNanos: big + 1n, mode: "all", ctx });
    if (r.kind === "no_state") throw new Error("unreachable");
    expect(r.slices).toEqual([{ grantId: "A", amountNanos: big }, { grantId: "B", amountNanos: 1n }]);
    expect(r.availableAfterNanos).toBe(123_456_789_012_345_677n);
  });

  it("does not replace a loaded state and drops it on a stale credit", async () => {
    const wal = w();
    expect(await rt.load(wal, snap([g("A", 50n)]), "first")).toBe("first");
    expect(await rt.load(wal, snap([g("A", 999n)]), "second")).toBe("first");
    expect(await rt.gen(wal)).toBe("first");
    const r = await rt.debit(wal, { amountNanos: 10n, mode: "all", ctx });
    if (r.kind === "no_state") throw new Error("unreachable");
    expect(await rt.credit(wal, "other-gen", r.slices, 0n)).toBe("stale");
    expect(await rt.read(wal)).toBeNull();
  });

  it("never overdraws under 500 concurrent holds: exactly the funded number succeed", async () => {
    const wal = w();
    await rt.load(wal, snap([g("A", 30n), g("B", 20n, { kind: "promotional" })]), "g");
    const rs = await Promise.all(Array.from({ length: 500 }, () => rt.debit(wal, { amountNanos: 1n, mode: "all", ctx })));
    expect(rs.filter((r) => r.kind === "ok").length).toBe(50);
    const s = (await rt.read(wal))!;
    expect([s.availableByGrant.get("A"), s.availableByGrant.get("B")]).toEqual([0n, 0n]);
  });

  it("debitMany decides a group's items in order in one step, as one debit each would", async () => {
    const wal = w();
    const twin = w();
    const grants = [g("A", 30n), g("B", 20n, { kind: "promotional" }), g("S", 50n, { priority: 0, scope: { chargeIds: ["chg_9"], models: [] } })];
    await rt.load(wal, snap(grants, { overdraftLimitNanos: 5n }), "g");
    await rt.load(twin, snap(grants, { overdraftLimitNanos: 5n }), "g");
    const reqs = [
      { amountNanos: 25n, mode: "all" as const, ctx },
      { amountNanos: 40n, mode: "all" as const, ctx },
      { amountNanos: 26n, mode: "all" as const, ctx },
      { amountNanos: 999_999_999_999_999_999n, mode: "all" as const, ctx },
      { amountNanos: 10n, mode: "partial" as const, ctx },
      { amountNanos: 7n, mode: "all" as const, ctx: { ...ctx, chargeId: "chg_9" } },
    ];
    const many = await rt.debitMany(wal, reqs);
    const one: unknown[] = [];
    for (const r of reqs) one.push(await rt.debit(twin, r));
    expect(many).toEqual(one);
    expect(many.map((r) => r.kind)).toEqual(["ok", "insufficient", "ok", "insufficient", "ok", "ok"]);
    expect(await rt.read(wal)).toEqual(await rt.read(twin));
    expect(await rt.debitMany(w(), reqs)).toEqual([{ kind: "no_state" }]);
    expect(await rt.debitMany(wal, [])).toEqual([]);
  });

  it("never overdraws under 50 concurrent debitMany calls of 20 holds: exactly the funded number succeed", async () => {
    const wal = w();
    await rt.load(wal, snap([g("A", 130n), g("B", 70n, { kind: "promotional" })]), "g");
    const rs = await Promise.all(Array.from({ length: 50 }, () => rt.debitMany(wal, Array.from({ length: 20 }, () => ({ amountNanos: 1n, mode: "all" as const, ctx })))));
    expect(rs.flat().filter((r) => r.kind === "ok").length).toBe(200);
    const s = (await rt.read(wal))!;
    expect([s.availableByGrant.get("A"), s.availableByGrant.get("B")]).toEqual([0n, 0n]);
  });

  it("invalidates one wallet and all wallets", async () => {
    const a = w();
    const b = w();
    await rt.load(a, snap([g("A", 1n)]), "g");
    await rt.load(b, snap([g("A", 1n)]), "g");
    await rt.invalidate(a);
    expect(await rt.read(a)).toBeNull();
    expect(await rt.invalidateAll()).toBeGreaterThan(0);
    expect(await rt.read(b)).toBeNull();
  });
});
