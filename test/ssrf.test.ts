/**
 * The HTTP handler's guard against internal targets, with private targets refused (as in
 * production), against a real listener on loopback: every spelling that reaches it must be
 * refused before any connection, a name that does not resolve is never called, and the call
 * goes to the address that was checked.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ClaimedJob } from "../src/jobs/job-row.ts";
import { isInternalAddress, runHttp } from "../src/executor/handlers.ts";

let hits = 0;
let server: ReturnType<typeof Bun.serve>;
let server6: ReturnType<typeof Bun.serve> | null = null;
const hosts: string[] = [];
beforeAll(() => {
  const fetch = (req: Request) => {
    hits++;
    hosts.push(req.headers.get("host") ?? "");
    return new Response("ok");
  };
  server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch });
  try {
    server6 = Bun.serve({ port: server.port, hostname: "::1", fetch });
  } catch {
    server6 = null; // no IPv6 loopback on this machine: the IPv4 listener is what the mapped forms reach
  }
});
afterAll(() => {
  server.stop(true);
  server6?.stop(true);
});

const job = (url: string): ClaimedJob =>
  ({ id: "1", shard_id: 0, user_id: "1", kind: "http", message: "hi", target: { url, method: "POST" }, attempt: 1, max_attempts: 3, execute_at: new Date(), due_at: new Date(), last_error: null, trace_context: null }) as unknown as ClaimedJob;
const guarded = { allowPrivate: false, signingKeys: async () => ["s".repeat(32)], defaultTimeoutMs: 2_000 };

describe("SSRF guard", () => {
  test("internal addresses in every spelling are internal; public ones are not", () => {
    for (const ip of ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "198.18.0.1", "192.0.0.1", "224.0.0.1",
      "::1", "::", "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:a9fe:a9fe", "::127.0.0.1", "::7f00:1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
      "2002:7f00:1::", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "fc00::1", "fd12::1", "fe80::1", "ff02::1", "not an ip"]) {
      expect(isInternalAddress(ip), ip).toBe(true);
    }
    for (const ip of ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]) expect(isInternalAddress(ip), ip).toBe(false);
  });

  test("each known bypass is refused before any connection", async () => {
    const port = server.port;
    const before = hits;
    for (const url of [
      `http://127.0.0.1:${port}/`,
      `http://[::ffff:127.0.0.1]:${port}/`, // the URL parser rewrites it to [::ffff:7f00:1]
      `http://[::ffff:7f00:1]:${port}/`,
      `http://[::127.0.0.1]:${port}/`,
      `http://[64:ff9b::127.0.0.1]:${port}/`,
      `http://[::1]:${port}/`,
      `http://localhost:${port}/`,
      `http://2130706433:${port}/`, // decimal 127.0.0.1
      `http://0x7f.1:${port}/`,
    ]) {
      const r = await runHttp(job(url), guarded);
      expect(r.ok, url).toBe(false);
      expect((r as { retryable?: boolean }).retryable, url).toBe(false);
    }
    expect(hits).toBe(before);
  });

  test("a name that does not resolve is a retryable failure and never a call", async () => {
    const before = hits;
    // A trailing dot: refused if it resolves to loopback, not called if it does not resolve.
    expect((await runHttp(job(`http://localhost.:${server.port}/`), guarded)).ok).toBe(false);
    const r = await runHttp(job(`http://localhost.invalid.:${server.port}/`), guarded);
    expect(r).toMatchObject({ ok: false, retryable: true });
    expect(r.ok ? "" : r.error).toContain("cannot resolve");
    expect(hits).toBe(before);
  });

  test("the call goes to the address checked, carrying the name as Host", async () => {
    const r = await runHttp(job(`http://localhost:${server.port}/x`), { ...guarded, allowPrivate: true });
    expect(r.ok).toBe(true);
    expect(hosts.at(-1)).toBe(`localhost:${server.port}`);
  });
});
