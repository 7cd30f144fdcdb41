export type LogLevel = "debug" | "info" | "warn" | "error";
/** Every LogLevel, lowest first (for config: envEnum(env, "NANOBILL_LOG_LEVEL", LOG_LEVELS, "info")). */
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** JSON-lines logger: one object per line, bigint as decimal string, errors with their stack. */
export interface Logger {
  debug(msg: string, fields?: object): void;
  info(msg: string, fields?: object): void;
  warn(msg: string, fields?: object): void;
  error(msg: string, fields?: object): void;
  child(fields: object): Logger;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message, stack: value.stack };
    for (const [k, v] of Object.entries(value)) out[k] = v;
    if (value.cause !== undefined) out["cause"] = value.cause;
    return out;
  }
  if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
  return value;
}

/** JSON.stringify that never throws: bigint -> string, Error -> {name,message,stack}, cycles -> "[unserializable]". */
export function toJsonLine(obj: object): string {
  try {
    return JSON.stringify(obj, replacer);
  } catch {
    const safe: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(obj)) {
      try {
        JSON.stringify(v, replacer);
        safe[k] = v;
      } catch {
        safe[k] = "[unserializable]";
      }
    }
    return JSON.stringify(safe, replacer);
  }
}

const defaultSink = (line: string): void => {
  process.stdout.write(line + "\n");
};

export function createLogger(opts: {
  service: string;
  level?: LogLevel;
  sink?: (line: string) => void;
  clock?: { now(): Date };
}): Logger {
  const min = RANK[opts.level ?? "info"];
  const sink = opts.sink ?? defaultSink;
  const clock = opts.clock;
  const make = (base: object): Logger => {
    const log = (level: LogLevel, msg: string, fields?: object): void => {
      if (RANK[level] < min) return;
      const ts = (clock ? clock.now() : new Date()).toISOString();
      sink(toJsonLine({ ts, level, service: opts.service, msg, ...base, ...fields }));
    };
    return {
      debug: (m, f) => log("debug", m, f),
      info: (m, f) => log("info", m, f),
      warn: (m, f) => log("warn", m, f),
      error: (m, f) => log("error", m, f),
      child: (f) => make({ ...base, ...f }),
    };
  };
  return make({});
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};
