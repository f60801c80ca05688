import { describe, expect, test } from "bun:test";
import { clientAddress, isProxySpec, TrustedProxies } from "../../src/http/client-address.ts";
import { loadConfig } from "../../src/config.ts";

const none = new TrustedProxies([]);
const proxies = new TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8", "::ffff:192.168.0.0/112"]);

describe("client address", () => {
  test("no trusted proxies: the peer, whatever X-Forwarded-For says", () => {
    expect(clientAddress("198.51.100.7", "203.0.113.9", none)).toBe("198.51.100.7");
    expect(clientAddress("127.0.0.1", "203.0.113.9, 10.0.0.1", none)).toBe("127.0.0.1");
  });

  test("an untrusted peer with a spoofed header: the peer", () => {
    expect(clientAddress("198.51.100.7", "203.0.113.9", proxies)).toBe("198.51.100.7");
    expect(clientAddress("198.51.100.7", "10.0.0.1", proxies)).toBe("198.51.100.7");
  });

  test("a trusted peer: the right-most entry that is not a trusted proxy", () => {
    expect(clientAddress("127.0.0.1", "203.0.113.9", proxies)).toBe("203.0.113.9");
    // The client wrote 6.6.6.6 itself; the first proxy appended the client's real address.
    expect(clientAddress("10.1.2.3", "6.6.6.6, 203.0.113.9, 10.0.0.7", proxies)).toBe("203.0.113.9");
    expect(clientAddress("10.1.2.3", " 6.6.6.6 ,203.0.113.9 , 10.0.0.7 ,", proxies)).toBe("203.0.113.9");
  });

  test("without X-Forwarded-For, or when every entry is trusted: the left-most trusted hop", () => {
    expect(clientAddress("127.0.0.1", null, proxies)).toBe("127.0.0.1");
    expect(clientAddress("127.0.0.1", "", proxies)).toBe("127.0.0.1");
    expect(clientAddress("127.0.0.1", "10.0.0.1, 10.0.0.2", proxies)).toBe("10.0.0.1");
  });

  test("malformed entries are never the answer, and nothing left of one is believed", () => {
    // Left of the client's address: never read.
    expect(clientAddress("127.0.0.1", "garbage, 203.0.113.9", proxies)).toBe("203.0.113.9");
    expect(clientAddress("127.0.0.1", "127.1, 0x7f.0.0.1, 203.0.113.9", proxies)).toBe("203.0.113.9");
    // Written by a trusted proxy that did not name its peer: the client could have written what
    // stands left of it, so the answer is the nearest trusted proxy.
    expect(clientAddress("127.0.0.1", "203.0.113.9, unknown", proxies)).toBe("127.0.0.1");
    expect(clientAddress("127.0.0.1", "203.0.113.9, unknown, 10.0.0.5", proxies)).toBe("10.0.0.5");
    expect(clientAddress("127.0.0.1", "203.0.113.9, 999.1.1.1", proxies)).toBe("127.0.0.1");
    expect(clientAddress("127.0.0.1", "203.0.113.9, 2001:db8::zz", proxies)).toBe("127.0.0.1");
  });

  test("ports are dropped", () => {
    expect(clientAddress("127.0.0.1", "203.0.113.9:51234", proxies)).toBe("203.0.113.9");
    expect(clientAddress("127.0.0.1", "[2001:db8::1]:443", proxies)).toBe("2001:db8::1");
    expect(clientAddress("127.0.0.1", "[2001:db8::1]", proxies)).toBe("2001:db8::1");
  });

  test("IPv6, and IPv4-mapped IPv6 as IPv4, for the peer, the entries and the trusted ranges", () => {
    expect(clientAddress("::1", "203.0.113.9", proxies)).toBe("::1"); // ::1 is not trusted here
    expect(clientAddress("::ffff:127.0.0.1", "203.0.113.9", proxies)).toBe("203.0.113.9");
    expect(clientAddress("fd12::1", "2001:DB8:0:0:0:0:0:1", proxies)).toBe("2001:db8::1");
    expect(clientAddress("fd12::1", "2001:db8::1, fd00::2", proxies)).toBe("2001:db8::1");
    expect(clientAddress("127.0.0.1", "203.0.113.9, ::ffff:10.0.0.1", proxies)).toBe("203.0.113.9");
    expect(clientAddress("127.0.0.1", "::ffff:203.0.113.9", proxies)).toBe("203.0.113.9");
    expect(clientAddress("::ffff:cb00:7109", null, none)).toBe("203.0.113.9");
    // An IPv4-mapped range matches the IPv4 addresses it maps.
    expect(clientAddress("192.168.3.4", "203.0.113.9", proxies)).toBe("203.0.113.9");
    expect(clientAddress("::ffff:192.168.3.4", "203.0.113.9", proxies)).toBe("203.0.113.9");
    expect(clientAddress("192.169.0.1", "203.0.113.9", proxies)).toBe("192.169.0.1");
    // IPv4 ranges do not match IPv6 addresses and the reverse.
    expect(clientAddress("2001:db8::10", "203.0.113.9", new TrustedProxies(["0.0.0.0/0"]))).toBe("2001:db8::10");
    expect(clientAddress("10.0.0.1", "203.0.113.9", new TrustedProxies(["::/0"]))).toBe("10.0.0.1");
  });

  test("no peer (an in-process request): unknown", () => {
    expect(clientAddress(undefined, "203.0.113.9", proxies)).toBe("unknown");
    expect(clientAddress(null, null, none)).toBe("unknown");
  });

  test("TRUSTED_PROXIES: IPs and CIDRs, empty by default; anything else is named", () => {
    for (const ok of ["127.0.0.1", "10.0.0.0/8", "0.0.0.0/0", "::1", "fd00::/8", "::ffff:10.0.0.0/104", "2001:db8::/32"]) expect(isProxySpec(ok)).toBe(true);
    for (const bad of ["", "localhost", "10.0.0.0/33", "::/129", "10.0.0.0/", "127.1", "10.0.0.0/8/8", "1.2.3.4:80"]) expect(isProxySpec(bad)).toBe(false);
    expect(loadConfig({}).api.trustedProxies).toEqual([]);
    expect(loadConfig({ TRUSTED_PROXIES: " 10.0.0.0/8, ::1 ," }).api.trustedProxies).toEqual(["10.0.0.0/8", "::1"]);
    expect(() => loadConfig({ TRUSTED_PROXIES: "10.0.0.0/8,proxy.local" })).toThrow(/TRUSTED_PROXIES: "proxy.local"/);
    expect(() => new TrustedProxies(["proxy.local"])).toThrow();
  });

  test("LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE: 1000 by default, 0 turns it off, validated like LOGIN_ATTEMPTS_PER_MINUTE", () => {
    expect(loadConfig({}).api.loginAttemptsPerAddressPerMinute).toBe(1000);
    expect(loadConfig({ LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE: "0" }).api.loginAttemptsPerAddressPerMinute).toBe(0);
    for (const bad of ["-1", "1.5", "lots", "1000001"]) expect(() => loadConfig({ LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE: bad })).toThrow(/LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE/);
  });
});
