import { ConfigError } from "@nanobill/service-kit";
import { describe, expect, it } from "vitest";
import { ratingConfigFromEnv } from "./config.js";
import { CONSUMER_BATCH_EVENTS_MAX, CONSUMER_LEASE_TTL_MS, CONSUMER_LEASE_TTL_MS_MAX, CONSUMER_LEASE_TTL_MS_MIN, CONSUMER_OWNER_CHARS_MAX } from "./limits.js";

function errorOf(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("no ConfigError");
}

describe("rating consumer batch size (RATING_CONSUMER_BATCH_EVENTS)", () => {
  it("defaults to the largest batch (2,000 events: half the statements per event of 1,000; README \"Measured\"); the variable can lower it", () => {
    expect(CONSUMER_BATCH_EVENTS_MAX).toBe(2_000);
    expect(ratingConfigFromEnv({}).consumerBatchEvents).toBe(CONSUMER_BATCH_EVENTS_MAX);
    expect(ratingConfigFromEnv({ RATING_CONSUMER_BATCH_EVENTS: "500" }).consumerBatchEvents).toBe(500);
    expect(errorOf(() => ratingConfigFromEnv({ RATING_CONSUMER_BATCH_EVENTS: String(CONSUMER_BATCH_EVENTS_MAX + 1) })).variable).toBe("RATING_CONSUMER_BATCH_EVENTS");
  });
});

describe("rating consumer lease settings (RATING_CONSUMER_*)", () => {
  it("defaults: leases on, 10 s TTL, heartbeat 2 s, generated owner", () => {
    const c = ratingConfigFromEnv({});
    expect(c).toMatchObject({ consumerLeases: true, consumerLeaseTtlMs: CONSUMER_LEASE_TTL_MS, consumerLeaseHeartbeatMs: 2_000, consumerOwner: "" });
  });

  it("reads the variables and keeps the heartbeat at most a third of the TTL", () => {
    const c = ratingConfigFromEnv({ RATING_CONSUMER_LEASES: "false", RATING_CONSUMER_LEASE_TTL_MS: "3000", RATING_CONSUMER_LEASE_HEARTBEAT_MS: "1000", RATING_CONSUMER_OWNER: "rating-consumer-0" });
    expect(c).toMatchObject({ consumerLeases: false, consumerLeaseTtlMs: 3_000, consumerLeaseHeartbeatMs: 1_000, consumerOwner: "rating-consumer-0" });
    // A short TTL alone lowers the default heartbeat to a third of it.
    expect(ratingConfigFromEnv({ RATING_CONSUMER_LEASE_TTL_MS: "900" }).consumerLeaseHeartbeatMs).toBe(300);
    expect(errorOf(() => ratingConfigFromEnv({ RATING_CONSUMER_LEASE_TTL_MS: "3000", RATING_CONSUMER_LEASE_HEARTBEAT_MS: "1001" })).variable).toBe("RATING_CONSUMER_LEASE_HEARTBEAT_MS");
  });

  it("refuses values past the limits, naming the variable", () => {
    expect(errorOf(() => ratingConfigFromEnv({ RATING_CONSUMER_LEASE_TTL_MS: String(CONSUMER_LEASE_TTL_MS_MIN - 1) })).variable).toBe("RATING_CONSUMER_LEASE_TTL_MS");
    expect(errorOf(() => ratingConfigFromEnv({ RATING_CONSUMER_LEASE_TTL_MS: String(CONSUMER_LEASE_TTL_MS_MAX + 1) })).variable).toBe("RATING_CONSUMER_LEASE_TTL_MS");
    expect(ratingConfigFromEnv({ RATING_CONSUMER_LEASE_TTL_MS: String(CONSUMER_LEASE_TTL_MS_MAX) }).consumerLeaseTtlMs).toBe(CONSUMER_LEASE_TTL_MS_MAX);
    expect(errorOf(() => ratingConfigFromEnv({ RATING_CONSUMER_OWNER: "x".repeat(CONSUMER_OWNER_CHARS_MAX + 1) })).variable).toBe("RATING_CONSUMER_OWNER");
    expect(ratingConfigFromEnv({ RATING_CONSUMER_OWNER: "x".repeat(CONSUMER_OWNER_CHARS_MAX) }).consumerOwner).toHaveLength(CONSUMER_OWNER_CHARS_MAX);
    expect(errorOf(() => ratingConfigFromEnv({ RATING_CONSUMER_LEASES: "maybe" })).variable).toBe("RATING_CONSUMER_LEASES");
  });
});

describe("webhook egress switch (NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS, shared with credit-wallet)", () => {
  it("is off by default, read as a boolean, and a bad value is a ConfigError naming it", () => {
    expect(ratingConfigFromEnv({}).webhooksAllowPrivateNetworks).toBe(false);
    expect(ratingConfigFromEnv({ NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS: "true" }).webhooksAllowPrivateNetworks).toBe(true);
    expect(ratingConfigFromEnv({ NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS: "false" }).webhooksAllowPrivateNetworks).toBe(false);
    expect(errorOf(() => ratingConfigFromEnv({ NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS: "yes please" })).variable).toBe("NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS");
  });
});
