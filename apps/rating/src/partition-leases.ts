import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Logger } from "@nanobill/service-kit";
import { partitionCursorName, type RatingConsumer } from "./consumer.js";
import { leaseShare, leasesToRelease } from "./domain/leases.js";
import type { HeldLease, LeaseStore } from "./store/lease-store.js";

export interface PartitionLeaseOptions {
  partitionCount: number;
  /** This process's member id (unique per process: a restart is a new member). */
  owner: string;
  /** How long a lease and a membership last without a heartbeat (database time). */
  ttlMs: number;
  /** How often leases are renewed and shares recomputed (<= ttlMs / 3). */
  heartbeatMs: number;
}

/** A member id: host (the pod name on Kubernetes), pid and a random suffix; at most 128 chars. */
export function defaultLeaseOwner(): string {
  return `${hostname().slice(0, 100)}-${process.pid}-${randomBytes(4).toString("hex")}`;
}

/**
 * PartitionLeaseManager: the partitions of metering's feed split between several rating processes
 * through leases in PostgreSQL (one per partition, named like its cursor). Every heartbeat it (1) marks this process live and reads the live
 * members, (2) renews its leases at their epoch — a lease not renewed was lost: its consumer loop
 * stops (its writes are fenced anyway), (3) gives up the partitions beyond its share (stops the
 * loop, waits for its batch, then frees the lease: the next owner starts from a committed cursor),
 * (4) takes free or expired leases up to its share, each with a new epoch, and starts a consumer
 * loop fenced by it. A crashed process's leases are taken over after ttlMs.
 */
export class PartitionLeaseManager {
  readonly #held = new Map<string, { lease: HeldLease; consumer: RatingConsumer }>();
  readonly #stopping = new Set<Promise<void>>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;
  #tick: Promise<void> = Promise.resolve();
  #lastRenewMs = 0;

  constructor(
    readonly store: LeaseStore,
    readonly options: PartitionLeaseOptions,
    readonly makeConsumer: (partition: number, fence: { owner: string; epoch: bigint }) => RatingConsumer,
    readonly logger: Logger,
  ) {}

  get owner(): string {
    return this.options.owner;
  }

  /** The partitions this process holds now, ascending. */
  held(): number[] {
    return [...this.#held.values()].map((h) => h.lease.partition).sort((a, b) => a - b);
  }

  /** start: creates the lease rows, runs a first heartbeat (its share is held on return), then one per heartbeatMs. */
  async start(): Promise<void> {
    if (this.#running) return;
    const { partitionCount } = this.options;
    await this.store.ensure(
      Array.from({ length: partitionCount }, (_, k) => ({ name: partitionCursorName(partitionCount, k), partition: k })),
      partitionCount,
    );
    this.#running = true;
    this.#lastRenewMs = Date.now();
    await this.tickNow();
  }

  /** tickNow: one heartbeat now (after the one in flight). */
  tickNow(): Promise<void> {
    this.#tick = this.#tick.then(() => this.#beat());
    return this.#tick;
  }

  async #beat(): Promise<void> {
    if (!this.#running) return;
    clearTimeout(this.#timer);
    try {
      await this.#step();
      this.#lastRenewMs = Date.now();
    } catch (e) {
      this.logger.warn("partition lease heartbeat failed", { owner: this.owner, error: String((e as Error)?.message ?? e) });
      // Not renewed for a whole TTL: another process may hold the partitions now. Stop writing
      // (the fence would refuse the writes anyway) until a heartbeat gets through.
      if (Date.now() - this.#lastRenewMs > this.options.ttlMs) for (const name of [...this.#held.keys()]) this.#drop(name);
    }
    if (this.#running) this.#timer = setTimeout(() => void this.tickNow(), this.options.heartbeatMs);
  }

  async #step(): Promise<void> {
    const { owner } = this;
    const { partitionCount, ttlMs } = this.options;
    const members = await this.store.heartbeat(owner, partitionCount, ttlMs);
    const share = leaseShare(partitionCount, members, owner);
    const renewed = await this.store.renew(owner, [...this.#held.values()].map((h) => h.lease), ttlMs);
    for (const [name, h] of [...this.#held]) {
      if (renewed.has(name) && h.consumer.running) continue;
      this.logger.warn("partition lease lost", { owner, partition: h.lease.partition, epoch: h.lease.epoch.toString() });
      this.#drop(name);
      if (renewed.has(name)) await this.store.release(owner, h.lease);
    }
    const release = new Set(leasesToRelease(this.held(), share));
    for (const [name, h] of [...this.#held]) {
      if (!release.has(h.lease.partition)) continue;
      this.#held.delete(name);
      await h.consumer.stop();
      await this.store.release(owner, h.lease);
      this.logger.info("partition lease released", { owner, partition: h.lease.partition, share, members: members.length });
    }
    if (this.#held.size < share) {
      for (const lease of await this.store.acquire(owner, partitionCount, share - this.#held.size, ttlMs)) {
        const consumer = this.makeConsumer(lease.partition, { owner, epoch: lease.epoch });
        this.#held.set(lease.name, { lease, consumer });
        consumer.start();
        this.logger.info("partition lease acquired", { owner, partition: lease.partition, epoch: lease.epoch.toString(), share, members: members.length });
      }
    }
  }

  /** Stops a lost partition's loop in the background (its batch in flight is fenced). */
  #drop(name: string): void {
    const h = this.#held.get(name);
    if (h === undefined) return;
    this.#held.delete(name);
    const p = h.consumer.stop().finally(() => this.#stopping.delete(p));
    this.#stopping.add(p);
  }

  /** stop: stops the loops (their batches finish), frees the leases and leaves the members. */
  async stop(): Promise<void> {
    if (!this.#running) return;
    const held = await this.#stopLoops();
    try {
      for (const h of held) await this.store.release(this.owner, h.lease);
      await this.store.leave(this.owner);
    } catch (e) {
      this.logger.warn("partition leases not released (they expire)", { owner: this.owner, error: String((e as Error)?.message ?? e) });
    }
  }

  /**
   * halt: what a crash leaves behind, for tests: the heartbeat stops and the loops stop, but the
   * leases and the membership stay in the database until they expire.
   */
  async halt(): Promise<void> {
    await this.#stopLoops();
  }

  /** Stops the heartbeat and every loop (their batches finish); returns what was held. */
  async #stopLoops() {
    this.#running = false;
    clearTimeout(this.#timer);
    await this.#tick.catch(() => {});
    const held = [...this.#held.values()];
    this.#held.clear();
    await Promise.all(held.map((h) => h.consumer.stop()));
    await Promise.all([...this.#stopping]);
    return held;
  }
}
