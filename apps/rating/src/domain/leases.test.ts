import { describe, expect, it } from "vitest";
import { leaseShare, leasesToRelease } from "./leases.js";

describe("partition lease shares", () => {
  it.each([
    // partitions, members, expected shares in member order
    [4, ["a"], [4]],
    [4, ["a", "b"], [2, 2]],
    [4, ["a", "b", "c"], [2, 1, 1]],
    [5, ["c", "a", "b"], [1, 2, 2]], // ranks by sorted owner id: a=0, b=1, c=2
    [2, ["a", "b", "c"], [1, 1, 0]],
    [64, ["a", "b", "c"], [22, 21, 21]],
    [1, ["a", "b"], [1, 0]],
  ])("%i partitions over %j -> %j (sum = partitions)", (p, members, expected) => {
    const shares = members.map((m) => leaseShare(p, members, m));
    expect(shares).toEqual(expected);
    expect(shares.reduce((a, b) => a + b, 0)).toBe(p);
  });

  it("gives nothing to a process that is not a member, and counts a duplicate once", () => {
    expect(leaseShare(4, ["a", "b"], "z")).toBe(0);
    expect(leaseShare(4, ["a", "a", "b"], "a")).toBe(2);
    expect(leaseShare(0, ["a"], "a")).toBe(0);
  });

  it("releases the highest partitions beyond the share", () => {
    expect(leasesToRelease([0, 3, 1, 2], 2)).toEqual([3, 2]);
    expect(leasesToRelease([0, 1], 2)).toEqual([]);
    expect(leasesToRelease([0, 1], 0)).toEqual([1, 0]);
    expect(leasesToRelease([5], -1)).toEqual([5]);
  });
});
