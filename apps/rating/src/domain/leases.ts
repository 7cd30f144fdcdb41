/**
 * Partition lease shares (pure): how many of the feed's partitions one consumer process should
 * hold, given the live members, and which to give up first. Every member computes the same shares
 * from the same member list (sorted by owner id), and the shares add up to the partition count:
 * floor(P / N) each, plus one for the first P mod N members.
 */

/** leaseShare: the number of partitions `me` should hold (0 when it is not a member). */
export function leaseShare(partitions: number, members: readonly string[], me: string): number {
  const sorted = [...new Set(members)].sort();
  const rank = sorted.indexOf(me);
  if (rank < 0 || partitions <= 0) return 0;
  const n = sorted.length;
  return Math.floor(partitions / n) + (rank < partitions % n ? 1 : 0);
}

/**
 * leasesToRelease: the partitions to give up so that at most `share` stay held: the highest
 * partition numbers first (a joining member then takes them; the rest stay where they are).
 */
export function leasesToRelease(held: readonly number[], share: number): number[] {
  const extra = held.length - Math.max(0, share);
  if (extra <= 0) return [];
  return [...held].sort((a, b) => b - a).slice(0, extra);
}
