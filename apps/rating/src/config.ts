import { envBool, envInt, type Env } from "@nanobill/service-kit";
import { CONSUMER_BATCH_EVENTS_MAX, CONSUMER_WAIT_MS, CONTEXT_CACHE_TTL_MS } from "./limits.js";

/** RatingConfig: the service's tunables (limits.ts holds the hard caps). */
export interface RatingConfig {
  /** Run the metering consumer (start()). */
  consumerEnabled: boolean;
  /** Events per ReadEvents call (1..CONSUMER_BATCH_EVENTS_MAX). */
  consumerBatchEvents: number;
  /** Long-poll wait of ReadEvents. */
  consumerWaitMs: number;
  /** How long catalog data (customers, plans, cost rates) is cached by the consumer. */
  cacheTtlMs: number;
  /** Check usage charge meters against metering's GetMeter when plans are written. */
  validateMeters: boolean;
}

export const RATING_CONFIG_DEFAULT: RatingConfig = {
  consumerEnabled: true,
  consumerBatchEvents: 1_000,
  consumerWaitMs: CONSUMER_WAIT_MS,
  cacheTtlMs: CONTEXT_CACHE_TTL_MS,
  validateMeters: true,
};

/** ratingConfigFromEnv: RATING_* variables; a bad value throws ConfigError naming it. */
export function ratingConfigFromEnv(env: Env): RatingConfig {
  return {
    consumerEnabled: envBool(env, "RATING_CONSUMER_ENABLED", true),
    consumerBatchEvents: envInt(env, "RATING_CONSUMER_BATCH_EVENTS", RATING_CONFIG_DEFAULT.consumerBatchEvents, { min: 1, max: CONSUMER_BATCH_EVENTS_MAX }),
    consumerWaitMs: envInt(env, "RATING_CONSUMER_WAIT_MS", CONSUMER_WAIT_MS, { min: 0, max: 30_000 }),
    cacheTtlMs: envInt(env, "RATING_CACHE_TTL_MS", CONTEXT_CACHE_TTL_MS, { min: 0, max: 600_000 }),
    validateMeters: envBool(env, "RATING_VALIDATE_METERS", true),
  };
}
