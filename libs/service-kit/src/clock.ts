import { readFileSync } from "node:fs";
/** The only source of "now" for domain code (inject it; tests use fixedClock). */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = {
  now: () => new Date(),
};

/** A clock that stands still until advanced. */
export function fixedClock(d: Date): Clock & { advance(ms: number): void; set(d: Date): void } {
  let t = d.getTime();
  return {
    now: () => new Date(t),
    advance(ms: number) {
      t += ms;
    },
    set(nd: Date) {
      t = nd.getTime();
    },
  };
}

/** How long a file clock reuses the offset it read (ms). */
export const FILE_CLOCK_REREAD_MS = 20;

/**
 * The process clock from the environment: the system clock, or, when NANOBILL_TEST_CLOCK_FILE
 * names a file, the system clock plus the offset in milliseconds written in that file (an integer;
 * missing or empty = 0; re-read at most every FILE_CLOCK_REREAD_MS). For tests only: it lets a
 * test move every process of a stack through billing periods together. A malformed offset throws
 * (naming the variable) rather than run on a wrong time.
 */
export function clockFromEnv(env: Record<string, string | undefined>): Clock {
  const file = env.NANOBILL_TEST_CLOCK_FILE;
  if (file === undefined || file === "") return systemClock;
  let offset = 0;
  let readAt = -Infinity;
  const read = (): number => {
    const t = Date.now();
    if (t - readAt < FILE_CLOCK_REREAD_MS) return offset;
    let text = "";
    try {
      text = readFileSync(file, "utf8").trim();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    if (text !== "" && !/^-?\d{1,15}$/.test(text)) throw new Error(`NANOBILL_TEST_CLOCK_FILE: ${file} must hold an integer offset in ms, got ${JSON.stringify(text.slice(0, 40))}`);
    offset = text === "" ? 0 : Number(text);
    readAt = t;
    return offset;
  };
  read();
  return { now: () => new Date(Date.now() + read()) };
}
