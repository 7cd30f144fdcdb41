// A hand-written decoder of the IngestEventsResponse results, the other half of the SDK's hot path:
// protobuf-es's reflective fromBinary of 1,000 IngestResults was a sixth of the SDK's CPU at
// 1,000-event batches (profile of 2026-11-29, fifth part). The client reads the response through a
// view of the method whose output keeps each result as its bytes (INGEST_EVENTS_VIEW: field 1 as
// `repeated bytes`; the counts, fields 2-5, which the SDK does not use, stay unknown fields), and
// decodes them here (result-codec.test.ts checks it against protobuf-es on random results).
//
// Field numbers (proto/nanobill/metering/v1/metering.proto): IngestEventsResponse 1 results;
// IngestResult 1 event_id, 2 status (enum), 3 field, 4 reason, 5 message, 6 sequence (int64).
import type { DescMethodUnary } from "@bufbuild/protobuf";
import {
  IngestEventsRequestSchema,
  IngestEventsRequestViewSchema,
  MeteringService,
} from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { ProtoReader } from "@nanobill/service-kit";

/** IngestEvents with the response read as IngestEventsRequestView (the one generated message whose field 1 is `repeated bytes`). */
export const INGEST_EVENTS_VIEW: DescMethodUnary<typeof IngestEventsRequestSchema, typeof IngestEventsRequestViewSchema> = {
  ...MeteringService.method.ingestEvents,
  output: IngestEventsRequestViewSchema,
};

/** One IngestResult as the SDK reads it (the fields of the generated message). */
export interface WireResult {
  eventId: string;
  status: number;
  field: string;
  reason: string;
  message: string;
  sequence: bigint;
}

/** protobuf-es's group nesting limit when skipping an unknown field of a top-level message. */
const TOP_LEVEL_GROUP_LIMIT = 99;

/** Decodes one encoded IngestResult (throws WireError where protobuf-es's fromBinary throws). */
export function decodeIngestResult(bytes: Uint8Array): WireResult {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new ProtoReader(buf, 0, buf.length);
  const out: WireResult = { eventId: "", status: 0, field: "", reason: "", message: "", sequence: 0n };
  while (r.pos < r.end) {
    const { no, wt } = r.tag();
    switch (no) {
      case 1:
        out.eventId = r.string();
        break;
      case 2:
        out.status = r.uint32() | 0;
        break;
      case 3:
        out.field = r.string();
        break;
      case 4:
        out.reason = r.string();
        break;
      case 5:
        out.message = r.string();
        break;
      case 6:
        out.sequence = BigInt.asIntN(64, r.varint64());
        break;
      default:
        r.skip(wt, no, TOP_LEVEL_GROUP_LIMIT);
    }
  }
  return out;
}
