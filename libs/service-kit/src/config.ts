/** A bad or missing configuration value; the message always names the variable. */
export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

export type Env = Record<string, string | undefined>;

function raw(env: Env, name: string): string | undefined {
  const v = env[name];
  if (v === undefined) return undefined;
  const t = v.trim();
  return t === "" ? undefined : t;
}

/** A string variable; without a default, a missing/empty value is a ConfigError. */
export function envString(env: Env, name: string, def?: string): string {
  const v = raw(env, name);
  if (v !== undefined) return v;
  if (def !== undefined) return def;
  throw new ConfigError(name, "is required");
}

/** An integer variable within [min, max] (inclusive); a default is used when unset. */
export function envInt(env: Env, name: string, def: number, bounds: { min?: number; max?: number } = {}): number {
  const v = raw(env, name);
  const min = bounds.min ?? Number.MIN_SAFE_INTEGER;
  const max = bounds.max ?? Number.MAX_SAFE_INTEGER;
  let n: number;
  if (v === undefined) {
    n = def;
  } else {
    if (!/^-?\d+$/.test(v.replaceAll("_", ""))) throw new ConfigError(name, `must be an integer, got "${v}"`);
    n = Number(v.replaceAll("_", ""));
    if (!Number.isSafeInteger(n)) throw new ConfigError(name, `is out of range, got "${v}"`);
  }
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

/**
 * A URL variable (any scheme), or undefined when unset; a malformed URL is a ConfigError. The
 * error never repeats the value: URLs carry passwords (DATABASE_URL, REDIS_URL), and a start-up
 * error lands in logs and in the pod's termination message.
 */
export function envUrl(env: Env, name: string): string | undefined {
  const v = raw(env, name);
  if (v === undefined) return undefined;
  try {
    new URL(v);
  } catch {
    throw new ConfigError(name, `must be a URL (scheme://host...; percent-encode reserved characters such as # or @ in a password), got a value of ${v.length} characters (not shown: it may hold a password)`);
  }
  return v;
}

/**
 * A fraction in [0, 1] written as a decimal (`0`, `0.25`, `1`), or the default when unset. For
 * ratios such as trace sampling only: never money (money is bigint nanos or an exact decimal).
 */
export function envFraction(env: Env, name: string, def: number): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  if (!/^(0(\.\d{1,9})?|1(\.0{1,9})?|0?\.\d{1,9})$/.test(v)) throw new ConfigError(name, `must be a decimal between 0 and 1, got "${v}"`);
  return Number(v);
}

const TRUE = new Set(["1", "true", "yes", "on"]);
const FALSE = new Set(["0", "false", "no", "off"]);

/** A boolean variable: 1/true/yes/on or 0/false/no/off (case-insensitive). */
export function envBool(env: Env, name: string, def: boolean): boolean {
  const v = raw(env, name);
  if (v === undefined) return def;
  const l = v.toLowerCase();
  if (TRUE.has(l)) return true;
  if (FALSE.has(l)) return false;
  throw new ConfigError(name, `must be true or false, got "${v}"`);
}

/** One of a fixed set of values. */
export function envEnum<T extends string>(env: Env, name: string, values: readonly T[], def: T): T {
  const v = raw(env, name);
  if (v === undefined) return def;
  if ((values as readonly string[]).includes(v)) return v as T;
  throw new ConfigError(name, `must be one of ${values.join(", ")}, got "${v}"`);
}

/**
 * Variables a program no longer reads (old name -> the name that replaced it). One that is still
 * set is a ConfigError naming both: an ignored old name would silently fall back to a default
 * (an old schema variable would open an empty schema). Call it before reading the new names.
 */
export function envRetired(env: Env, retired: Readonly<Record<string, string>>): void {
  for (const [old, replacement] of Object.entries(retired)) {
    if (raw(env, old) !== undefined) throw new ConfigError(old, `is no longer read: set ${replacement} instead`);
  }
}
