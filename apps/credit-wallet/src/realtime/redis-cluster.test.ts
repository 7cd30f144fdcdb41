// The wallet's real-time store on a real Redis Cluster (three local nodes): a wallet's keys share
// one slot (its scripts stay atomic), wallets spread over every node, invalidateAll reaches every
// node and only this deployment's prefix, and the service wires a cluster from its config
// (CREDIT_WALLET_REDIS_CLUSTER with REDIS_URL as the seed).
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { migrate, testBackends, type TestDb } from "@nanobill/db";
import { fixedClock, silentLogger } from "@nanobill/service-kit";
import { startRedisCluster, type RedisClusterFixture } from "../../../../test/support/redis-cluster.js";
import { createCreditWalletService, migrationsDir } from "../index.js";
import { clusterFromUrl, createRedisRealtime } from "./redis.js";
import type { WalletSnapshot } from "./types.js";

let cluster: RedisClusterFixture;
let nodes: Redis[];
beforeAll(async () => {
  cluster = await startRedisCluster();
  nodes = cluster.ports.map((port) => new Redis({ host: "127.0.0.1", port }));
});
afterAll(async () => {
  await Promise.all((nodes ?? []).map((n) => n.quit()));
  await cluster?.stop();
});

const snap = (availableNanos: bigint): WalletSnapshot => ({
  grants: [{ id: "G", kind: "purchased", priority: 1, effectiveAtMs: 0, expiresAtMs: null, createdAtMs: 1, availableNanos, scope: { chargeIds: [], models: [] } }],
  overdraftUsedNanos: 0n,
  overdraftLimitNanos: 0n,
  uncoveredAllowed: false,
});
const ctx = { nowMs: 1_000, chargeId: "chg", model: "m" };

/** Keys with `prefix` on each node. */
async function keysPerNode(prefix: string): Promise<string[][]> {
  return Promise.all(nodes.map((n) => n.keys(`${prefix}*`)));
}

it("keeps a wallet's keys in one slot, spreads wallets over every node, and invalidates them all (only its own prefix)", async () => {
  const prefix = `nbtest:${randomUUID()}:`;
  const other = `nbtest:${randomUUID()}:`;
  const rt = createRedisRealtime({ url: cluster.seedUrl, cluster: true, prefix });
  const neighbour = createRedisRealtime({ url: cluster.seedUrl, cluster: true, prefix: other });
  try {
    const wallets = Array.from({ length: 60 }, (_, i) => ({ tenant: "tnt_c", walletId: `wal_${i}` }));
    await Promise.all(wallets.map((w) => rt.load(w, snap(100n), "g1")));
    await neighbour.load(wallets[0]!, snap(5n), "g1");
    // A debit on every wallet: each script touches its wallet's four keys in one slot.
    const debits = await Promise.all(wallets.map((w) => rt.debit(w, { amountNanos: 30n, mode: "all", ctx })));
    expect(debits.map((d) => (d.kind === "ok" ? d.availableAfterNanos : d.kind))).toEqual(wallets.map(() => 70n));

    const perNode = await keysPerNode(prefix);
    expect(perNode.every((ks) => ks.length > 0), "every node holds some wallets").toBe(true);
    expect(perNode.flat()).toHaveLength(60 * 4); // s, a, m, o per wallet
    for (const ks of perNode) {
      const byWallet = new Map<string, Set<number>>();
      for (const k of ks) {
        const slot = Number(await nodes[0]!.cluster("KEYSLOT", k));
        const wallet = k.slice(0, k.lastIndexOf(":"));
        byWallet.set(wallet, (byWallet.get(wallet) ?? new Set()).add(slot));
      }
      for (const slots of byWallet.values()) expect(slots.size).toBe(1);
    }

    expect(await rt.invalidateAll()).toBe(60 * 4);
    expect((await keysPerNode(prefix)).flat()).toEqual([]);
    expect((await keysPerNode(other)).flat()).toHaveLength(4); // the neighbour's wallet is untouched
    expect((await rt.debit(wallets[0]!, { amountNanos: 1n, mode: "all", ctx })).kind).toBe("no_state");
  } finally {
    await neighbour.invalidateAll();
    await rt.close();
    await neighbour.close();
  }
});

it("refuses a database number or a non-redis scheme in a cluster seed URL, naming REDIS_URL", () => {
  expect(() => clusterFromUrl("redis://127.0.0.1:7000/3")).toThrow(/^REDIS_URL: a Redis Cluster has only database 0/);
  expect(() => clusterFromUrl("http://127.0.0.1:7000")).toThrow(/^REDIS_URL: a Redis Cluster seed must be redis:\/\/ or rediss:\/\//);
});

let db: TestDb;
it("runs the service on the cluster from its config (REDIS_URL a seed node, redisCluster on)", async () => {
  db = await testBackends()[0]!.open();
  await migrate(db, migrationsDir);
  const prefix = `nbtest:${randomUUID()}:`;
  const w = await createCreditWalletService({
    db,
    logger: silentLogger,
    clock: fixedClock(new Date("2026-11-29T00:00:00Z")),
    clients: { ledger: {} as never },
    config: { redisUrl: cluster.seedUrl, redisCluster: true, redisPrefix: prefix, backgroundIntervalMs: 0 },
  });
  try {
    await w.start();
    expect(w.realtime.kind).toBe("redis");
    const wallet = { tenant: "tnt_c", walletId: "wal_cfg" };
    await w.realtime.load(wallet, snap(10n), "g1");
    const d = await w.realtime.debit(wallet, { amountNanos: 4n, mode: "all", ctx });
    expect(d.kind === "ok" ? d.availableAfterNanos : d.kind).toBe(6n);
    await w.realtime.invalidateAll();
  } finally {
    await w.stop();
    await db.dispose();
  }
});
