// A Db that records how long each statement takes (by its first `keyChars` characters, whitespace
// collapsed; COPYs as "COPY <table>"), for benchmarks that split a commit into its statements.
import type { Db, Queryable, Tx } from "@nanobill/db";

export function timedDb(inner: Db, into: Map<string, number[]>, keyChars = 70): Db {
  const orig = new WeakMap<Queryable, Queryable>();
  const record = (k: string, t: number) => (into.get(k) ?? into.set(k, []).get(k)!).push(performance.now() - t);
  const wrap = (q: Queryable): Tx => {
    const w: Tx = {
      async query(sql, params) {
        const t = performance.now();
        try {
          return await q.query(sql, params);
        } finally {
          record(sql.replace(/\s+/g, " ").trim().slice(0, keyChars), t);
        }
      },
      async pipeline(statements) {
        const t = performance.now();
        try {
          return await (q as Tx).pipeline(statements);
        } finally {
          record(`PIPELINE ${statements.map((x) => x.sql.replace(/\s+/g, " ").trim().slice(0, 24)).join(" | ")}`.slice(0, keyChars * 2), t);
        }
      },
    };
    orig.set(w, q);
    return w;
  };
  return {
    kind: inner.kind,
    schema: inner.schema,
    query: wrap(inner).query,
    transaction: (fn, o) => inner.transaction((tx) => fn(wrap(tx)), o),
    async copyRows(table, cols, rows, tx) {
      const t = performance.now();
      try {
        return await inner.copyRows(table, cols, rows, tx ? orig.get(tx) : undefined);
      } finally {
        record(`COPY ${table}`, t);
      }
    },
    listen: (channel, onNotify) => inner.listen(channel, onNotify),
    close: () => inner.close(),
  };
}
