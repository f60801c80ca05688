/**
 * The client address of a request, for the login throttle.
 *
 * The TCP peer is the client unless it is one of TRUSTED_PROXIES (IPs and CIDRs, IPv4 or IPv6;
 * none by default, so X-Forwarded-For is never believed). Behind trusted proxies the client is
 * the right-most X-Forwarded-For entry that is not itself a trusted proxy: each proxy appends the
 * address of its own peer, so entries left of the first untrusted one may be written by the
 * client and are never read. Were every entry a trusted proxy, the left-most is the answer.
 *
 * An entry that is not an address (`unknown`, a hostname, a typo) is never the answer, and the
 * walk stops at it: it was written by a trusted proxy that did not name its peer, so whatever
 * stands left of it may be the client's own invention. The answer is then the nearest trusted
 * proxy, the last address known to be true. Addresses are normalized (IPv4-mapped IPv6 becomes
 * IPv4, IPv6 in RFC 5952 form), and an entry may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:80`).
 */
import ipaddr from "ipaddr.js";

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** IPv4 only as four decimal parts (ipaddr.js also reads `127.1` and `0x7f.0.0.1`, no proxy writes those). */
function parseAddress(raw: string): Address | null {
  let s = raw.trim();
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(s);
  if (bracketed) s = bracketed[1]!;
  else if (/^[\d.]+:\d{1,5}$/.test(s)) s = s.slice(0, s.indexOf(":"));
  if (ipaddr.IPv4.isValidFourPartDecimal(s)) return ipaddr.IPv4.parse(s);
  if (!ipaddr.IPv6.isValid(s)) return null;
  const v6 = ipaddr.IPv6.parse(s);
  return v6.isIPv4MappedAddress() ? v6.toIPv4Address() : v6;
}

const format = (a: Address): string => (a.kind() === "ipv4" ? a.toString() : (a as ipaddr.IPv6).toRFC5952String());

/** One TRUSTED_PROXIES entry (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`, `::ffff:10.0.0.0/104`) as a range, or null. */
function parseRange(spec: string): [Address, number] | null {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(spec.trim());
  if (!m) return null;
  const raw = m[1]!;
  let addr: Address;
  if (ipaddr.IPv4.isValidFourPartDecimal(raw)) addr = ipaddr.IPv4.parse(raw);
  else if (ipaddr.IPv6.isValid(raw)) addr = ipaddr.IPv6.parse(raw);
  else return null;
  const max = addr.kind() === "ipv4" ? 32 : 128;
  const bits = m[2] === undefined ? max : Number(m[2]);
  if (bits > max) return null;
  // An IPv4-mapped range matches IPv4 addresses, which is what mapped addresses become here.
  if (addr.kind() === "ipv6" && (addr as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) return [(addr as ipaddr.IPv6).toIPv4Address(), bits - 96];
  return [addr, bits];
}

/** Whether a TRUSTED_PROXIES entry is an IP or a CIDR (for config validation). */
export const isProxySpec = (spec: string): boolean => parseRange(spec) !== null;

export class TrustedProxies {
  private readonly ranges: [Address, number][];

  /** Entries must pass `isProxySpec` (config validates them); any other throws. */
  constructor(specs: readonly string[]) {
    this.ranges = specs.map((spec) => {
      const range = parseRange(spec);
      if (!range) throw new Error(`not an IP or CIDR: ${JSON.stringify(spec)}`);
      return range;
    });
  }

  get empty(): boolean {
    return this.ranges.length === 0;
  }

  has(addr: Address): boolean {
    return this.ranges.some(([net, bits]) => net.kind() === addr.kind() && addr.match(net, bits));
  }
}

/**
 * The client address: `peer` is the TCP peer (server.requestIP), `forwardedFor` the
 * X-Forwarded-For header (several headers arrive joined by commas). "unknown" without a peer.
 */
export function clientAddress(peer: string | null | undefined, forwardedFor: string | null | undefined, trusted: TrustedProxies): string {
  const peerAddr = peer ? parseAddress(peer) : null;
  if (!peerAddr) return peer || "unknown";
  if (trusted.empty || !forwardedFor || !trusted.has(peerAddr)) return format(peerAddr);
  const entries = forwardedFor.split(",").map((e) => e.trim()).filter(Boolean);
  let nearest = peerAddr; // the last hop known to be true
  for (let i = entries.length - 1; i >= 0; i--) {
    const addr = parseAddress(entries[i]!);
    if (!addr) break;
    if (!trusted.has(addr)) return format(addr);
    nearest = addr;
  }
  return format(nearest);
}
