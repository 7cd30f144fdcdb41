// Hand-written protobuf for CreateTransfers, the ledger's batch hot path (up to 8,190 items):
// decodeNewTransfer reads one encoded NewTransfer straight into the domain's NewTransfer (what
// newTransferFromPb(fromBinary(...)) gives, and throws WireError exactly where fromBinary throws:
// wire.test.ts checks both on random transfers with unknown and repeated fields and on random
// malformed mutations), and encodeTransferItemResult writes one result.
//
// The encoder of nanobill.ledger.v1.CreateTransfersItemResult works straight from the domain's
// result: the server answers CreateTransfers with CreateTransfersResponseView (server.ts), whose
// repeated bytes field has the same number as CreateTransfersResponse.results, so the bytes on
// the wire are protobuf-es's own (wire.test.ts compares them on random results). protobuf-es's
// reflective create + toBinary cost ~5 us per result: 40 ms of a full 8,190-transfer batch.
//
// Fields (proto/nanobill/ledger/v1/ledger.proto): 1 result (enum), 2 id (string), 3 amount_nanos
// (int64), 4 create_time (google.protobuf.Timestamp {1 seconds int64, 2 nanos int32}); proto3:
// default values are not written; fields in number order.
import { ProtoReader, tagOf } from "@nanobill/service-kit";
import type { CreateTransferItemResult } from "./domain/results.js";
import type { NewTransfer, TransferFlags } from "./domain/types.js";
import { timestampPartsToUs, transferResultToPb } from "./mapping.js";

export { WireError } from "@nanobill/service-kit";

const US_PER_SECOND = 1_000_000n;
/** protobuf-es's group nesting limit when skipping an unknown field: 100 - message depth. */
const TOP_LEVEL_GROUP_LIMIT = 99;
const SUB_MESSAGE_GROUP_LIMIT = 98;

/** Appends a varint of a non-negative number below 2^53 (enums, lengths, tags, nanos). */
function varint(out: number[], v: number): void {
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/** Appends an int64 as protobuf does: two's complement in 64 bits, 10 bytes when negative. */
function varint64(out: number[], v: bigint): void {
  let u = BigInt.asUintN(64, v);
  while (u > 0x7fn) {
    out.push(Number(u & 0x7fn) | 0x80);
    u >>= 7n;
  }
  out.push(Number(u));
}

const utf8 = new TextEncoder();

export function encodeTransferItemResult(r: CreateTransferItemResult): Uint8Array {
  const out: number[] = [];
  const result = transferResultToPb(r.result);
  if (result !== 0) {
    out.push(0x08);
    varint(out, result);
  }
  if (r.id !== "") {
    const b = utf8.encode(r.id);
    out.push(0x12);
    varint(out, b.length);
    for (let i = 0; i < b.length; i++) out.push(b[i]!);
  }
  if (r.amountNanos !== 0n) {
    out.push(0x18);
    varint64(out, r.amountNanos);
  }
  if (r.timestampUs !== null) {
    const us = r.timestampUs;
    const seconds = us >= 0n ? us / US_PER_SECOND : -((-us + US_PER_SECOND - 1n) / US_PER_SECOND);
    const nanos = Number(us - seconds * US_PER_SECOND) * 1000;
    const ts: number[] = [];
    if (seconds !== 0n) {
      ts.push(0x08);
      varint64(ts, seconds);
    }
    if (nanos !== 0) {
      ts.push(0x10);
      varint(ts, nanos);
    }
    out.push(0x22);
    varint(out, ts.length);
    for (const b of ts) out.push(b);
  }
  return Uint8Array.from(out);
}

const FLAG_FIELDS: ReadonlyArray<keyof TransferFlags> = [
  "linked",
  "pending",
  "postPendingTransfer",
  "voidPendingTransfer",
  "balancingDebit",
  "balancingCredit",
  "closingDebit",
  "closingCredit",
  "imported",
];

/**
 * NewTransfer fields (proto/nanobill/ledger/v1/ledger.proto): 1 id, 2 debit_account_id,
 * 3 credit_account_id, 4 amount_nanos int64, 5 unit, 6 pending_id, 7 timeout_seconds uint32,
 * 8 code uint32, 9 flags TransferFlags {1..9 bool}, 10 references map<string,string> {1 key,
 * 2 value}, 11 timestamp {1 seconds int64, 2 nanos int32}.
 *
 * Read exactly as protobuf-es 2.13's fromBinary reads it (from-binary.js readMessage/readField/
 * readMapEntry), malformed bytes included:
 * - a known field is read by its declared type whatever wire type its tag carries (readField
 *   ignores the wire type of singular fields): amount_nanos sent as `22 01 05` reads the varint 1
 *   and then fails on the tag `05` (field 0); a string sent as a varint reads the varint as a
 *   length. Only unknown field numbers are skipped by their wire type;
 * - a sub-message is read `while (pos < end)`: its last field may run past its length (the parent
 *   goes on from there); repeated message fields merge; the last scalar wins;
 * - in a map entry, field 1 is the key and 2 the value (read by type), any other field number is
 *   consumed as a bare tag without skipping its payload (readMapEntry has no default case); a
 *   missing key or value is "";
 * - groups in unknown fields nest at most 99 deep at the top level, 98 in a sub-message.
 */
export function decodeNewTransfer(bytes: Uint8Array): NewTransfer {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new ProtoReader(buf, 0, buf.length);
  const t: NewTransfer = {
    id: "",
    debitAccountId: "",
    creditAccountId: "",
    amountNanos: 0n,
    unit: "",
    pendingId: "",
    timeoutSeconds: 0,
    code: 0,
    flags: { linked: false, pending: false, postPendingTransfer: false, voidPendingTransfer: false, balancingDebit: false, balancingCredit: false, closingDebit: false, closingCredit: false, imported: false },
    references: {},
    timestampUs: 0n,
  };
  let ts: { seconds: bigint; nanos: number } | undefined;
  while (r.pos < r.end) {
    const { no, wt } = tagOf(r);
    switch (no) {
      case 1:
        t.id = r.string();
        break;
      case 2:
        t.debitAccountId = r.string();
        break;
      case 3:
        t.creditAccountId = r.string();
        break;
      case 4:
        t.amountNanos = BigInt.asIntN(64, r.varint64());
        break;
      case 5:
        t.unit = r.string();
        break;
      case 6:
        t.pendingId = r.string();
        break;
      case 7:
        t.timeoutSeconds = r.uint32();
        break;
      case 8:
        t.code = r.uint32();
        break;
      case 9: {
        const end = r.subEnd();
        while (r.pos < end) {
          const g = tagOf(r);
          const name = FLAG_FIELDS[g.no - 1];
          if (name !== undefined) t.flags[name] = r.varint64() !== 0n;
          else r.skip(g.wt, g.no, SUB_MESSAGE_GROUP_LIMIT);
        }
        break;
      }
      case 10: {
        const end = r.subEnd();
        let key = "";
        let value = "";
        while (r.pos < end) {
          const g = tagOf(r);
          if (g.no === 1) key = r.string();
          else if (g.no === 2) value = r.string();
        }
        t.references[key] = value;
        break;
      }
      case 11: {
        ts ??= { seconds: 0n, nanos: 0 };
        const end = r.subEnd();
        while (r.pos < end) {
          const g = tagOf(r);
          if (g.no === 1) ts.seconds = BigInt.asIntN(64, r.varint64());
          else if (g.no === 2) ts.nanos = r.uint32() | 0;
          else r.skip(g.wt, g.no, SUB_MESSAGE_GROUP_LIMIT);
        }
        break;
      }
      default:
        r.skip(wt, no, TOP_LEVEL_GROUP_LIMIT);
    }
  }
  // After the whole message is read, as newTransferFromPb(fromBinary(...)) checks it: malformed
  // bytes throw WireError first, then nanos out of range throws TimestampNanosError.
  if (ts !== undefined) t.timestampUs = timestampPartsToUs(ts.seconds, ts.nanos);
  return t;
}
