/**
 * A small Map-backed implementation of the WHATWG `Headers` interface for the unary fast path
 * (undici's `Headers` validates every name/value on construction, several microseconds per
 * call). Names are lower-cased; values are joined with ", " on append, like `Headers`.
 * Handlers see it as `Headers` (ctx.requestHeader / responseHeader / responseTrailer); it is
 * iterable as [name, value] pairs, so `new Headers(lite)` copies it.
 */
export class LiteHeaders {
  private readonly m = new Map<string, string>();

  /** From a node:http2 header object (pseudo headers and array values handled). */
  static fromNode(h: Record<string, string | string[] | undefined>): LiteHeaders {
    const out = new LiteHeaders();
    for (const k in h) {
      if (k.charCodeAt(0) === 58 /* ":" */) continue;
      const v = h[k];
      if (v === undefined) continue;
      out.m.set(k, typeof v === "string" ? v : v.join(", "));
    }
    return out;
  }

  get(name: string): string | null {
    return this.m.get(name.toLowerCase()) ?? null;
  }
  has(name: string): boolean {
    return this.m.has(name.toLowerCase());
  }
  set(name: string, value: string): void {
    this.m.set(name.toLowerCase(), String(value));
  }
  append(name: string, value: string): void {
    const k = name.toLowerCase();
    const prev = this.m.get(k);
    this.m.set(k, prev === undefined ? String(value) : `${prev}, ${value}`);
  }
  delete(name: string): void {
    this.m.delete(name.toLowerCase());
  }
  getSetCookie(): string[] {
    const v = this.m.get("set-cookie");
    return v === undefined ? [] : [v];
  }
  forEach(cb: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    for (const [k, v] of this.sorted()) cb.call(thisArg, v, k, this as unknown as Headers);
  }
  *entries(): IterableIterator<[string, string]> {
    yield* this.sorted();
  }
  *keys(): IterableIterator<string> {
    for (const [k] of this.sorted()) yield k;
  }
  *values(): IterableIterator<string> {
    for (const [, v] of this.sorted()) yield v;
  }
  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }
  /** Number of distinct names. */
  get size(): number {
    return this.m.size;
  }
  /** Headers iterate in sorted name order. */
  private sorted(): Array<[string, string]> {
    return [...this.m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }
  /** Writes every entry into a node header object. */
  toNode(out: Record<string, string>, prefix = ""): void {
    for (const [k, v] of this.m) out[prefix + k] = v;
  }
}

/** View a LiteHeaders as Headers (the interface handlers and interceptors use). */
export function asHeaders(h: LiteHeaders): Headers {
  return h as unknown as Headers;
}
