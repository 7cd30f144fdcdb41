import { create } from "@bufbuild/protobuf";
import { TimestampSchema, type Timestamp } from "@bufbuild/protobuf/wkt";

const US_PER_SECOND = 1_000_000n;

/** usToTimestamp: microseconds since the epoch as a Timestamp (seconds floored, nanos in 0..999,999,000, also before 1970). */
export function usToTimestamp(us: bigint): Timestamp {
  const seconds = us >= 0n ? us / US_PER_SECOND : -((-us + US_PER_SECOND - 1n) / US_PER_SECOND);
  return create(TimestampSchema, { seconds, nanos: Number(us - seconds * US_PER_SECOND) * 1000 });
}
