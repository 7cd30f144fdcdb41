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
