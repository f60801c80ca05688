/**
 * Time-ordered 64-bit job ids, generated without per-request coordination (Snowflake layout):
 *
 *   | 41 bits: ms since EPOCH | 12 bits: node | 10 bits: sequence |
 *
 * Invariants:
 * - ids from one generator strictly increase, even if the wall clock steps back (we keep
 *   issuing from the last millisecond used) or the sequence overflows (we borrow the next ms);
 * - two generators with different node numbers never collide. Node numbers are leased
 *   (src/db/node-id.ts): two live processes never hold the same one, and a generator whose lease
 *   ran out mints nothing (IdsUnavailableError) until it holds one again; the primary key would
 *   reject a duplicate anyway.
 * - ids exceed 2^53, so they are bigints in code and strings on the wire.
 */
import { hostname } from "node:os";
export const ID_EPOCH_MS = Date.UTC(2024, 0, 1);
export const NODE_BITS = 12n;
export const SEQ_BITS = 10n;
const MAX_NODE = (1 << Number(NODE_BITS)) - 1;
const MAX_SEQ = (1 << Number(SEQ_BITS)) - 1;

/** Where a generator's node number comes from: a fixed number, or a lease (null while not held). */
export interface NodeSource {
  current(): number | null;
}

/** The generator holds no node number now (its lease ran out): nothing may be minted. */
export class IdsUnavailableError extends Error {
  constructor() {
    super("this process holds no id node number now");
  }
}

export class IdGenerator {
  private lastMs = -1;
  private lastNode = -1;
  private seq = 0;
  private readonly source: NodeSource;
  constructor(
    node: number | NodeSource,
    private readonly now: () => number = Date.now,
  ) {
    if (typeof node === "number") {
      if (!Number.isInteger(node) || node < 0 || node > MAX_NODE) throw new RangeError(`node must be an integer from 0 to ${MAX_NODE}`);
      this.source = { current: () => node };
    } else this.source = node;
  }

  /** The node number ids are minted with now (null: none held). */
  get node(): number | null {
    return this.source.current();
  }

  next(): bigint {
    const node = this.source.current();
    if (node === null || !Number.isInteger(node) || node < 0 || node > MAX_NODE) throw new IdsUnavailableError();
    let ms = Math.max(this.now() - ID_EPOCH_MS, this.lastMs);
    // A new node number (a lease taken again) starts a new millisecond: ids keep increasing.
    if (node !== this.lastNode && this.lastNode >= 0 && ms === this.lastMs) ms++;
    this.lastNode = node;
    if (ms === this.lastMs) {
      this.seq++;
      if (this.seq > MAX_SEQ) {
        ms++;
        this.seq = 0;
      }
    } else {
      this.seq = 0;
    }
    this.lastMs = ms;
    return (BigInt(ms) << (NODE_BITS + SEQ_BITS)) | (BigInt(node) << SEQ_BITS) | BigInt(this.seq);
  }
}

/** Milliseconds since the Unix epoch encoded in an id. */
export function idTimestamp(id: bigint): number {
  return Number(id >> (NODE_BITS + SEQ_BITS)) + ID_EPOCH_MS;
}

/** Parses a job id from the wire: a decimal string (or safe integer) of a positive int64. */
/** The smallest id a job created at `ms` (epoch ms) can have: every id made before it is lower. */
export function firstIdAt(ms: number): bigint {
  return BigInt(Math.max(0, Math.floor(ms) - ID_EPOCH_MS)) << (NODE_BITS + SEQ_BITS);
}

export function parseId(raw: unknown): bigint | null {
  const s = typeof raw === "number" && Number.isSafeInteger(raw) ? String(raw) : raw;
  if (typeof s !== "string" || !/^[1-9]\d{0,18}$/.test(s)) return null;
  const id = BigInt(s);
  return id <= 0x7fff_ffff_ffff_ffffn ? id : null;
}

/** A name for this process among its peers (ownership in etcd, demand and slot reports): host, pid and a random tag. */
export function processName(): string {
  return `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}
