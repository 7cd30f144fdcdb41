import { ConfigError } from "@nanobill/service-kit";
import { describe, expect, it } from "vitest";
import { CREDIT_WALLET_CONFIG_DEFAULT, loadConfig } from "./config.js";

const REQUIRED = { NANOBILL_API_KEYS: "tnt_a:admin:key_admin_0001", NANOBILL_INTERNAL_API_KEY: "key_internal_01" };

describe("webhook egress switch (NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS, shared with rating)", () => {
  it("is off by default, read as a boolean, and a bad value is a ConfigError naming it", () => {
    expect(CREDIT_WALLET_CONFIG_DEFAULT.webhooksAllowPrivateNetworks).toBe(false);
    expect(loadConfig(REQUIRED).wallet.webhooksAllowPrivateNetworks).toBe(false);
    expect(loadConfig({ ...REQUIRED, NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS: "true" }).wallet.webhooksAllowPrivateNetworks).toBe(true);
    expect(loadConfig({ ...REQUIRED, NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS: "false" }).wallet.webhooksAllowPrivateNetworks).toBe(false);
    const e = (() => {
      try {
        loadConfig({ ...REQUIRED, NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS: "yes please" });
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).variable).toBe("NANOBILL_WEBHOOKS_ALLOW_PRIVATE_NETWORKS");
  });
});

describe("Redis Cluster switch (CREDIT_WALLET_REDIS_CLUSTER)", () => {
  it("is off by default, read as a boolean, and a bad value is a ConfigError naming it", () => {
    expect(CREDIT_WALLET_CONFIG_DEFAULT.redisCluster).toBe(false);
    expect(loadConfig(REQUIRED).wallet.redisCluster).toBe(false);
    expect(loadConfig({ ...REQUIRED, REDIS_URL: "redis://10.0.0.5:7000", CREDIT_WALLET_REDIS_CLUSTER: "true" }).wallet).toMatchObject({ redisUrl: "redis://10.0.0.5:7000", redisCluster: true });
    expect(() => loadConfig({ ...REQUIRED, CREDIT_WALLET_REDIS_CLUSTER: "cluster" })).toThrow(expect.objectContaining({ variable: "CREDIT_WALLET_REDIS_CLUSTER" }));
  });
});
