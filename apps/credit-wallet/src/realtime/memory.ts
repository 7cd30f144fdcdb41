import { burnsAt } from "../domain/burn-order.js";
import { planDebit, sumSlices } from "../domain/debit.js";
import type { BurnGrant, Slice } from "../domain/types.js";
import type { DebitRequest, DebitResult, RealtimeStore, WalletRef, WalletSnapshot } from "./types.js";

interface State {
  gen: string;
  grants: Map<string, BurnGrant>;
  odUsed: bigint;
  odLimit: bigint;
  unc: boolean;
}

/**
 * The in-process real-time store (embedded mode, no REDIS_URL). Every method runs to completion
 * without awaiting, so in one Node process it is as atomic as the Redis Lua scripts.
 */
export function createMemoryRealtime(): RealtimeStore {
  const states = new Map<string, State>();
  const key = (w: WalletRef) => `${w.tenant}:${w.walletId}`;

  /** What the grants that can burn at nowMs (effective, not past expires_at or an allowance's period end; any scope) have left, minus the overdraft in use. */
  function available(st: State, nowMs: number): bigint {
    let s = 0n;
    for (const g of st.grants.values()) if (burnsAt(g, nowMs)) s += g.availableNanos;
    return s - st.odUsed;
  }

  /** One debit, decided and applied without awaiting (atomic in one process). */
  function debitNow(w: WalletRef, req: DebitRequest): DebitResult {
    const st = states.get(key(w));
    if (!st) return { kind: "no_state" };
    const room = st.odLimit - st.odUsed;
    const plan = planDebit([...st.grants.values()], req.amountNanos, req.ctx, { overdraftRoomNanos: room > 0n ? room : 0n, uncoveredAllowed: st.unc }, req.mode);
    if (!plan.ok) {
      return { kind: "insufficient", gen: st.gen, slices: [], overdraftNanos: 0n, uncoveredNanos: 0n, shortfallNanos: plan.shortfallNanos, availableAfterNanos: available(st, req.ctx.nowMs) };
    }
    for (const s of plan.slices) {
      const g = st.grants.get(s.grantId)!;
      st.grants.set(s.grantId, { ...g, availableNanos: g.availableNanos - s.amountNanos });
    }
    st.odUsed += plan.overdraftNanos;
    return { kind: "ok", gen: st.gen, slices: plan.slices, overdraftNanos: plan.overdraftNanos, uncoveredNanos: plan.uncoveredNanos, shortfallNanos: plan.shortfallNanos, availableAfterNanos: available(st, req.ctx.nowMs) };
  }

  return {
    kind: "memory",
    async debit(w: WalletRef, req: DebitRequest): Promise<DebitResult> {
      return debitNow(w, req);
    },
    async debitMany(w: WalletRef, reqs: DebitRequest[]): Promise<DebitResult[]> {
      if (!states.has(key(w))) return [{ kind: "no_state" }];
      return reqs.map((r) => debitNow(w, r));
    },
    async credit(w: WalletRef, gen: string, slices: Slice[], overdraftNanos: bigint) {
      const st = states.get(key(w));
      if (!st || st.gen !== gen || slices.some((s) => !st.grants.has(s.grantId))) {
        states.delete(key(w));
        return "stale";
      }
      for (const s of slices) {
        const g = st.grants.get(s.grantId)!;
        st.grants.set(s.grantId, { ...g, availableNanos: g.availableNanos + s.amountNanos });
      }
      st.odUsed -= overdraftNanos;
      if (st.odUsed < 0n) st.odUsed = 0n; // never below 0 (as the Redis script)
      return "ok";
    },
    async load(w: WalletRef, snap: WalletSnapshot, gen: string) {
      const existing = states.get(key(w));
      if (existing) return existing.gen;
      states.set(key(w), {
        gen,
        grants: new Map(snap.grants.map((g) => [g.id, { ...g }])),
        odUsed: snap.overdraftUsedNanos,
        odLimit: snap.overdraftLimitNanos,
        unc: snap.uncoveredAllowed,
      });
      return gen;
    },
    async invalidate(w: WalletRef) {
      states.delete(key(w));
    },
    async invalidateAll() {
      const n = states.size;
      states.clear();
      return n;
    },
    async gen(w: WalletRef) {
      return states.get(key(w))?.gen ?? null;
    },
    async read(w: WalletRef) {
      const st = states.get(key(w));
      if (!st) return null;
      return { gen: st.gen, availableByGrant: new Map([...st.grants.values()].map((g) => [g.id, g.availableNanos])), overdraftUsedNanos: st.odUsed };
    },
    async close() {
      states.clear();
    },
  };
}

export { sumSlices };
