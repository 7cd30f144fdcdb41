// Request JSON whose numbers JSON.parse would round. Connect/gRPC JSON requests are decoded by
// connect-es with JSON.parse + protobuf-es fromJson, which take an int64 sent as a bare JSON number
// past 2^53 (proto3 JSON sends int64 as a string) after JSON.parse has rounded it: 9007199254740993
// was stored as 9007199254740992 and answered as accepted. Node 20's JSON.parse gives no access to a
// number's source text, so the text is scanned before it is parsed: a native regular expression
// finds whether any number literal could be such an integer (16+ integer digits, or an exponent);
// only then does a linear scan walk the text to name the field. startServer installs it as the
// text decoder of connect-es's JSON serialization, so every JSON request (Connect unary, GET and
// streaming, gRPC-JSON, gRPC-Web-JSON) of every service goes through it.
import { invalidArgument } from "./errors.js";

/**
 * A number literal after `:`, `[` or `,` (the only places a JSON value follows) that could denote an
 * integer beyond 2^53-1: at least 16 integer digits (2^53 has 16), or an exponent. False positives
 * (such text inside a string) only cost the exact scan.
 */
const CANDIDATE = /[:[,][ \t\n\r]*-?(?:\d{16}|\d+(?:\.\d+)?[eE])/;
const NUMBER = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** Bounds of the texts an error quotes (a literal or a key can be megabytes long). */
const FIELD_CHARS_MAX = 256;
const LITERAL_CHARS_MAX = 40;

const cut = (s: string, max: number) => (s.length > max ? `${s.slice(0, max)}…` : s);

/** The end (index of the closing quote) of the JSON string opening at `start`, or -1. */
function stringEnd(text: string, start: number): number {
  let i = start + 1;
  for (;;) {
    const q = text.indexOf('"', i);
    if (q < 0) return -1;
    let backslashes = 0;
    for (let j = q - 1; text.charCodeAt(j) === 0x5c; j--) backslashes++;
    if (backslashes % 2 === 0) return q;
    i = q + 1;
  }
}

function keyOf(text: string, start: number, end: number): string {
  const raw = text.slice(start + 1, end);
  if (!raw.includes("\\")) return raw;
  try {
    return JSON.parse(text.slice(start, end + 1)) as string;
  } catch {
    return raw;
  }
}

interface Frame {
  array: boolean;
  index: number;
  key: string;
}

function pathOf(stack: Frame[]): string {
  let out = "";
  for (const f of stack) out += f.array ? `[${f.index}]` : out === "" ? f.key : `.${f.key}`;
  return out === "" ? "request" : cut(out, FIELD_CHARS_MAX);
}

/**
 * The first number literal of a JSON text whose value is an integer of magnitude above 2^53-1
 * (JSON.parse would give another integer), with its field path (`events[0].properties.n.intValue`);
 * undefined when there is none. Malformed JSON ends the scan (the parser refuses it). Linear in the
 * text; texts without a candidate literal cost one native regular-expression test.
 */
export function findUnsafeJsonInteger(text: string): { field: string; literal: string } | undefined {
  if (!CANDIDATE.test(text)) return undefined;
  const stack: Frame[] = [];
  let expectKey = false;
  const n = text.length;
  for (let i = 0; i < n; ) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const end = stringEnd(text, i);
      if (end < 0) return undefined;
      const top = stack[stack.length - 1];
      if (expectKey && top !== undefined && !top.array) top.key = keyOf(text, i, end);
      expectKey = false;
      i = end + 1;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(text);
      if (m === null) return undefined;
      const v = Number(m[0]);
      if (Number.isInteger(v) && !Number.isSafeInteger(v)) return { field: pathOf(stack), literal: cut(m[0], LITERAL_CHARS_MAX) };
      i += m[0].length;
    } else {
      if (c === 0x7b /* { */) {
        stack.push({ array: false, index: 0, key: "" });
        expectKey = true;
      } else if (c === 0x5b /* [ */) {
        stack.push({ array: true, index: 0, key: "" });
        expectKey = false;
      } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
        stack.pop();
        expectKey = false;
      } else if (c === 0x2c /* , */) {
        const top = stack[stack.length - 1];
        if (top === undefined) return undefined;
        if (top.array) top.index++;
        else expectKey = true;
      }
      i++;
    }
  }
  return undefined;
}

/**
 * The text decoder of connect-es's JSON serialization (jsonOptions.textDecoder): UTF-8 as
 * TextDecoder, refusing an integer beyond 2^53-1 sent as a bare JSON number with InvalidArgument
 * naming its field (connect-es passes a ConnectError through as it is).
 */
export function createJsonRequestDecoder(): { decode(input?: Uint8Array): string } {
  const utf8 = new TextDecoder();
  return {
    decode(input) {
      const text = utf8.decode(input);
      const bad = findUnsafeJsonInteger(text);
      if (bad !== undefined) {
        throw invalidArgument(bad.field, `${bad.literal} is an integer beyond 2^53-1 sent as a JSON number, which loses precision; send 64-bit integers as JSON strings`);
      }
      return text;
    },
  };
}
