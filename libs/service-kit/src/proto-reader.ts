// A protobuf wire-format reader for the hand-written decoders of the ingest paths (metering's
// Event, the ledger's NewTransfer). It reproduces protobuf-es 2.13's BinaryReader
// (@bufbuild/protobuf/dist/esm/wire/binary-encoding.js, wire/varint.js) so that a hand decoder
// throws exactly where fromBinary throws and decodes the same bytes to the same values:
//
// - Every read is bounded by the end of the whole buffer, not by the enclosing sub-message:
//   protobuf-es reads a sub-message's fields `while (pos < end)` and lets the last field run past
//   `end` (the parent then continues from there). Reading past the buffer throws ("premature EOF").
// - tag(): a uint32 varint of at most 5 bytes whose 5th byte is <= 0x0f ("illegal tag: varint
//   overflows uint32"; so field numbers are < 2^29), field number >= 1 and wire type <= 5.
// - uint32() (lengths, uint32/int32 fields): the low 32 bits of a varint of at most 10 bytes.
// - varint64(): the low 64 bits of a varint of at most 10 bytes (a 10th byte with the
//   continuation bit throws "invalid varint").
// - strings: strict UTF-8 (proto3 utf8_validation = VERIFY); a leading BOM is dropped.
// - skip() of an unknown field: a varint of any length; 8 / 4 bytes for I64 / I32; a length-
//   delimited payload; a group up to its matching end-group tag, nested at most `recursionLimit`
//   deep; a lone end-group tag throws.
//
// A KNOWN field is read by its declared type whatever wire type its tag carries, as protobuf-es's
// readField does (it ignores the wire type of singular fields; only repeated scalars look at it,
// to accept the packed encoding). Decoders must therefore switch on the field number only.
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

/** protobuf-es's default recursion limit (makeReadContext): a message at depth d skips groups nested up to 100 - d deep. */
export const RECURSION_LIMIT = 100;

export class ProtoReader {
  pos: number;
  /**
   * @param end the end of the readable bytes: the end of the whole encoded message (reads of a
   * sub-message are bounded by the whole message, as in protobuf-es).
   */
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  /** A varint of at most 10 bytes as an unsigned bigint of its low 64 bits (protobuf-es varint64read). */
  varint64(): bigint {
    let lo = 0;
    let hi = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new WireError("premature end of message in a varint");
      const b = this.buf[this.pos++]!;
      if (shift < 28) lo |= (b & 0x7f) << shift;
      else if (shift === 28) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >> 4;
      } else hi |= (b & 0x7f) << (shift - 32);
      if (b < 0x80) return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
      shift += 7;
    }
    throw new WireError("invalid varint (longer than 10 bytes)");
  }

  /** The low 32 bits (unsigned) of a varint of at most 10 bytes (protobuf-es varint32read). */
  uint32(): number {
    let v = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new WireError("premature end of message in a varint");
      const b = this.buf[this.pos++]!;
      if (i < 4) v |= (b & 0x7f) << (7 * i);
      else if (i === 4) v |= (b & 0x0f) << 28;
      if (b < 0x80) return v >>> 0;
    }
    throw new WireError("invalid varint (longer than 10 bytes)");
  }

  /** A tag as protobuf-es's BinaryReader.tag() reads it: [field number, wire type]. */
  tag(): { no: number; wt: number } {
    const start = this.pos;
    const tag = this.uint32();
    const n = this.pos - start;
    if (n > 5 || (n === 5 && this.buf[this.pos - 1]! > 0x0f)) throw new WireError("illegal tag: varint overflows uint32");
    const no = tag >>> 3;
    const wt = tag & 7;
    if (no === 0 || wt > 5) throw new WireError(`illegal tag: field no ${no} wire type ${wt}`);
    return { no, wt };
  }

  /** The [start, end) of a length-delimited payload (advances past it). */
  len(): [number, number] {
    const n = this.uint32();
    const start = this.pos;
    if (n > this.end - start) throw new WireError("length past the end of the message");
    this.pos = start + n;
    return [start, start + n];
  }

  /**
   * The end of a sub-message (or map entry) whose length is read here; the reader stays at the
   * start of its fields. protobuf-es does not check the length against the buffer up front, but
   * a sub-message running past the buffer always ends in a read past it, which throws.
   */
  subEnd(): number {
    const n = this.uint32();
    if (n > this.end - this.pos) throw new WireError("length past the end of the message");
    return this.pos + n;
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

  /**
   * Skips an unknown field as protobuf-es's BinaryReader.skip does. recursionLimit: how deep
   * groups may nest (protobuf-es passes 100 - the message depth: 99 at the top level).
   */
  skip(wireType: number, fieldNo: number, recursionLimit: number = RECURSION_LIMIT - 1): void {
    switch (wireType) {
      case WT_VARINT:
        // Any number of continuation bytes (protobuf-es's skip does not cap the length).
        for (;;) {
          if (this.pos >= this.end) throw new WireError("premature end of message in a varint");
          if (this.buf[this.pos++]! < 0x80) return;
        }
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
        if (recursionLimit <= 0) throw new WireError("groups nested too deep");
        for (;;) {
          const t = this.tag();
          if (t.wt === WT_EGROUP) {
            if (t.no !== fieldNo) throw new WireError("invalid end group tag");
            return;
          }
          this.skip(t.wt, t.no, recursionLimit - 1);
        }
      }
      default:
        throw new WireError(`cannot skip wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (this.end - this.pos < n) throw new WireError("premature end of message in a fixed-width field");
    this.pos += n;
  }
}

/** The next field's number and wire type, read strictly as protobuf-es reads a tag. */
export function tagOf(r: ProtoReader): { no: number; wt: number } {
  return r.tag();
}
