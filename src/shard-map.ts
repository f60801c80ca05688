/**
 * Job id -> logical shard -> physical database.
 *
 * The shard is a hash of the whole id (not its low bits: at low rates the sequence bits are
 * mostly zero, which would pile every job onto one shard). Logical shards map onto databases
 * in contiguous ranges, so adding a database later moves whole ranges, never single jobs.
 * Both functions are pure and stable: changing them re-homes existing jobs.
 */
const MASK64 = 0xffff_ffff_ffff_ffffn;

/** MurmurHash3's 64-bit finalizer: a cheap, well-mixed bijection on 64-bit integers. */
export function mix64(x: bigint): bigint {
  let h = x & MASK64;
  h ^= h >> 33n;
  h = (h * 0xff51afd7ed558ccdn) & MASK64;
  h ^= h >> 33n;
  h = (h * 0xc4ceb9fe1a85ec53n) & MASK64;
  h ^= h >> 33n;
  return h;
}

export function shardOf(id: bigint, shardCount: number): number {
  return Number(mix64(id) % BigInt(shardCount));
}

export function databaseOf(shard: number, shardCount: number, databaseCount: number): number {
  if (shard < 0 || shard >= shardCount) throw new RangeError(`shard ${shard} outside 0..${shardCount - 1}`);
  return Math.floor((shard * databaseCount) / shardCount);
}

/** The shards a database holds, in order. */
export function shardsOfDatabase(db: number, shardCount: number, databaseCount: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < shardCount; s++) if (databaseOf(s, shardCount, databaseCount) === db) out.push(s);
  return out;
}
