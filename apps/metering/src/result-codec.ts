// A hand-written encoder of IngestEventsResponse.results for the binary fast path: protobuf-es's
// reflective toBinary of 1,000 IngestResults cost about as much server CPU as decoding the
// request (profile of 2026-11-29, fifth part). The results are written straight into one buffer and
// handed to protobuf-es as unknown field 1 data, which it writes verbatim: the response then
// carries the counts (fields 2-5) first and the results (field 1, in order) after them, which every
// protobuf parser reads as the same message (result-codec.test.ts checks it against the reflective
// encoding on random results).
//
// Field numbers (proto/nanobill/metering/v1/metering.proto): IngestEventsResponse 1 results;
// IngestResult 1 event_id, 2 status (enum), 3 field, 4 reason, 5 message, 6 sequence (int64).
import { create } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { IngestEventsResponseSchema, type IngestEventsResponse, type IngestResult } from "@nanobill/contracts/nanobill/metering/v1/metering_pb";
import { int64Unsigned, varint64Size, varintSize, writeVarint, writeVarint64 } from "@nanobill/service-kit";

/** Size of a proto3 string field (omitted when empty) whose UTF-8 length is `bytes`. */
const strFieldSize = (bytes: number): number => (bytes === 0 ? 0 : 1 + varintSize(bytes) + bytes);

function writeStr(buf: Buffer, pos: number, tag: number, s: string, bytes: number): number {
  if (bytes === 0) return pos;
  buf[pos++] = tag;
  pos = writeVarint(buf, pos, bytes);
  return pos + buf.write(s, pos, bytes, "utf8");
}

/**
 * The results as IngestEventsResponse field 1 on the wire: for each, the tag (0x0a), varint(length)
 * and the IngestResult bytes, all in one buffer.
 */
export function encodeResults(results: readonly IngestResult[]): Buffer {
  const n = results.length;
  const sizes = new Array<number>(n);
  const lens = new Array<number>(4 * n);
  const seqs = new Array<bigint>(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const r = results[i]!;
    const idB = Buffer.byteLength(r.eventId, "utf8");
    const fieldB = r.field === "" ? 0 : Buffer.byteLength(r.field, "utf8");
    const reasonB = r.reason === "" ? 0 : Buffer.byteLength(r.reason, "utf8");
    const messageB = r.message === "" ? 0 : Buffer.byteLength(r.message, "utf8");
    const seq = r.sequence === 0n ? 0n : int64Unsigned(r.sequence);
    const size =
      strFieldSize(idB) +
      (r.status === 0 ? 0 : 1 + (r.status > 0 ? varintSize(r.status) : 10)) + // a negative enum is ten bytes, as protobuf-es writes it
      strFieldSize(fieldB) +
      strFieldSize(reasonB) +
      strFieldSize(messageB) +
      (seq === 0n ? 0 : 1 + varint64Size(seq));
    lens[4 * i] = idB;
    lens[4 * i + 1] = fieldB;
    lens[4 * i + 2] = reasonB;
    lens[4 * i + 3] = messageB;
    seqs[i] = seq;
    sizes[i] = size;
    total += 1 + varintSize(size) + size;
  }
  const buf = Buffer.allocUnsafe(total);
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const r = results[i]!;
    buf[pos++] = 0x0a;
    pos = writeVarint(buf, pos, sizes[i]!);
    pos = writeStr(buf, pos, 0x0a, r.eventId, lens[4 * i]!);
    if (r.status !== 0) {
      buf[pos++] = 0x10;
      pos = r.status > 0 ? writeVarint(buf, pos, r.status) : writeVarint64(buf, pos, int64Unsigned(BigInt(r.status)));
    }
    pos = writeStr(buf, pos, 0x1a, r.field, lens[4 * i + 1]!);
    pos = writeStr(buf, pos, 0x22, r.reason, lens[4 * i + 2]!);
    pos = writeStr(buf, pos, 0x2a, r.message, lens[4 * i + 3]!);
    if (seqs[i] !== 0n) {
      buf[pos++] = 0x30;
      pos = writeVarint64(buf, pos, seqs[i]!);
    }
  }
  if (pos !== total) throw new Error(`result encoding: wrote ${pos} bytes, sized ${total}`);
  return buf;
}

/**
 * The IngestEventsResponse of these results and counts, with the results pre-encoded: on the wire
 * the same message as create(IngestEventsResponseSchema, { results, ...counts }). protobuf-es
 * writes an unknown field as its tag followed by its data verbatim, so the results go in as ONE
 * length-delimited field 1 entry whose data is the whole field-1 run without its first tag (the
 * following entries' tags are inside it). One entry per result cost ~0.4 KB of allocations each in
 * protobuf-es's writer (heap profile of bench/ingest, 2026-11-30). Only for binary serialization:
 * toJson does not write unknown fields.
 */
export function responseWithEncodedResults(
  results: readonly IngestResult[],
  counts: Pick<IngestEventsResponse, "acceptedCount" | "duplicateCount" | "conflictCount" | "rejectedCount">,
): IngestEventsResponse {
  const res = create(IngestEventsResponseSchema, counts);
  if (results.length > 0) res.$unknown = [{ no: 1, wireType: WireType.LengthDelimited, data: encodeResults(results).subarray(1) }];
  return res;
}
