/**
 * PostgreSQL connection URLs, including libpq's multi-host form that postgres.js also accepts
 * (`postgres://user@h1:5441,h2:5442/db?target_session_attrs=primary`): the client tries each
 * host in turn and keeps the one that takes writes. WHATWG `URL` refuses a host list, so these
 * are parsed here, once.
 */
const PG_URL = /^(postgres(?:ql)?):\/\/(?:([^@/?#]*)@)?([^/?#]+)(?:\/([^?#]*))?(\?[^#]*)?$/;

export interface PgUrl {
  protocol: string;
  userinfo: string | null;
  /** host:port pairs, in the order the client tries them. */
  hosts: string[];
  database: string;
  search: string;
}

export function parsePgUrl(url: string): PgUrl | null {
  const m = PG_URL.exec(url.trim());
  if (!m) return null;
  const hosts = m[3]!.split(",");
  if (hosts.some((h) => !/^[A-Za-z0-9.\-_[\]:]+$/.test(h))) return null;
  return { protocol: m[1]!, userinfo: m[2] ?? null, hosts, database: decodeURIComponent(m[4] ?? ""), search: m[5] ?? "" };
}

export function formatPgUrl(u: PgUrl): string {
  return `${u.protocol}://${u.userinfo !== null ? `${u.userinfo}@` : ""}${u.hosts.join(",")}/${encodeURIComponent(u.database)}${u.search}`;
}

/** The same servers, another database. */
export function withDatabase(url: string, database: string): string {
  const u = parsePgUrl(url);
  if (!u) throw new Error("not a postgres:// URL");
  return formatPgUrl({ ...u, database });
}

export function databaseName(url: string): string {
  return parsePgUrl(url)?.database ?? "";
}

/**
 * DATABASE_URLS is a comma-separated list of URLs, and a URL may itself hold a comma-separated
 * host list: a new item starts only where a comma is followed by a scheme.
 */
export function splitDatabaseUrls(s: string): string[] {
  return s
    .split(/,(?=\s*postgres(?:ql)?:\/\/)/)
    .map((x) => x.trim())
    .filter(Boolean);
}
