/**
 * Who owns which shard, for operators (GET /api/v1/admin/shards): the live owner from etcd (the
 * keys src/scheduler/shard-ownership.ts writes) and the fence from SQL (the epoch the owner
 * writes under, and whether its last owner let it go in order).
 */
import type { Etcd3 } from "etcd3";
import type { Databases } from "../db/databases.ts";

export interface ShardView {
  shard: number;
  /** Index of the database (DATABASE_URLS) holding the shard. */
  database: number;
  /** The member holding the shard's etcd key now; null while nobody does. */
  owner: string | null;
  /** The fence epoch of the latest owner (null: never owned). */
  epoch: string | null;
  /** The member that took that epoch, and when. */
  fenced_by: string | null;
  since: string | null;
  /** The latest owner released the shard in order (all it marked was published or put back). */
  released: boolean;
}

interface FenceRow { shard_id: number; epoch: string; owner: string; released_epoch: string | null; updated_at: Date }

export async function readOwnership(etcd: Etcd3, prefix: string, dbs: Databases): Promise<{ members: string[]; shards: ShardView[] }> {
  const base = prefix.replace(/\/$/, "");
  const [owners, members, fences] = await Promise.all([
    etcd.getAll().prefix(`${base}/shards/`).strings(),
    etcd.getAll().prefix(`${base}/members/`).keys(),
    Promise.all(dbs.all.map((sql) => sql<FenceRow[]>`SELECT shard_id, epoch::text, owner, released_epoch::text, updated_at FROM shard_fences`)),
  ]);
  const fence = new Map(fences.flat().map((f) => [f.shard_id, f]));
  return {
    members: members.map((k) => k.slice(`${base}/members/`.length)).sort(),
    shards: Array.from({ length: dbs.shardCount }, (_, shard) => {
      const f = fence.get(shard);
      return {
        shard,
        database: dbs.indexOf(shard),
        owner: owners[`${base}/shards/${shard}`] ?? null,
        epoch: f?.epoch ?? null,
        fenced_by: f?.owner ?? null,
        since: f?.updated_at.toISOString() ?? null,
        released: !!f && f.released_epoch === f.epoch,
      };
    }),
  };
}
