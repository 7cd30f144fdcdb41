// Varint helpers for the hand-written protobuf encoders (metering's results, the SDK's events):
// the sizes and bytes protobuf-es writes. The reading side is proto-reader.ts.

const TWO_64 = 1n << 64n;

/** Bytes of a varint of a non-negative safe integer. */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Bytes of a varint of an unsigned 64-bit value. */
export function varint64Size(u: bigint): number {
  if (u <= 0x1fffffffffffffn) return varintSize(Number(u));
  let size = 1;
  while (u >= 0x80n) {
    u >>= 7n;
    size++;
  }
  return size;
}

/** int64 as protobuf encodes it: two's complement in 64 bits, as an unsigned varint. */
export function int64Unsigned(v: bigint): bigint {
  return v < 0n ? v + TWO_64 : v;
}

/** Writes a varint of a non-negative safe integer at pos; returns the position after it. */
export function writeVarint(buf: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    buf[pos++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}

/** Writes a varint of an unsigned 64-bit value at pos; returns the position after it. */
export function writeVarint64(buf: Uint8Array, pos: number, u: bigint): number {
  if (u <= 0x1fffffffffffffn) return writeVarint(buf, pos, Number(u));
  while (u >= 0x80n) {
    buf[pos++] = Number(u & 0x7fn) | 0x80;
    u >>= 7n;
  }
  buf[pos++] = Number(u);
  return pos;
}
