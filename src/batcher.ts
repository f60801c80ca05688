/**
 * Coalesces single-item requests made within one tick into one batched call per key (here,
 * per database), so thousands of job machines cost a handful of SQL statements. Each caller
 * gets its own result or the batch's error.
 *
 * `serial`: at most one call per key at a time; requests made meanwhile wait for it and go in
 * the next (at most maxBatch each). For work that may come in floods (deferrals for a target
 * limit) and must not take every connection of the pool from the claims.
 */
export class Batcher<K, In, Out> {
  private pending = new Map<K, { item: In; resolve: (o: Out) => void; reject: (e: unknown) => void }[]>();
  private inFlight = new Set<K>();
  private scheduled = false;

  constructor(
    private readonly flushFn: (key: K, items: In[]) => Promise<Out[]>,
    private readonly maxBatch = 1_000,
    private readonly serial = false,
  ) {}

  submit(key: K, item: In): Promise<Out> {
    return new Promise<Out>((resolve, reject) => {
      const list = this.pending.get(key) ?? [];
      list.push({ item, resolve, reject });
      this.pending.set(key, list);
      if (list.length >= this.maxBatch) this.flushKey(key);
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flushAll());
      }
    });
  }

  private flushAll(): void {
    this.scheduled = false;
    for (const key of [...this.pending.keys()]) this.flushKey(key);
  }

  private flushKey(key: K): void {
    if (this.serial && this.inFlight.has(key)) return;
    const all = this.pending.get(key);
    if (!all || all.length === 0) return;
    const list = all.splice(0, this.maxBatch);
    if (all.length === 0) this.pending.delete(key);
    if (this.serial) this.inFlight.add(key);
    this.flushFn(
      key,
      list.map((p) => p.item),
    )
      .then(
        (outs) => list.forEach((p, i) => p.resolve(outs[i]!)),
        (err) => list.forEach((p) => p.reject(err)),
      )
      .finally(() => {
        if (!this.serial) return;
        this.inFlight.delete(key);
        this.flushKey(key);
      });
  }
}
