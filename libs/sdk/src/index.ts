export {
  createMeteringClient,
  SDK_LIMITS,
  type MeteringClient,
  type MeteringClientOptions,
  type PropertyInput,
  type RetryOptions,
  type TrackEvent,
  type Tracked,
  type TrackResult,
  type TrackStatus,
} from "./metering-client.js";
