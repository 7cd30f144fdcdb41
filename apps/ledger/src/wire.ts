// Hand-written protobuf for CreateTransfers, the ledger's batch hot path (up to 8,190 items):
// decodeNewTransfer reads one encoded NewTransfer straight into the domain's NewTransfer (what
// newTransferFromPb(fromBinary(...)) gives: wire.test.ts checks it on random transfers with
// unknown and repeated fields), and encodeTransferItemResult writes one result.
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
import { ProtoReader, tagOf, WT_LEN, WT_VARINT } from "@nanobill/service-kit";
import type { CreateTransferItemResult } from "./domain/results.js";
import type { NewTransfer, TransferFlags } from "./domain/types.js";
import { transferResultToPb } from "./mapping.js";

export { WireError } from "@nanobill/service-kit";

const US_PER_SECOND = 1_000_000n;

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
 * 2 value}, 11 timestamp {1 seconds int64, 2 nanos int32}. Repeated message fields merge, the last
 * scalar wins, a field with another wire type is skipped as unknown (as protobuf-es does).
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
    if (wt === WT_LEN) {
      switch (no) {
        case 1:
          t.id = r.string();
          continue;
        case 2:
          t.debitAccountId = r.string();
          continue;
        case 3:
          t.creditAccountId = r.string();
          continue;
        case 5:
          t.unit = r.string();
          continue;
        case 6:
          t.pendingId = r.string();
          continue;
        case 9: {
          const [start, end] = r.len();
          const f = new ProtoReader(buf, start, end);
          while (f.pos < end) {
            const g = tagOf(f);
            const name = g.wt === WT_VARINT ? FLAG_FIELDS[g.no - 1] : undefined;
            if (name !== undefined) t.flags[name] = f.varint64() !== 0n;
            else f.skip(g.wt, g.no);
          }
          continue;
        }
        case 10: {
          const [start, end] = r.len();
          const e = new ProtoReader(buf, start, end);
          let key = "";
          let value = "";
          while (e.pos < end) {
            const g = tagOf(e);
            if (g.no === 1 && g.wt === WT_LEN) key = e.string();
            else if (g.no === 2 && g.wt === WT_LEN) value = e.string();
            else e.skip(g.wt, g.no);
          }
          t.references[key] = value;
          continue;
        }
        case 11: {
          ts ??= { seconds: 0n, nanos: 0 };
          const [start, end] = r.len();
          const e = new ProtoReader(buf, start, end);
          while (e.pos < end) {
            const g = tagOf(e);
            if (g.no === 1 && g.wt === WT_VARINT) ts.seconds = BigInt.asIntN(64, e.varint64());
            else if (g.no === 2 && g.wt === WT_VARINT) ts.nanos = Number(BigInt.asIntN(32, e.varint64()));
            else e.skip(g.wt, g.no);
          }
          continue;
        }
      }
    } else if (wt === WT_VARINT) {
      switch (no) {
        case 4:
          t.amountNanos = BigInt.asIntN(64, r.varint64());
          continue;
        case 7:
          t.timeoutSeconds = Number(BigInt.asUintN(32, r.varint64()));
          continue;
        case 8:
          t.code = Number(BigInt.asUintN(32, r.varint64()));
          continue;
      }
    }
    r.skip(wt, no);
  }
  if (ts !== undefined) t.timestampUs = ts.seconds * US_PER_SECOND + BigInt(Math.floor(ts.nanos / 1000));
  return t;
}
