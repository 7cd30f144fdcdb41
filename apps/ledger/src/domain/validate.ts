/** Shape rules for ids and small maps (pure). */
import {
  ID_BYTES_MAX,
  MAP_KEY_BYTES_MAX,
  MAP_VALUE_BYTES_MAX,
} from "../limits.js";

const ID_RE = /^[A-Za-z0-9._:/@+=-]+$/;

/** An id: 1..ID_BYTES_MAX characters of [A-Za-z0-9._:/@+=-] (ASCII, so characters == bytes). */
export function isValidId(id: string): boolean {
  return typeof id === "string" && id.length > 0 && id.length <= ID_BYTES_MAX && ID_RE.test(id);
}

// In a /u regex a surrogate pair is one code point; only an unpaired surrogate is \p{Cs}.
const UNSTORABLE_RE = /[\u0000\p{Cs}]/u;

/**
 * A string PostgreSQL can store in JSONB: well-formed UTF-16 (no unpaired surrogate, which has no
 * UTF-8 form) and no NUL (U+0000), which JSONB refuses ("unsupported Unicode escape sequence").
 * Either would otherwise pass validation and fail the whole group commit at COPY.
 */
export function isStorableString(s: string): boolean {
  return !UNSTORABLE_RE.test(s);
}

/**
 * A metadata / references map: at most entriesMax entries, non-empty keys, bounded key/value
 * bytes, keys and values storable (isStorableString).
 */
export function isValidSmallMap(m: Record<string, string>, entriesMax: number): boolean {
  const keys = Object.keys(m);
  if (keys.length > entriesMax) return false;
  for (const k of keys) {
    const v = m[k];
    if (typeof v !== "string") return false;
    if (k.length === 0 || Buffer.byteLength(k, "utf8") > MAP_KEY_BYTES_MAX) return false;
    if (Buffer.byteLength(v, "utf8") > MAP_VALUE_BYTES_MAX) return false;
    if (!isStorableString(k) || !isStorableString(v)) return false;
  }
  return true;
}

/** Order-insensitive equality of two string maps. */
export function sameMap(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (!Object.prototype.hasOwnProperty.call(b, k) || a[k] !== b[k]) return false;
  return true;
}
