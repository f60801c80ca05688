/** Errors the core recognises by type. */

/** A shard's fence moved on: a newer owner holds it, so this owner must stop at once. */
export class FencedOutError extends Error {
  constructor(readonly shard: number, readonly epoch: string, readonly current: string | null) {
    super(`shard ${shard}: epoch ${epoch} is fenced out (current ${current ?? "none"})`);
    this.name = "FencedOutError";
  }
}
