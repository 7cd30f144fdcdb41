import { CarryAccumulator } from "@nanobill/money";

/**
 * Rating state: what rating carries from one event to the next. Everything here is persisted by
 * the store in the same transaction as the rated rows (so a replayed batch starts from the state
 * its first run started from) and loaded into a MemoryRatingState before a batch is rated.
 *
 *  - carries: the sub-nano residue per (tenant, customer, charge, dimensions) for prices ("p")
 *    and costs ("c"); |residue| < 1 nano, never dropped.
 *  - period totals: per (tenant, customer, charge, period start): the quantity so far and the
 *    nanos booked so far, for period-priced charges (and for every usage charge, so that
 *    RatePeriod reads exact period sums even when periods are not hour-aligned).
 *  - tasks: per (tenant, customer, task id): attempt cost so far and the task's outcome.
 */

/**
 * CARRY_ROUNDING: the named rounding of every carried per-event amount. half_up (ties away from
 * zero), not half_even: carries are persisted as their residue only, and half-even's tie-break
 * depends on the parity of the total booked so far, which a residue does not carry; for the
 * non-negative amounts that go through carries, half_up gives the same result whether an
 * accumulator runs uninterrupted or is restored from its residue.
 */
export const CARRY_ROUNDING = "half_up" as const;

export const PRICE = "p";
export const COST = "c";

/** carryKey: the key of one carry. */
// Keys are interned: the same (tenant, customer, charge, ...) gives the same flat string object,
// found through nested maps of its parts. A key built per event (a template literal is a rope that
// every Map lookup first flattens; join allocates a new string that must be hashed) took a third of
// pure rating time. The cache is bounded: past KEY_CACHE_MAX keys it starts over.
export const KEY_CACHE_MAX = 50_000;

type Nest = Map<string | number, Nest | string>;
class KeyCache {
  #root: Nest = new Map();
  #size = 0;
  get(parts: ReadonlyArray<string | number>): string {
    let m = this.#root;
    const last = parts.length - 1;
    for (let i = 0; i < last; i++) {
      let n = m.get(parts[i]!) as Nest | undefined;
      if (n === undefined) {
        n = new Map();
        m.set(parts[i]!, n);
      }
      m = n;
    }
    let key = m.get(parts[last]!) as string | undefined;
    if (key === undefined) {
      if (++this.#size > KEY_CACHE_MAX) {
        this.#root = new Map();
        this.#size = 0;
        return this.get(parts);
      }
      key = parts.join("\u0000");
      m.set(parts[last]!, key);
    }
    return key;
  }
}
const carryKeys = new KeyCache();
const periodKeys = new KeyCache();

/** carryKey: the key of one carry. */
export function carryKey(tenant: string, customerId: string, chargeId: string, dimsKey: string, kind: string): string {
  return carryKeys.get([tenant, customerId, chargeId, dimsKey, kind]);
}

/** periodKey: the key of one period total. */
export function periodKey(tenant: string, customerId: string, chargeId: string, periodStartMs: number): string {
  return periodKeys.get([tenant, customerId, chargeId, periodStartMs]);
}

/** taskKey: the key of one outcome task. */
export function taskKey(tenant: string, customerId: string, taskId: string): string {
  return [tenant, customerId, taskId].join("\u0000");
}

export interface PeriodTotal {
  quantity: bigint;
  bookedNanos: bigint;
  costNanos: bigint;
  unit: string;
  periodEndMs: number;
}

export type OutcomeStatus = "pending" | "confirmed" | "clawed_back";

export interface TaskState {
  attemptCostNanos: bigint;
  costUnit: string;
  outcome: {
    eventId: string;
    chargeId: string;
    priceNanos: bigint;
    unit: string;
    verifyUntilMs: number;
    status: OutcomeStatus;
    eventTimeMs: number;
    model: string;
  } | null;
}

/** RatingState: get-or-create accessors; returned objects are mutated in place by the rater. */
export interface RatingState {
  carry(key: string): CarryAccumulator;
  setCarry(key: string, acc: CarryAccumulator): void;
  periodTotal(key: string, unit: string, periodEndMs: number): PeriodTotal;
  task(key: string): TaskState;
  /** touched: marks a key as changed (persisted at the end of the batch). */
  touch(kind: "carry" | "period" | "task", key: string): void;
}

/**
 * MemoryRatingState: the state of the keys a batch touches (loaded from the store by the
 * consumer; a fresh state is zero). dirty* list what to write back.
 */
export class MemoryRatingState implements RatingState {
  readonly carries = new Map<string, CarryAccumulator>();
  readonly periods = new Map<string, PeriodTotal>();
  readonly tasks = new Map<string, TaskState>();
  readonly dirtyCarries = new Set<string>();
  readonly dirtyPeriods = new Set<string>();
  readonly dirtyTasks = new Set<string>();

  carry(key: string): CarryAccumulator {
    let c = this.carries.get(key);
    if (c === undefined) {
      c = new CarryAccumulator(CARRY_ROUNDING);
      this.carries.set(key, c);
    }
    return c;
  }

  setCarry(key: string, acc: CarryAccumulator): void {
    this.carries.set(key, acc);
  }

  periodTotal(key: string, unit: string, periodEndMs: number): PeriodTotal {
    let p = this.periods.get(key);
    if (p === undefined) {
      p = { quantity: 0n, bookedNanos: 0n, costNanos: 0n, unit, periodEndMs };
      this.periods.set(key, p);
    }
    return p;
  }

  task(key: string): TaskState {
    let t = this.tasks.get(key);
    if (t === undefined) {
      t = { attemptCostNanos: 0n, costUnit: "", outcome: null };
      this.tasks.set(key, t);
    }
    return t;
  }

  touch(kind: "carry" | "period" | "task", key: string): void {
    if (kind === "carry") this.dirtyCarries.add(key);
    else if (kind === "period") this.dirtyPeriods.add(key);
    else this.dirtyTasks.add(key);
  }

  clearDirty(): void {
    this.dirtyCarries.clear();
    this.dirtyPeriods.clear();
    this.dirtyTasks.clear();
  }
}

/**
 * ScratchState: a copy-on-read view over a base state for Quote: reads see the base values,
 * every change stays in the scratch copy and is thrown away.
 */
export class ScratchState implements RatingState {
  readonly #base: RatingState;
  readonly #mem = new MemoryRatingState();
  readonly #seen = new Set<string>();

  constructor(base: RatingState) {
    this.#base = base;
  }

  carry(key: string): CarryAccumulator {
    if (!this.#seen.has("c" + key)) {
      this.#seen.add("c" + key);
      const b = this.#base.carry(key);
      this.#mem.setCarry(key, new CarryAccumulator(b.mode, b.carried));
    }
    return this.#mem.carry(key);
  }

  setCarry(key: string, acc: CarryAccumulator): void {
    this.#seen.add("c" + key);
    this.#mem.setCarry(key, acc);
  }

  periodTotal(key: string, unit: string, periodEndMs: number): PeriodTotal {
    if (!this.#seen.has("p" + key)) {
      this.#seen.add("p" + key);
      const b = this.#base.periodTotal(key, unit, periodEndMs);
      this.#mem.periods.set(key, { ...b });
    }
    return this.#mem.periodTotal(key, unit, periodEndMs);
  }

  task(key: string): TaskState {
    if (!this.#seen.has("t" + key)) {
      this.#seen.add("t" + key);
      const b = this.#base.task(key);
      this.#mem.tasks.set(key, { ...b, outcome: b.outcome === null ? null : { ...b.outcome } });
    }
    return this.#mem.task(key);
  }

  touch(): void {}
}
