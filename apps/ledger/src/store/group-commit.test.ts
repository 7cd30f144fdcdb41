import { describe, expect, it } from "vitest";
import { GroupCommitter, JobFailed } from "./group-commit.js";
import { LedgerBusyError, LedgerClosedError } from "./types.js";

describe("GroupCommitter", () => {
  it("applies requests submitted in the same tick in one commit, answering each caller with its own result", async () => {
    const commits: string[][] = [];
    const gc = new GroupCommitter<string, string>(async (ps) => {
      commits.push(ps);
      return ps.map((p) => p.toUpperCase());
    }, { queueItemsMax: 100, itemsPerCommitMax: 100 });
    const res = await Promise.all(["a", "b", "c"].map((p) => gc.submit(p, 1)));
    expect(res).toEqual(["A", "B", "C"]);
    expect(commits).toEqual([["a", "b", "c"]]);
  });

  it("never splits a request and starts a new commit when the next request would pass the per-commit limit", async () => {
    const commits: number[][] = [];
    const gc = new GroupCommitter<number, number>(async (ps) => {
      commits.push(ps);
      return ps;
    }, { queueItemsMax: 100, itemsPerCommitMax: 5 });
    await Promise.all([3, 2, 4, 9].map((n) => gc.submit(n, n)));
    expect(commits).toEqual([[3, 2], [4], [9]]);
  });

  it("queues requests arriving during a commit for the next one", async () => {
    const commits: string[][] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const gc = new GroupCommitter<string, string>(async (ps) => {
      commits.push(ps);
      if (commits.length === 1) await gate;
      return ps;
    }, { queueItemsMax: 100, itemsPerCommitMax: 100 });
    const first = gc.submit("a", 1);
    await new Promise((r) => setImmediate(r));
    const later = [gc.submit("b", 1), gc.submit("c", 1)];
    release();
    await Promise.all([first, ...later]);
    expect(commits).toEqual([["a"], ["b", "c"]]);
  });

  it("refuses a request beyond the queue limit with LedgerBusyError and fails every request of a failed commit", async () => {
    const gc = new GroupCommitter<number, number>(async () => {
      throw new Error("db down");
    }, { queueItemsMax: 4, itemsPerCommitMax: 100 });
    const a = gc.submit(3, 3);
    await expect(gc.submit(2, 2)).rejects.toBeInstanceOf(LedgerBusyError);
    await expect(a).rejects.toThrow("db down");
  });

  it("rejects only the caller whose result is JobFailed (a request that failed alone); the others of the commit get their results", async () => {
    const gc = new GroupCommitter<string, string>(async (ps) => ps.map((p) => (p === "bad" ? new JobFailed(new Error("refused")) : p.toUpperCase())), {
      queueItemsMax: 100,
      itemsPerCommitMax: 100,
    });
    const settled = await Promise.allSettled(["a", "bad", "c"].map((p) => gc.submit(p, 1)));
    expect(settled.map((r) => (r.status === "fulfilled" ? r.value : String(r.reason)))).toEqual(["A", "Error: refused", "C"]);
  });

  it("waits for queued requests on close and refuses new ones", async () => {
    const gc = new GroupCommitter<number, number>(async (ps) => ps, { queueItemsMax: 10, itemsPerCommitMax: 10 });
    const a = gc.submit(1, 1);
    await gc.close();
    await expect(a).resolves.toBe(1);
    await expect(gc.submit(2, 1)).rejects.toBeInstanceOf(LedgerClosedError);
  });
});
