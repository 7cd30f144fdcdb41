// gRPC length-prefixed messages ("envelopes"): 1 flag byte (bit 0: compressed) + 4 bytes
// big-endian length + the message. Shared by the fast path (requests) and the lean client
// (responses), with connect-es's checks and messages.
import { Code, ConnectError } from "@connectrpc/connect";

export const ENVELOPE_HEADER_BYTES = 5;
export const FLAG_COMPRESSED = 0x01;

/** One envelope around a message. */
export function encodeEnvelope(data: Uint8Array, flags = 0): Uint8Array {
  const out = new Uint8Array(ENVELOPE_HEADER_BYTES + data.byteLength);
  const view = new DataView(out.buffer, out.byteOffset, ENVELOPE_HEADER_BYTES);
  view.setUint8(0, flags);
  view.setUint32(1, data.byteLength);
  out.set(data, ENVELOPE_HEADER_BYTES);
  return out;
}

/**
 * The envelopes of a whole body, one at a time (lazily, so a caller sees errors in the order
 * connect-es raises them): a declared length above readMaxBytes -> ResourceExhausted, a short
 * header or message -> InvalidArgument "protocol error: incomplete envelope".
 */
export function* envelopes(body: Uint8Array, readMaxBytes: number): Generator<{ flags: number; data: Uint8Array }> {
  for (let at = 0; at < body.byteLength; ) {
    if (body.byteLength - at < ENVELOPE_HEADER_BYTES) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
    const view = new DataView(body.buffer, body.byteOffset + at, ENVELOPE_HEADER_BYTES);
    const length = view.getUint32(1);
    if (length > readMaxBytes) throw new ConnectError(`message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted);
    const start = at + ENVELOPE_HEADER_BYTES;
    if (body.byteLength - start < length) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
    at = start + length;
    yield { flags: view.getUint8(0), data: body.subarray(start, at) };
  }
}

/** A compressed envelope when no compression was negotiated (connect-es's message). */
export function assertNotCompressed(flags: number): void {
  if ((flags & FLAG_COMPRESSED) !== 0) throw new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal);
}
