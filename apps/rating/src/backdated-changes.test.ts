// Subscription and price changes reaching back over usage already rated (cross-service review,
// probe p5): rating prices an event once, with the catalog in force when it is rated, and nothing
// re-rates it. Before, CreateSubscription accepted a start before the customer's rated usage (an
// event rated "no subscription in force" stayed unpriced: the invoice billed $1 for two $1
// events), and MigrateSubscription / SetPriceOverride an effective time before it (the rated events
// kept the old prices). Now such a write is refused (FailedPrecondition naming the field, the
// latest rated event inside the change's time and the first time it may start), consistently with
// a consumer batch rating the customer at the same moment.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PlanVersionSchema } from "@nanobill/contracts/nanobill/rating/v1/rating_pb";
import { testBackends } from "@nanobill/db";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, T0, codeOf, openHarness, type Harness } from "./test-support.js";

const t0 = T0.getTime();
const NOV_1 = Date.UTC(2026, 10, 1);
const OCT_1 = Date.UTC(2026, 9, 1);
const HOUR = 3_600_000;
const ts = timestampFromMs;
const iso = (ms: number): string => new Date(ms).toISOString().replace(/\./g, "\\.");

const perCall = (amount: string, version = 0) =>
  create(PlanVersionSchema, {
    version,
    currency: "USD",
    charges: [{ chargeId: "calls", name: "Calls", unit: "USD", usage: { meter: "calls", eventType: "api.call", quantityProperties: ["calls"] }, pricing: { case: "perUnit", value: { unitPrice: { amount, perQuantity: 1n } } } }],
  });

for (const backend of testBackends()) describe(`rating: changes reaching back over rated usage (${backend.name})`, () => {
  let h: Harness;
  const admin = () => h.client(KEYS.adminA);
  const push = (id: string, customerId: string, timestampMs: number, calls = 1) => h.metering.push("tnt_a", { id, customerId, type: "api.call", timestampMs, properties: { calls } });
  const prices = async (id: string) => (await h.service.rated.ratedEvent("tnt_a", id))!.lines.map((l) => [l.chargeId, l.priceNanos]);

  beforeAll(async () => {
    h = await openHarness(await backend.open());
    h.metering.meters.set("tnt_a\u0000calls", "api.call");
    await admin().createPlan({ planId: "plan", name: "P", version: perCall("1") });
    await admin().publishPlanVersion({ planId: "plan", version: 1 });
    await admin().createPlanVersion({ planId: "plan", version: perCall("2", 2) });
    await admin().publishPlanVersion({ planId: "plan", version: 2 });
    for (const id of ["cus_b", "cus_p", "cus_m", "cus_o", "cus_r", "cus_w", "cus_n"]) {
      await admin().createCustomer({ customer: { customerId: id, currency: "USD", billingAnchor: ts(NOV_1), timeZone: "UTC" } });
    }
  });
  afterAll(async () => {
    await h.close();
  });

  it("refuses a subscription starting before the customer's rated usage (the reviewer's eb1), FailedPrecondition on start_time naming the event and when to start, and writes nothing", async () => {
    const eb1 = t0 - 2 * HOUR;
    push("eb1", "cus_b", eb1);
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    expect(await prices("eb1")).toEqual([["", 0n]]); // no subscription in force: cost only
    const got = await codeOf(admin().createSubscription({ subscriptionId: "sub_b", customerId: "cus_b", planId: "plan", planVersion: 1, startTime: ts(NOV_1) }));
    expect(got).toMatch(new RegExp(`^FailedPrecondition: start_time: customer "cus_b" has usage already rated in the subscription's time \\[${iso(NOV_1)}, open\\) \\(the latest: event "eb1" at ${iso(eb1)}\\); rated events are never re-priced, so the subscription may not reach back over them: start it at or after ${iso(eb1 + 1)}$`));
    // Starting at the event's own time would cover it too.
    expect(await codeOf(admin().createSubscription({ subscriptionId: "sub_b", customerId: "cus_b", planId: "plan", planVersion: 1, startTime: ts(eb1) }))).toMatch(/^FailedPrecondition: start_time: .*"eb1"/);
    expect(await h.service.catalog.getSubscription("tnt_a", "sub_b")).toBeNull();
    // From the first millisecond after it: allowed, and the next event is priced.
    expect(await codeOf(admin().createSubscription({ subscriptionId: "sub_b", customerId: "cus_b", planId: "plan", planVersion: 1, startTime: ts(eb1 + 1) }))).toBe("OK");
    push("eb2", "cus_b", t0 - HOUR);
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    expect(await prices("eb2")).toEqual([["calls", 1_000_000_000n]]);
    // A retry of the accepted create answers as before, though usage under it is rated now.
    expect(await codeOf(admin().createSubscription({ subscriptionId: "sub_b", customerId: "cus_b", planId: "plan", planVersion: 1, startTime: ts(eb1 + 1) }))).toBe("OK");
  });

  it("allows a backdated start before any usage, and a past subscription whose time holds no rated event", async () => {
    expect(await codeOf(admin().createSubscription({ subscriptionId: "sub_n", customerId: "cus_n", planId: "plan", planVersion: 1, startTime: ts(NOV_1) }))).toBe("OK");
    push("en1", "cus_n", t0 - HOUR);
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    expect(await prices("en1")).toEqual([["calls", 1_000_000_000n]]);
    // cus_p has rated usage on Nov 20; an October subscription (ended Oct 10) covers none of it.
    push("ep1", "cus_p", t0 - HOUR);
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    expect(await codeOf(admin().createSubscription({ subscriptionId: "sub_p", customerId: "cus_p", planId: "plan", planVersion: 1, startTime: ts(OCT_1), endTime: ts(OCT_1 + 9 * 24 * HOUR) }))).toBe("OK");
    expect(await codeOf(admin().createSubscription({ subscriptionId: "sub_p2", customerId: "cus_p", planId: "plan", planVersion: 1, startTime: ts(OCT_1 + 9 * 24 * HOUR), endTime: ts(t0) }))).toMatch(/^FailedPrecondition: start_time: customer "cus_p" .*"ep1"/);
  });

  it("refuses a migration effective before the subscription's rated usage (FailedPrecondition on effective_time), keeps the phases, and allows one after it", async () => {
    await admin().createSubscription({ subscriptionId: "sub_m", customerId: "cus_m", planId: "plan", planVersion: 1, startTime: ts(NOV_1) });
    const em1 = t0 - 2 * HOUR;
    push("em1", "cus_m", em1, 3);
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    expect(await prices("em1")).toEqual([["calls", 3_000_000_000n]]);
    const got = await codeOf(admin().migrateSubscription({ subscriptionId: "sub_m", planId: "plan", planVersion: 2, effectiveTime: ts(NOV_1 + 24 * HOUR) }));
    expect(got).toMatch(new RegExp(`^FailedPrecondition: effective_time: customer "cus_m" has usage already rated in the new phase's time \\[${iso(NOV_1 + 24 * HOUR)}, open\\) \\(the latest: event "em1" at ${iso(em1)}\\); .* start it at or after ${iso(em1 + 1)}$`));
    expect((await h.service.catalog.getSubscription("tnt_a", "sub_m"))!.phases.map((p) => p.planVersion)).toEqual([1]);
    expect(await codeOf(admin().migrateSubscription({ subscriptionId: "sub_m", planId: "plan", planVersion: 2, effectiveTime: ts(em1 + 1) }))).toBe("OK");
    push("em2", "cus_m", t0 - HOUR, 3);
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    expect(await prices("em2")).toEqual([["calls", 6_000_000_000n]]);
    expect(await codeOf(admin().migrateSubscription({ subscriptionId: "sub_m", planId: "plan", planVersion: 2, effectiveTime: ts(em1 + 1) }))).toBe("OK"); // replay
  });

  it("refuses a price override starting before the customer's rated usage (FailedPrecondition on price_override.start_time) and stores nothing; one ending before it or starting after it is allowed", async () => {
    await admin().createSubscription({ subscriptionId: "sub_o", customerId: "cus_o", planId: "plan", planVersion: 1, startTime: ts(NOV_1) });
    const eo1 = t0 - 2 * HOUR;
    push("eo1", "cus_o", eo1);
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    const half = { pricing: { case: "perUnit" as const, value: { unitPrice: { amount: "0.5" } } } };
    const got = await codeOf(admin().setPriceOverride({ priceOverride: { overrideId: "ovr_o", customerId: "cus_o", chargeId: "calls", charge: half, startTime: ts(NOV_1) } }));
    expect(got).toMatch(new RegExp(`^FailedPrecondition: price_override\\.start_time: customer "cus_o" has usage already rated in the override's time \\[${iso(NOV_1)}, open\\) \\(the latest: event "eo1" at ${iso(eo1)}\\); .* start it at or after ${iso(eo1 + 1)}$`));
    expect(await h.service.catalog.listOverrides("tnt_a", "cus_o")).toEqual([]);
    // [Nov 1, eo1) holds no rated event (the end is exclusive).
    expect(await codeOf(admin().setPriceOverride({ priceOverride: { overrideId: "ovr_o0", customerId: "cus_o", chargeId: "calls", charge: half, startTime: ts(NOV_1), endTime: ts(eo1) } }))).toBe("OK");
    expect(await codeOf(admin().setPriceOverride({ priceOverride: { overrideId: "ovr_o", customerId: "cus_o", chargeId: "calls", charge: half, startTime: ts(eo1 + 1) } }))).toBe("OK");
    push("eo2", "cus_o", t0 - HOUR);
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    expect(await prices("eo1")).toEqual([["calls", 1_000_000_000n]]);
    expect(await prices("eo2")).toEqual([["calls", 500_000_000n]]);
  });

  it("rates a batch with a subscription written after the consumer loaded its catalog and before it locked the customer", async () => {
    push("er1", "cus_r", t0 - 2 * HOUR);
    expect(await h.service.consumer.pollOnce(0)).toBe(1);
    push("er2", "cus_r", t0 - HOUR);
    // The subscription is written (allowed: er2 is not rated yet) right after the batch's catalog
    // was built without it.
    const catalog = h.service.catalog;
    const subscriptionsOf = catalog.subscriptionsOf.bind(catalog);
    let written = false;
    catalog.subscriptionsOf = async (tenant, ids, q) => {
      const subs = await subscriptionsOf(tenant, ids, q);
      if (!written && ids.includes("cus_r")) {
        written = true;
        await admin().createSubscription({ subscriptionId: "sub_r", customerId: "cus_r", planId: "plan", planVersion: 1, startTime: ts(t0 - 2 * HOUR + 1) });
      }
      return subs;
    };
    try {
      expect(await h.service.consumer.pollOnce(0)).toBe(1);
    } finally {
      catalog.subscriptionsOf = subscriptionsOf;
    }
    expect(written).toBe(true);
    expect(await prices("er2")).toEqual([["calls", 1_000_000_000n]]); // before: [["", 0n]], for good
  });

  it("rates a batch while the tenant keeps writing its catalog (another customer created at every catalog read): no reload loop, no stalled partition", async () => {
    await admin().createCustomer({ customer: { customerId: "cus_live", currency: "USD", billingAnchor: ts(NOV_1), timeZone: "UTC" } });
    await admin().createSubscription({ subscriptionId: "sub_live", customerId: "cus_live", planId: "plan", planVersion: 1, startTime: ts(NOV_1) });
    push("el1", "cus_live", t0 - HOUR);
    const catalog = h.service.catalog;
    const subscriptionsOf = catalog.subscriptionsOf.bind(catalog);
    let writes = 0;
    catalog.subscriptionsOf = async (tenant, ids, q) => {
      const subs = await subscriptionsOf(tenant, ids, q);
      // an unrelated sign-up right after every read of the batch's customers outside its transaction
      if (q === undefined && ids.includes("cus_live")) {
        writes++;
        await admin().createCustomer({ customer: { customerId: `cus_noise_${writes}`, currency: "USD", billingAnchor: ts(NOV_1), timeZone: "UTC" } });
      }
      return subs;
    };
    try {
      // before: every batch found the tenant's catalog moved, rolled back and reloaded, 8 times, then the poll failed
      expect(await h.service.consumer.pollOnce(0)).toBe(1);
    } finally {
      catalog.subscriptionsOf = subscriptionsOf;
    }
    expect(writes).toBe(1);
    expect(await prices("el1")).toEqual([["calls", 1_000_000_000n]]);
  });

  it("makes a backdated subscription written while a batch rates the customer wait for the batch, then refuses it", async () => {
    push("ew1", "cus_w", t0 - HOUR);
    // Hold the batch's transaction open after its customer lock and catalog check.
    const rated = h.service.rated;
    const loadState = rated.loadState.bind(rated);
    let reached!: () => void;
    const atLoad = new Promise<void>((r) => (reached = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    rated.loadState = async (...args) => {
      reached();
      await gate;
      return loadState(...args);
    };
    try {
      const poll = h.service.consumer.pollOnce(0);
      await atLoad;
      const write = codeOf(admin().createSubscription({ subscriptionId: "sub_w", customerId: "cus_w", planId: "plan", planVersion: 1, startTime: ts(NOV_1) }));
      await new Promise((r) => setTimeout(r, 300)); // the write reaches its lock (and waits) meanwhile
      release();
      expect(await poll).toBe(1);
      expect(await write).toMatch(/^FailedPrecondition: start_time: customer "cus_w" .*"ew1"/);
    } finally {
      rated.loadState = loadState;
    }
    expect(await h.service.catalog.getSubscription("tnt_a", "sub_w")).toBeNull();
    expect(await prices("ew1")).toEqual([["", 0n]]);
  });
});
