// A protobuf wire-format reader for the hand-written decoders of the ingest paths (metering's
// Event, the ledger's NewTransfer): varints, length-delimited fields, proto3 strings decoded as
// protobuf-es decodes them (invalid UTF-8 throws, a leading BOM is dropped), unknown fields skipped
// (groups included). Every malformed input throws WireError.
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WireError";
  }
}

/** protobuf-es's strict decoder for proto3 strings: invalid UTF-8 throws; a leading BOM is dropped. */
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
export const WT_VARINT = 0;
export const WT_I64 = 1;
export const WT_LEN = 2;
export const WT_SGROUP = 3;
export const WT_EGROUP = 4;
export const WT_I32 = 5;

export class ProtoReader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  /** A varint of at most 64 bits as a bigint (unsigned). */
  varint64(): bigint {
    let lo = 0;
    let hi = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new WireError("truncated varint");
      const b = this.buf[this.pos++]!;
      if (shift < 28) lo |= (b & 0x7f) << shift;
      else if (shift === 28) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >> 4;
      } else hi |= (b & 0x7f) << (shift - 32);
      if (b < 0x80) return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
      shift += 7;
    }
    throw new WireError("varint longer than 10 bytes");
  }

  /** A varint used as a length, tag or small number (< 2^31). */
  uint32(): number {
    let v = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new WireError("truncated varint");
      const b = this.buf[this.pos++]!;
      if (shift < 32) v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
      shift += 7;
    }
    throw new WireError("varint longer than 10 bytes");
  }

  /** The [start, end) of a length-delimited field's payload (advances past it). */
  len(): [number, number] {
    const n = this.uint32();
    const start = this.pos;
    if (n > this.end - start) throw new WireError("length past the end of the message");
    this.pos = start + n;
    return [start, start + n];
  }

  /** A proto3 string: valid UTF-8 or WireError, a leading BOM dropped (as protobuf-es decodes). */
  string(): string {
    const [s, e] = this.len();
    let ascii = true;
    for (let i = s; i < e; i++) {
      if (this.buf[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return this.buf.toString("latin1", s, e);
    try {
      return UTF8.decode(this.buf.subarray(s, e));
    } catch {
      throw new WireError("string field is not valid UTF-8");
    }
  }

  skip(wireType: number, fieldNo: number, depth = 0): void {
    switch (wireType) {
      case WT_VARINT:
        this.varint64();
        return;
      case WT_I64:
        this.advance(8);
        return;
      case WT_LEN:
        this.len();
        return;
      case WT_I32:
        this.advance(4);
        return;
      case WT_SGROUP: {
        if (depth > 100) throw new WireError("groups nested too deep");
        for (;;) {
          const tag = this.uint32();
          const wt = tag & 7;
          if (wt === WT_EGROUP) {
            if (tag >>> 3 !== fieldNo) throw new WireError("mismatched end group");
            return;
          }
          this.skip(wt, tag >>> 3, depth + 1);
        }
      }
      default:
        throw new WireError(`invalid wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (this.end - this.pos < n) throw new WireError("truncated fixed-width field");
    this.pos += n;
  }
}

/** The next field's number and wire type (field number 0 is invalid). */
export function tagOf(r: ProtoReader): { no: number; wt: number } {
  const tag = r.uint32();
  const no = Math.floor(tag / 8);
  if (no === 0) throw new WireError("field number 0");
  return { no, wt: tag & 7 };
}

