/**
 * Shard fencing in SQL. Winning a shard's etcd key is not enough to write for the shard: the
 * winner bumps the shard's fence epoch here, and every later write of an owner first takes a
 * share lock on the fence row and checks its epoch, so a stale owner's write fails with
 * FencedOutError; the bump waits for any write of the old owner still holding the share lock
 * and rejects all later ones.
 * (A counter in SQL rather than an etcd revision, so that even an etcd cluster rebuilt from
 * scratch, whose revisions restart at 1, cannot hand out an epoch lower than a stale owner's.)
 */
import type postgres from "postgres";
import { FencedOutError } from "../../actors/errors.ts";
import type { Sql } from "./databases.ts";

export interface Fence {
  epoch: string;
  /**
   * The previous owner's epoch when it did not release the shard in order (it died, lost its
   * lease or was fenced out): rows it marked may never have been published. Null for a first
   * owner or after an orderly release.
   */
  abandoned: string | null;
}

/** Takes the shard's fence after winning its etcd key. */
export async function acquireFence(sql: Sql, shard: number, owner: string): Promise<Fence> {
  return sql.begin(async (tx) => {
    const [prev] = await tx<{ epoch: string; released_epoch: string | null }[]>`
      SELECT epoch, released_epoch FROM shard_fences WHERE shard_id = ${shard} FOR UPDATE`;
    const [row] = await tx<{ epoch: string }[]>`
      INSERT INTO shard_fences (shard_id, epoch, owner) VALUES (${shard}, 1, ${owner})
      ON CONFLICT (shard_id) DO UPDATE SET epoch = shard_fences.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
      RETURNING epoch`;
    return { epoch: row!.epoch, abandoned: prev && prev.released_epoch !== prev.epoch ? prev.epoch : null };
  });
}

/** An orderly release: every row marked under `epoch` was published or put back. */
export async function releaseFence(sql: Sql, shard: number, epoch: string): Promise<void> {
  await sql`UPDATE shard_fences SET released_epoch = epoch, updated_at = now() WHERE shard_id = ${shard} AND epoch = ${epoch}`;
}

/** Inside a write transaction: holds the fence row's share lock; throws if `epoch` is not current. */
export async function checkFence(tx: postgres.TransactionSql, shard: number, epoch: string): Promise<void> {
  const [row] = await tx<{ epoch: string }[]>`SELECT epoch FROM shard_fences WHERE shard_id = ${shard} FOR SHARE`;
  if (!row || row.epoch !== epoch) throw new FencedOutError(shard, epoch, row?.epoch ?? null);
}
