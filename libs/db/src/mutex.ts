import { DbError } from "./errors.js";

/** FIFO async mutex; a waiter gives up after waitMsMax with DbError "unavailable". */
export class Mutex {
  private locked = false;
  private readonly waiters: Array<{ grant: () => void }> = [];

  async run<T>(fn: () => Promise<T>, waitMsMax: number, what: string): Promise<T> {
    await this.acquire(waitMsMax, what);
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  private acquire(waitMsMax: number, what: string): Promise<void> {
    if (!this.locked) {
      this.locked = true;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        grant: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(
          new DbError(
            "unavailable",
            `${what}: waited ${waitMsMax} ms for the embedded database (held by another transaction)`,
          ),
        );
      }, waitMsMax);
      timer.unref?.();
      this.waiters.push(waiter);
    });
  }

  private release(): void {
    const next = this.waiters.shift();
    if (next) next.grant();
    else this.locked = false;
  }
}
