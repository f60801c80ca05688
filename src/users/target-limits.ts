/**
 * Per-target limits (sql/000016_target_limits.sql), in the users database: at most
 * max_concurrent calls at once and max_per_second calls in any one-second window to a host, for
 * one user's jobs, or for every user's (user_id 0, set by an operator). A limit on a host bounds
 * the calls to every URL whose `new URL(url).hostname` equals it, whatever the port or scheme.
 * The API stores and shows them here; the executors enforce them.
 */
import type { Sql } from "../db/databases.ts";

/** The user id of an operator's limit: it binds every user's calls to the host. */
export const OPERATOR = "0";

/** The most either bound may be set to (the table's CHECK). */
export const TARGET_LIMIT_MAX = 100_000;

/** The longest host name a limit may name (the table's CHECK; DNS's longest name). */
export const HOST_MAX_LENGTH = 253;

/** A limit as the API shows it. Null: that bound is off (at least one is set). */
export interface TargetLimit {
  host: string;
  max_concurrent: number | null;
  max_per_second: number | null;
  /** ISO-8601, when the limit was last set. */
  updated_at: string;
}

export const HOST_RULE =
  "a host must be a host name (letters, digits, - and . ; an internationalized name is stored in punycode), an IPv4 address or an IPv6 address in brackets, at most 253 characters, without scheme, port, user, path, query or fragment";

/** Characters a host may not carry outside an IPv6 bracket: they would make it more than a host. */
const NOT_IN_HOST = /[/?#@:%\\\s\x00-\x1f\x7f]/;

/**
 * The host as limits store it: what `new URL("http://" + raw + "/").hostname` gives (lower
 * case, punycode, IPv4 in dotted decimal, IPv6 in brackets), so a limit on it matches every URL
 * whose hostname is the same; null when `raw` is not a bare host (it has a port, user, path,
 * query or fragment, an empty label, or does not parse).
 */
export function normalizeHost(raw: string): string | null {
  if (raw.length === 0 || raw.length > HOST_MAX_LENGTH) return null;
  const bracketed = raw.startsWith("[") && raw.endsWith("]");
  // Inside brackets only an IPv6 address's characters; the parser checks the address itself.
  if (bracketed ? !/^\[[0-9A-Fa-f:.]+\]$/.test(raw) : NOT_IN_HOST.test(raw)) return null;
  let url: URL;
  try {
    url = new URL(`http://${raw}/`);
  } catch {
    return null;
  }
  if (url.username || url.password || url.port || url.pathname !== "/" || url.search || url.hash) return null;
  const host = url.hostname;
  if (host.length === 0 || host.length > HOST_MAX_LENGTH) return null;
  // No empty label ("a..b", ".", a leading dot); one trailing dot is a name of its own, as URLs carry it.
  if (!host.startsWith("[") && host.replace(/\.$/, "").split(".").some((label) => label === "")) return null;
  return host;
}

type Row = { host: string; max_concurrent: number | null; max_per_second: number | null; updated_at: Date };
const toLimit = (r: Row): TargetLimit => ({ host: r.host, max_concurrent: r.max_concurrent, max_per_second: r.max_per_second, updated_at: r.updated_at.toISOString() });

/** The limits of one user (OPERATOR: the operator's, binding every user), by host. */
export async function listTargetLimits(sql: Sql, userId: string): Promise<TargetLimit[]> {
  const rows = await sql<Row[]>`
    SELECT host, max_concurrent, max_per_second, updated_at FROM target_limits WHERE user_id = ${userId} ORDER BY host COLLATE "C"`;
  return rows.map(toLimit);
}

/** The operator's limits (user_id 0): they bind every user's calls to their hosts. */
export function listOperatorTargetLimits(sql: Sql): Promise<TargetLimit[]> {
  return listTargetLimits(sql, OPERATOR);
}

/** Limits one user may keep (the executors read every limit each second); the operator's are not bounded. */
export const MAX_TARGET_LIMITS = 100;

/**
 * Sets a user's (or, with OPERATOR, every user's) limit on a normalized host, replacing any
 * earlier one whole: a bound given as null is off. At least one bound must be set. Null when the
 * user already has MAX_TARGET_LIMITS limits on other hosts.
 */
export async function putTargetLimit(sql: Sql, userId: string, host: string, limit: { max_concurrent: number | null; max_per_second: number | null }): Promise<TargetLimit | null> {
  const [row] = await sql<Row[]>`
    INSERT INTO target_limits (user_id, host, max_concurrent, max_per_second)
    SELECT ${userId}, ${host}, ${limit.max_concurrent}, ${limit.max_per_second}
    WHERE ${userId} = ${OPERATOR}
      OR (SELECT count(*) FROM target_limits WHERE user_id = ${userId} AND host <> ${host}) < ${MAX_TARGET_LIMITS}
    ON CONFLICT (user_id, host) DO UPDATE SET max_concurrent = EXCLUDED.max_concurrent, max_per_second = EXCLUDED.max_per_second, updated_at = now()
    RETURNING host, max_concurrent, max_per_second, updated_at`;
  return row ? toLimit(row) : null;
}

/** Removes a user's (or the operator's) limit on a host; false when there was none. */
export async function removeTargetLimit(sql: Sql, userId: string, host: string): Promise<boolean> {
  const rows = await sql`DELETE FROM target_limits WHERE user_id = ${userId} AND host = ${host} RETURNING host`;
  return rows.length > 0;
}
