// One pass of some background work at a time (aggregation, backfills). A call while a pass runs
// joins it and asks for one more pass after it, so work that arrived during the pass is not missed.

export interface SingleFlight {
  /** Starts a pass, or joins the running one (and asks for another after it). */
  run(): Promise<void>;
  /** The running pass, if any. */
  readonly running: Promise<void> | undefined;
}

export function singleFlight(pass: () => Promise<void>): SingleFlight {
  let running: Promise<void> | undefined;
  let again = false;
  async function passes(): Promise<void> {
    do {
      again = false;
      await pass();
    } while (again);
  }
  return {
    run() {
      if (running) {
        again = true;
        return running;
      }
      running = passes().finally(() => {
        running = undefined;
      });
      return running;
    },
    get running() {
      return running;
    },
  };
}
