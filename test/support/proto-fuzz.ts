// Malformed protobuf input for the hand-written decoders' property tests (apps/ledger and
// apps/metering src/wire.test.ts): random "field soups" of a message shape and byte mutations, and
// the check that a hand decoder throws WireError exactly where protobuf-es 2.13's fromBinary throws
// and otherwise gives the same value. protobuf-es reads a known field by its declared type whatever
// its wire type, so wrong wire types on known fields are the interesting mutations. Test-only: it
// lives under test/, which the image does not ship (it imports fast-check and vitest).
import fc from "fast-check";
import { expect } from "vitest";

type Outcome = { threw: true; wire: boolean; error: unknown } | { threw: false; value: unknown };
function outcome(f: () => unknown, isWireError: (e: unknown) => boolean): Outcome {
  try {
    return { threw: false, value: f() };
  } catch (e) {
    return { threw: true, wire: isWireError(e), error: e };
  }
}
/**
 * The hand decoder must throw WireError exactly where protobuf-es's fromBinary throws, and
 * otherwise give the same domain value: `viaProtobufEs` and `viaHand` decode the same bytes.
 */
export function expectSameDecoding(viaProtobufEs: () => unknown, viaHand: () => unknown, isWireError: (e: unknown) => boolean): void {
  const pb = outcome(viaProtobufEs, isWireError);
  const hand = outcome(viaHand, isWireError);
  if (pb.threw) {
    expect(hand.threw ? hand.wire : hand.value, `fromBinary threw ${String((pb as { error: unknown }).error)}`).toBe(true);
  } else {
    if (hand.threw) throw new Error(`hand decoder threw ${String(hand.error)} where fromBinary decoded`);
    expect(hand.value).toStrictEqual(pb.value);
  }
}

export function varintOf(v: bigint): number[] {
  const out: number[] = [];
  let u = BigInt.asUintN(64, v);
  while (u > 0x7fn) {
    out.push(Number(u & 0x7fn) | 0x80);
    u >>= 7n;
  }
  out.push(Number(u));
  return out;
}
/** A varint of v padded with redundant continuation bytes to `bytes` bytes (may exceed 10). */
export function paddedVarint(v: bigint, bytes: number): number[] {
  const out = varintOf(v);
  while (out.length < bytes) {
    out[out.length - 1]! |= 0x80;
    out.push(0);
  }
  return out;
}
export const tagBytes = (no: number, wt: number) => varintOf(BigInt(no) * 8n + BigInt(wt));

/** A message's known field numbers with their declared wire types, and the shapes of its message-typed (or map entry) fields. */
export type Shape = { known: Record<number, number>; sub: Record<number, Shape> };
/** The fields inside a skipped group: any numbers, all skipped. */
const GROUP_BODY: Shape = { known: { 1: 0, 2: 2, 3: 5 }, sub: {} };

const anyVarint = fc.oneof(
  { weight: 4, arbitrary: fc.bigInt({ min: 0n, max: 300n }).map(varintOf) },
  { weight: 3, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(varintOf) },
  { weight: 2, arbitrary: fc.tuple(fc.bigInt({ min: 0n, max: 2n ** 35n - 1n }), fc.integer({ min: 1, max: 12 })).map(([v, n]) => paddedVarint(v, n)) },
  { weight: 1, arbitrary: fc.array(fc.integer({ min: 0x80, max: 0xff }), { minLength: 1, maxLength: 11 }) }, // unterminated
);
const smallBytes = fc.uint8Array({ maxLength: 10 }).map((b) => [...b]);
const utf8Bytes = fc.string({ unit: "grapheme", maxLength: 6 }).map((s) => [...new TextEncoder().encode(s)]);
/** A length prefix for a payload of n bytes: right, off by a little, redundant, or 2^32 + n (uint32 wraps). */
const lengthOf = (n: number) =>
  fc.oneof(
    { weight: 6, arbitrary: fc.constant(varintOf(BigInt(n))) },
    { weight: 1, arbitrary: fc.integer({ min: -3, max: 3 }).map((d) => varintOf(BigInt(Math.max(0, n + d)))) },
    { weight: 1, arbitrary: fc.constant(paddedVarint(BigInt(n), 5)) },
    { weight: 1, arbitrary: fc.constant(varintOf(2n ** 32n + BigInt(n))) },
  );
/** A tag that protobuf-es must refuse: more than 32 bits, > 5 bytes, field 0, wire type 6/7. */
const badTag = fc.oneof(
  fc.integer({ min: 0x10, max: 0x7f }).map((last) => [0x80, 0x80, 0x80, 0x80, last]),
  fc.integer({ min: 6, max: 11 }).map((n) => paddedVarint(8n, n)),
  fc.bigInt({ min: 2n ** 32n, max: 2n ** 40n }).map(varintOf),
  fc.integer({ min: 0, max: 7 }).map((wt) => varintOf(BigInt(wt))),
  fc.integer({ min: 1, max: 20 }).chain((no) => fc.constantFrom(6, 7).map((wt) => tagBytes(no, wt))),
);

const shapeCache = new Map<string, fc.Arbitrary<number[]>>();
const shapeIds = new Map<Shape, number>();
/** Random fields for a message of this shape: known numbers with any wire type, unknown ones, groups, bad tags. */
function fieldsOf(shape: Shape, depth: number, subDepthMax: number): fc.Arbitrary<number[]> {
  const id = shapeIds.get(shape) ?? shapeIds.set(shape, shapeIds.size).get(shape)!;
  const key = `${id}/${depth}/${subDepthMax}`;
  const cached = shapeCache.get(key);
  if (cached) return cached;
  const known = Object.keys(shape.known).map(Number);
  const no = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(...known) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 40 }) },
    { weight: 1, arbitrary: fc.constantFrom(2 ** 29 - 1, 2 ** 28, 2047, 2048) },
  );
  // Mostly the declared wire type (so that most inputs decode and values get compared), often another.
  const wtFor = (n: number) =>
    fc.oneof(
      { weight: shape.known[n] === undefined ? 0 : 12, arbitrary: fc.constant(shape.known[n] ?? 0) },
      { weight: 5, arbitrary: fc.integer({ min: 0, max: 5 }) },
      { weight: 1, arbitrary: fc.constantFrom(6, 7) },
    );
  const field: fc.Arbitrary<number[]> = fc.oneof(
    { weight: 20, arbitrary: no.chain((n) => wtFor(n).map((w) => [n, w] as const)).chain(([n, w]) => payload(shape, depth, n, w, subDepthMax).map((p) => [...tagBytes(n, w), ...p])) },
    { weight: 1, arbitrary: fc.tuple(badTag, anyVarint).map(([t, v]) => [...t, ...v]) },
  );
  const arb = fc.array(field, { maxLength: depth === 0 ? 6 : 3 }).map((fs) => fs.flat());
  shapeCache.set(key, arb);
  return arb;
}
function payload(shape: Shape, depth: number, no: number, wt: number, subDepthMax: number): fc.Arbitrary<number[]> {
  switch (wt) {
    case 0:
      return anyVarint;
    case 1:
      return fc.uint8Array({ minLength: 8, maxLength: 8 }).map((b) => [...b]);
    case 5:
      return fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => [...b]);
    case 2: {
      const sub = shape.sub[no];
      const body = sub !== undefined && depth < subDepthMax ? fc.oneof({ weight: 4, arbitrary: fieldsOf(sub, depth + 1, subDepthMax) }, { weight: 1, arbitrary: smallBytes })
          : fc.oneof({ weight: 4, arbitrary: utf8Bytes }, { weight: 1, arbitrary: smallBytes }, { weight: 1, arbitrary: anyVarint });
      return body.chain((b) => lengthOf(b.length).map((l) => [...l, ...b]));
    }
    case 3: {
      const inner = depth < 2 ? fieldsOf(GROUP_BODY, depth + 1, subDepthMax) : fc.constant([] as number[]);
      const end = fc.oneof({ weight: 5, arbitrary: fc.constant(no) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 40 }) });
      return fc.tuple(inner, end).map(([b, e]) => [...b, ...tagBytes(e, 4)]);
    }
    default:
      return fc.oneof(fc.constant([] as number[]), anyVarint);
  }
}

/** Fields of this message, or one well-framed sub-message (recursively) whose fields are random: reaches map values and nested fields often. */
function nestedSoup(shape: Shape, depth: number, subDepthMax: number): fc.Arbitrary<number[]> {
  const subs = Object.entries(shape.sub).map(([n, sub]) =>
    fc.oneof(fieldsOf(sub, depth + 1, subDepthMax), nestedSoup(sub, depth + 1, subDepthMax)).map((body) => [...tagBytes(Number(n), 2), ...varintOf(BigInt(body.length)), ...body]),
  );
  return subs.length === 0 ? fieldsOf(shape, depth, subDepthMax) : fc.oneof(fieldsOf(shape, depth, subDepthMax), ...subs);
}
/**
 * Random bytes for a message of this shape: fields with known numbers (mostly their declared wire
 * type, often another), unknown numbers, groups, bad tags and lengths, and well-framed nested
 * sub-messages with random contents (random payloads of sub-messages down to `subDepthMax`).
 */
export const soupOf = (shape: Shape, subDepthMax = 2): fc.Arbitrary<number[]> =>
  fc.array(nestedSoup(shape, 0, subDepthMax), { minLength: 1, maxLength: 3 }).map((parts) => parts.flat());

/** null 2 times in 3, so that most mutated inputs still decode and their values get compared. */
const rarely = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | null> => fc.oneof({ weight: 2, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: a });
/** Mutations of any bytes: truncate, flip one byte, change a byte's low 3 bits (a tag's wire type). */
export function mutated(base: fc.Arbitrary<number[]>): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(base, rarely(fc.nat()), rarely(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }))), rarely(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 }))))
    .map(([b, cut, flip, wt]) => {
      const out = [...b];
      if (flip && out.length > 0) out[flip[0] % out.length] = flip[1];
      if (wt && out.length > 0) out[wt[0] % out.length] = (out[wt[0] % out.length]! & ~7) | wt[1];
      return Uint8Array.from(cut !== null && out.length > 0 ? out.slice(0, cut % (out.length + 1)) : out);
    });
}

