/**
 * Which offsets of each partition a consumer may commit. Pure: no I/O.
 *
 * A message is tracked when it is taken into processing and marked done once the claims of
 * its jobs are durable (from then on the database owns those jobs: the rescuer re-runs one
 * whose executor dies). Messages finish out of order; the committable offset is one past the
 * longest prefix of done messages, so a commit never covers a message whose claims are not
 * durable.
 *
 * A rebalance that leaves a partition with this consumer still restarts its fetching at the
 * committed offset, so messages already taken arrive again: `track` answers null for an offset
 * at or below the highest taken in the current generation (skip it; it is in processing, or
 * done and about to be committed).
 *
 * Offsets are int64 in Kafka; they stay exact as numbers below 2^53.
 */
interface PartitionState {
  gen: number;
  /** Offsets taken into processing and not yet behind the committable point, in order. */
  offsets: number[];
  head: number;
  /** The highest offset taken in this generation (-1: none). */
  highest: number;
  done: Set<number>;
  /** Next offset to commit (one past the done prefix); null until something is done. */
  next: number | null;
  /** The last committed next-offset. */
  committed: number | null;
}

export class OffsetTracker {
  private parts = new Map<number, PartitionState>();
  /** Generations are unique across partitions and their re-assignments. */
  private nextGen = 1;

  private state(partition: number): PartitionState {
    let p = this.parts.get(partition);
    if (!p) this.parts.set(partition, (p = { gen: this.nextGen++, offsets: [], head: 0, highest: -1, done: new Set(), next: null, committed: null }));
    return p;
  }

  /**
   * A message taken into processing; returns the generation to pass to done, or null when
   * this generation already took the offset (delivered again after a rebalance: skip it).
   */
  track(partition: number, offset: number): number | null {
    const p = this.state(partition);
    if (offset <= p.highest) return null;
    p.highest = offset;
    p.offsets.push(offset);
    return p.gen;
  }

  /** The message's claims are durable. A completion from an older generation is ignored. */
  done(partition: number, offset: number, gen: number): void {
    const p = this.parts.get(partition);
    if (!p || p.gen !== gen) return;
    p.done.add(offset);
    while (p.head < p.offsets.length && p.done.has(p.offsets[p.head]!)) {
      p.done.delete(p.offsets[p.head]!);
      p.next = p.offsets[p.head]! + 1;
      p.head++;
    }
    if (p.head > 1024 && p.head * 2 > p.offsets.length) {
      p.offsets.splice(0, p.head);
      p.head = 0;
    }
  }

  /** The offset to commit for the partition, if it moved past the last commit; null otherwise. */
  committable(partition: number): number | null {
    const p = this.parts.get(partition);
    if (!p || p.next === null || p.next === p.committed) return null;
    return p.next;
  }

  committed(partition: number, next: number): void {
    const p = this.parts.get(partition);
    if (p) p.committed = next;
  }

  /** Messages taken into processing whose claims are not durable yet. */
  pending(partition: number): number {
    const p = this.parts.get(partition);
    return p ? p.offsets.length - p.head : 0;
  }

  /** Forgets a partition (it was revoked): its late completions are ignored. */
  drop(partition: number): void {
    this.parts.delete(partition);
  }

  partitions(): number[] {
    return [...this.parts.keys()];
  }
}
