// The lease manager against a scripted lease store (no database): it stops its loops when it has
// not renewed for a whole TTL (the database unreachable), and takes its share again afterwards.
import { silentLogger } from "@nanobill/service-kit";
import { describe, expect, it } from "vitest";
import type { RatingConsumer } from "./consumer.js";
import { PartitionLeaseManager } from "./partition-leases.js";
import type { HeldLease, LeaseStore } from "./store/lease-store.js";

class ScriptedLeases {
  down = false;
  epoch = 0n;
  readonly free = new Set([0, 1, 2, 3]);
  readonly held = new Map<string, HeldLease>();
  #check(): void {
    if (this.down) throw new Error("database unreachable");
  }
  async ensure(): Promise<void> {}
  async heartbeat(owner: string): Promise<string[]> {
    this.#check();
    return [owner];
  }
  async renew(_owner: string, held: HeldLease[]): Promise<Set<string>> {
    this.#check();
    return new Set(held.filter((h) => this.held.get(h.name)?.epoch === h.epoch).map((h) => h.name));
  }
  async acquire(_owner: string, p: number, count: number): Promise<HeldLease[]> {
    this.#check();
    const out: HeldLease[] = [];
    for (const k of [...this.free].sort().slice(0, count)) {
      this.free.delete(k);
      const lease = { name: `metering:p${k}/${p}`, partition: k, epoch: ++this.epoch };
      this.held.set(lease.name, lease);
      out.push(lease);
    }
    return out;
  }
  async release(_owner: string, lease: HeldLease): Promise<boolean> {
    if (this.held.get(lease.name)?.epoch !== lease.epoch) return false;
    this.held.delete(lease.name);
    this.free.add(lease.partition);
    return true;
  }
  async leave(): Promise<void> {}
}

function fakeConsumer(log: string[], partition: number): RatingConsumer {
  let running = false;
  return {
    get running() {
      return running;
    },
    start() {
      running = true;
      log.push(`start ${partition}`);
    },
    async stop() {
      running = false;
      log.push(`stop ${partition}`);
    },
  } as unknown as RatingConsumer;
}

describe("PartitionLeaseManager", () => {
  it("stops its loops after a TTL without a renewal, and takes its share again when the database is back", async () => {
    const store = new ScriptedLeases();
    const log: string[] = [];
    const m = new PartitionLeaseManager(store as unknown as LeaseStore, { partitionCount: 4, owner: "me", ttlMs: 300, heartbeatMs: 30 }, (k) => fakeConsumer(log, k), silentLogger);
    await m.start();
    expect(m.held()).toEqual([0, 1, 2, 3]);
    store.down = true;
    await new Promise((r) => setTimeout(r, 150));
    expect(m.held()).toEqual([0, 1, 2, 3]); // within the TTL: still writing (the fence guards it)
    const until = Date.now() + 3_000;
    while (m.held().length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect(m.held()).toEqual([]);
    expect(log.filter((l) => l.startsWith("stop")).sort()).toEqual(["stop 0", "stop 1", "stop 2", "stop 3"]);
    // Back: its old leases renew no more (another process may hold them); here they expired and are
    // free again in the script, so it takes them with new epochs.
    for (const [name, l] of store.held) {
      store.held.delete(name);
      store.free.add(l.partition);
    }
    store.down = false;
    while (m.held().length < 4 && Date.now() < until + 3_000) await new Promise((r) => setTimeout(r, 20));
    expect(m.held()).toEqual([0, 1, 2, 3]);
    expect([...store.held.values()].every((l) => l.epoch > 4n)).toBe(true);
    await m.stop();
    expect(store.held.size).toBe(0); // a graceful stop frees every lease
  });
});
