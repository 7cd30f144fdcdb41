import { PREPARE_AFTER_USES, PREPARED_SQL_CHARS_MAX, PREPARED_STATEMENTS_MAX, STATEMENT_USES_TRACKED_MAX } from "./limits.js";

export interface StatementNameLimits {
  afterUses: number;
  max: number;
  sqlCharsMax: number;
  trackedMax: number;
}

const DEFAULT_LIMITS: StatementNameLimits = {
  afterUses: PREPARE_AFTER_USES,
  max: PREPARED_STATEMENTS_MAX,
  sqlCharsMax: PREPARED_SQL_CHARS_MAX,
  trackedMax: STATEMENT_USES_TRACKED_MAX,
};

/**
 * Which statement texts of one pg Db run as named (prepared) statements: PostgreSQL then parses and
 * plans a text once per connection instead of on every call (the ledger's group commit spends about
 * a quarter less PostgreSQL CPU per transfer: bench/ledger). A text earns a name from its
 * `afterUses`-th use, so one-off statements (migrations, generated multi-row inserts of varying
 * size) do not use up the `max` names. A name is never given to another text (pg refuses that on a
 * connection that prepared it); a retired text (its plan's result type changed under it: a
 * migration) gets a new name, and the old one counts against `max` until the process ends.
 */
export class StatementNames {
  private readonly names = new Map<string, string>();
  private readonly uses = new Map<string, number>();
  private issued = 0;

  constructor(
    private readonly prefix: string,
    private readonly limits: StatementNameLimits = DEFAULT_LIMITS,
  ) {}

  /** The name to run `sql` under, or undefined: run it unnamed. Call once per execution. */
  nameOf(sql: string): string | undefined {
    const known = this.names.get(sql);
    if (known !== undefined) return known;
    if (this.issued >= this.limits.max || sql.length > this.limits.sqlCharsMax) return undefined;
    const n = (this.uses.get(sql) ?? 0) + 1;
    if (n < this.limits.afterUses) {
      if (this.uses.size >= this.limits.trackedMax) this.uses.clear();
      this.uses.set(sql, n);
      return undefined;
    }
    this.uses.delete(sql);
    const name = `${this.prefix}${this.issued++}`;
    this.names.set(sql, name);
    return name;
  }

  /** Forgets `sql`'s name: its next use is prepared again under a new one. */
  retire(sql: string): void {
    if (this.names.delete(sql)) this.uses.set(sql, this.limits.afterUses - 1);
  }

  /** Names given so far (retired ones included). */
  get issuedCount(): number {
    return this.issued;
  }
}

/** PostgreSQL's answer to a named statement whose result columns changed since it was prepared. */
export function isStalePlanError(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown } | null;
  return err?.code === "0A000" && typeof err.message === "string" && err.message.includes("cached plan must not change result type");
}
