/**
 * Shard ownership planning for one scheduler member. Pure: etcd I/O lives in
 * src/scheduler/shard-ownership.ts, which applies the plan with compare-and-set transactions
 * (create-if-absent), so a plan computed from a stale view can never make two owners.
 *
 * Balance: with S shards and M live members (sorted by id), member i may own
 * floor(S/M) + (i < S mod M ? 1 : 0) shards. A member over its quota releases its surplus; a
 * member under quota claims free shards in its own rendezvous-hash preference order (which
 * spreads concurrent claimers over different shards and keeps choices stable).
 */
export interface OwnershipView {
  me: string;
  members: string[];
  shardCount: number;
  /** shard -> owning member, for owned shards only. */
  owners: Map<number, string>;
}

export interface OwnershipPlan {
  quota: number;
  release: number[];
  claim: number[];
}

export function quotaOf(me: string, members: string[], shardCount: number): number {
  const sorted = [...new Set(members)].sort();
  const i = sorted.indexOf(me);
  if (i < 0) return 0;
  return Math.floor(shardCount / sorted.length) + (i < shardCount % sorted.length ? 1 : 0);
}

/** FNV-1a over "member/shard": the member's preference for a shard (higher first). */
export function preference(member: string, shard: number): number {
  let h = 0x811c9dc5;
  const s = `${member}/${shard}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export function planOwnership(v: OwnershipView): OwnershipPlan {
  const quota = quotaOf(v.me, v.members, v.shardCount);
  const mine: number[] = [];
  const free: number[] = [];
  const live = new Set(v.members);
  for (let s = 0; s < v.shardCount; s++) {
    const owner = v.owners.get(s);
    if (owner === v.me) mine.push(s);
    else if (owner === undefined || !live.has(owner)) free.push(s);
  }
  const byPref = (a: number, b: number) => preference(v.me, b) - preference(v.me, a);
  if (mine.length > quota) {
    // Keep the shards we prefer most; release the rest.
    return { quota, release: mine.sort(byPref).slice(quota), claim: [] };
  }
  // Shards whose owner's key still exists but whose owner left the member list are not
  // claimable yet (the key disappears with the owner's lease); only truly free ones are.
  const claimable = free.filter((s) => !v.owners.has(s)).sort(byPref);
  return { quota, release: [], claim: claimable.slice(0, quota - mine.length) };
}
