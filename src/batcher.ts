/**
 * Coalesces single-item requests made within one tick into one batched call per key (here,
 * per database), so thousands of job machines cost a handful of SQL statements. Each caller
 * gets its own result or the batch's error.
 */
export class Batcher<K, In, Out> {
  private pending = new Map<K, { item: In; resolve: (o: Out) => void; reject: (e: unknown) => void }[]>();
  private scheduled = false;

  constructor(
    private readonly flushFn: (key: K, items: In[]) => Promise<Out[]>,
    private readonly maxBatch = 1_000,
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
    const list = this.pending.get(key);
    if (!list || list.length === 0) return;
    this.pending.delete(key);
    this.flushFn(
      key,
      list.map((p) => p.item),
    ).then(
      (outs) => list.forEach((p, i) => p.resolve(outs[i]!)),
      (err) => list.forEach((p) => p.reject(err)),
    );
  }
}
