/**
 * Per-target limits through the API, against a real PostgreSQL: a user's own limits
 * (/api/v1/me/targets/{host}), the operator's, which bind every user (/api/v1/admin/targets/{host},
 * user_id 0), and an operator's view of a user's (/api/v1/admin/users/{id}/targets). The host is
 * normalized as the WHATWG URL parser gives a URL's hostname. The API stores and shows the
 * limits; the executors enforce them (their own tests).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { openDatabases, type Databases } from "../src/db/databases.ts";
import { apiRoutes } from "../src/http/api.ts";
import { rootApp } from "../src/http/server.ts";
import { IdGenerator } from "../src/ids.ts";
import { client, expectError, signup as signupWith, type Reply } from "./support/http.ts";
import { freshDatabases, testConfig } from "./support/env.ts";

setDefaultTimeout(60_000);

const ADMIN_TOKEN = "target-limits-admin-token-0123456789abcdef";
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
let dbs: Databases;
let drop: () => Promise<void>;
let call: ReturnType<typeof client>;
const signup = (username: string) => signupWith(call, username);
const unique = (prefix: string) => `${prefix}_${Math.random().toString(36).slice(2, 8)}`;

beforeAll(async () => {
  const fresh = await freshDatabases(1);
  drop = fresh.drop;
  const config = testConfig({ DATABASE_URLS: fresh.urls.join(","), SHARD_COUNT: "4", ADMIN_TOKEN, LOGIN_ATTEMPTS_PER_MINUTE: "1000" });
  dbs = openDatabases(fresh.urls, 4, 5);
  call = client(rootApp(config.api.maxBodyBytes, () => [], apiRoutes(config, dbs, new IdGenerator(12))));
});

afterAll(async () => {
  await dbs?.close();
  await drop?.();
});

const ownList = async (token: string) => {
  const r = await call("GET", "/api/v1/me/targets", { token });
  expect(r.status).toBe(200);
  expect(r.json.success).toBe(true);
  return r.json.data as { targets: any[]; operator: any[] };
};
/** The stored limits of a user (0: the operator's), as plain rows. */
const rows = async (userId: number | string) => [
  ...(await dbs.users<{ host: string; max_concurrent: number | null; max_per_second: number | null }[]>`
    SELECT host, max_concurrent, max_per_second FROM target_limits WHERE user_id = ${userId} ORDER BY host COLLATE "C"`),
];

/** A 400 with the envelope, no stack, no SQL: just a code, a message and details. */
function expectClean400(r: Reply, code = "invalid_request"): void {
  expectError(r, 400, code);
  expect(Object.keys(r.json.error).sort()).toEqual(code === "invalid_request" ? ["code", "details", "message"] : ["code", "message"]);
  expect(r.text).not.toMatch(/"stack"|\.ts:\d+|\n\s+at |target_limits|violates|postgres/i);
}

describe("a user's own limits", () => {
  test("put, get, replace, delete", async () => {
    const { id, token } = await signup(unique("tl_owner"));
    expect(await ownList(token)).toEqual({ targets: [], operator: [] });

    const put = await call("PUT", "/api/v1/me/targets/api.example.com", { token, body: { max_concurrent: 5, max_per_second: 20 } });
    expect(put.status).toBe(200);
    expect(put.json.success).toBe(true);
    expect(Object.keys(put.json.data).sort()).toEqual(["host", "max_concurrent", "max_per_second", "updated_at"]);
    expect(put.json.data).toMatchObject({ host: "api.example.com", max_concurrent: 5, max_per_second: 20 });
    expect(new Date(put.json.data.updated_at).toISOString()).toBe(put.json.data.updated_at);
    expect(await rows(id)).toEqual([{ host: "api.example.com", max_concurrent: 5, max_per_second: 20 }]);

    // One bound alone; a second host; the list is sorted by host.
    const other = await call("PUT", "/api/v1/me/targets/10.0.0.7", { token, body: { max_per_second: 100_000 } });
    expect(other.status).toBe(200);
    expect(other.json.data).toMatchObject({ host: "10.0.0.7", max_concurrent: null, max_per_second: 100_000 });
    const list = await ownList(token);
    expect(list.targets.map((l) => l.host)).toEqual(["10.0.0.7", "api.example.com"]);
    expect(list.targets[1]).toEqual(put.json.data);
    expect(list.operator).toEqual([]);

    // A PUT replaces the limit whole: a bound left out (or null) is off; updated_at moves on.
    await Bun.sleep(5);
    const replaced = await call("PUT", "/api/v1/me/targets/api.example.com", { token, body: { max_concurrent: 1, max_per_second: null } });
    expect(replaced.status).toBe(200);
    expect(replaced.json.data).toMatchObject({ host: "api.example.com", max_concurrent: 1, max_per_second: null });
    expect(Date.parse(replaced.json.data.updated_at)).toBeGreaterThan(Date.parse(put.json.data.updated_at));
    const again = await call("PUT", "/api/v1/me/targets/api.example.com", { token, body: { max_per_second: 3 } });
    expect(again.json.data).toMatchObject({ max_concurrent: null, max_per_second: 3 });
    expect(await rows(id)).toEqual([
      { host: "10.0.0.7", max_concurrent: null, max_per_second: 100_000 },
      { host: "api.example.com", max_concurrent: null, max_per_second: 3 },
    ]);

    const del = await call("DELETE", "/api/v1/me/targets/api.example.com", { token });
    expect(del.status).toBe(204);
    expect(del.text).toBe("");
    expect((await ownList(token)).targets.map((l) => l.host)).toEqual(["10.0.0.7"]);
    expectError(await call("DELETE", "/api/v1/me/targets/api.example.com", { token }), 404, "not_found");
    expectError(await call("DELETE", "/api/v1/me/targets/never.example.com", { token }), 404, "not_found");
    expect(await rows(id)).toEqual([{ host: "10.0.0.7", max_concurrent: null, max_per_second: 100_000 }]);
  });

  test.each([
    ["API.Example.COM", "api.example.com"],
    ["api.example.com.", "api.example.com."],
    ["M%C3%BCnchen.DE", "xn--mnchen-3ya.de"],
    ["%5B2001%3ADB8%3A%3A1%5D", "[2001:db8::1]"],
    ["[::1]", "[::1]"],
    ["0x7f.1", "127.0.0.1"],
    ["localhost", "localhost"],
    [`${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`, `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`],
  ])("%s is stored as %s, and any spelling of it names the same limit", async (raw, host) => {
    const { id, token } = await signup(unique("tl_norm"));
    const put = await call("PUT", `/api/v1/me/targets/${raw}`, { token, body: { max_concurrent: 2 } });
    expect(put.status).toBe(200);
    expect(put.json.data.host).toBe(host);
    // The stored host is what a target URL's hostname is for that host, whatever the port.
    expect(new URL(`https://${host}:8443/x?y=1`).hostname).toBe(host);
    expect((await rows(id)).map((r) => r.host)).toEqual([host]);
    // The normalized spelling reaches the same row (a PUT replaces it, a DELETE removes it).
    const same = await call("PUT", `/api/v1/me/targets/${encodeURIComponent(host)}`, { token, body: { max_concurrent: 4 } });
    expect(same.json.data).toMatchObject({ host, max_concurrent: 4 });
    expect(await rows(id)).toEqual([{ host, max_concurrent: 4, max_per_second: null }]);
    expect((await call("DELETE", `/api/v1/me/targets/${raw}`, { token })).status).toBe(204);
    expect(await rows(id)).toEqual([]);
  });

  test.each([
    ["a%2Fb", "a slash"],
    ["a%2F", "a trailing slash"],
    ["a:80", "a port"],
    ["api.example.com:443", "a port"],
    ["%5B%3A%3A1%5D%3A80", "an IPv6 address with a port"],
    ["user@a", "a user"],
    ["user:pw@a", "a user and password"],
    ["a%3Fb", "a query"],
    ["a%3F", "an empty query"],
    ["a%23b", "a fragment"],
    ["a%5Cb", "a backslash (a path to the URL parser)"],
    ["a%25b", "a percent sign"],
    ["%2541", "an escape for the URL parser"],
    ["http%3A%2F%2Fa", "a scheme"],
    ["%20", "a space"],
    ["%09", "a tab"],
    ["a%09b", "a tab inside (the URL parser would drop it)"],
    ["%20a", "a leading space"],
    ["a%20b", "a space inside"],
    ["a..b", "an empty label"],
    [".a", "a leading dot"],
    ["...", "only dots"],
    ["1.2.3.256", "a bad IPv4 address"],
    ["%5B1%3A%3A2%3A%3A3%5D", "a bad IPv6 address"],
    ["%5Bv1.x%5D", "an IPvFuture address"],
    ["%5Ba%5D", "a name in brackets"],
    ["a%3Cb", "a forbidden host character"],
    ["x".repeat(300), "300 characters"],
    ["x".repeat(254), "254 characters"],
  ])("%s (%s) is 400 invalid_request naming /host, for PUT and DELETE, user and admin", async (raw) => {
    const { id, token } = await signup(unique("tl_badhost"));
    const tries = [
      await call("PUT", `/api/v1/me/targets/${raw}`, { token, body: { max_concurrent: 1 } }),
      await call("DELETE", `/api/v1/me/targets/${raw}`, { token }),
      await call("PUT", `/api/v1/admin/targets/${raw}`, { headers: admin, body: { max_concurrent: 1 } }),
      await call("DELETE", `/api/v1/admin/targets/${raw}`, { headers: admin }),
    ];
    for (const r of tries) {
      expectClean400(r);
      expect(r.json.error.message).toBe("invalid path parameters");
      expect(r.json.error.details.map((d: any) => d.path)).toEqual(["/host"]);
      expect(r.json.error.details[0].message).toMatch(/^a host must be a host name .*IPv4.*IPv6.*253 characters, without scheme, port, user, path, query or fragment$/);
    }
    expect(await rows(id)).toEqual([]);
    expect(await rows(0)).toEqual([]);
  });

  test("an empty host is no route", async () => {
    const { token } = await signup(unique("tl_empty"));
    expectError(await call("PUT", "/api/v1/me/targets/", { token, body: { max_concurrent: 1 } }), 404, "route_not_found");
    expectError(await call("DELETE", "/api/v1/me/targets/", { token }), 404, "route_not_found");
  });

  const badBounds: unknown[] = [0, -1, 100_001, 1.5, "5", "ten", true, {}, [3]];
  test.each(badBounds.flatMap((v) => [["max_concurrent", v] as const, ["max_per_second", v] as const]))("%s %j is 400 naming it, and nothing changes", async (field, value) => {
    const { id, token } = await signup(unique("tl_badbody"));
    await call("PUT", "/api/v1/me/targets/keep.example.com", { token, body: { max_concurrent: 7, max_per_second: 9 } });
    const other = field === "max_concurrent" ? "max_per_second" : "max_concurrent";
    // Alone, or with a valid bound beside it: the request is refused whole.
    for (const body of [{ [field]: value }, { [field]: value, [other]: 5 }]) {
      for (const [path, opts] of [
        ["/api/v1/me/targets/keep.example.com", { token }],
        ["/api/v1/admin/targets/keep.example.com", { headers: admin }],
      ] as const) {
        const r = await call("PUT", path, { ...opts, body });
        expectClean400(r);
        expect(r.json.error.details.map((d: any) => d.path)).toEqual([`/${field}`]);
        expect(r.json.error.details[0].message).toBe("must be a whole number from 1 to 100000, or null for no bound");
      }
    }
    expect(await rows(id)).toEqual([{ host: "keep.example.com", max_concurrent: 7, max_per_second: 9 }]);
    expect(await rows(0)).toEqual([]);
  });

  test("a body that sets no bound, an unknown field, or no JSON object is 400, and nothing changes", async () => {
    const { id, token } = await signup(unique("tl_nobound"));
    for (const [path, opts] of [
      ["/api/v1/me/targets/none.example.com", { token }],
      ["/api/v1/admin/targets/none.example.com", { headers: admin }],
    ] as const) {
      for (const body of [{ max_concurrent: null, max_per_second: null }, { max_concurrent: null }, { max_per_second: null }, {}]) {
        const r = await call("PUT", path, { ...opts, body });
        expectClean400(r);
        expect(r.json.error.details.map((d: any) => d.path)).toEqual(["/max_concurrent", "/max_per_second"]);
        expect(r.json.error.details[0].message).toContain("DELETE");
      }
      // No body at all: the same.
      const empty = await call("PUT", path, opts);
      expectClean400(empty);
      expect(empty.json.error.details.map((d: any) => d.path)).toEqual(["/max_concurrent", "/max_per_second"]);
      const unknown = await call("PUT", path, { ...opts, body: { max_concurrent: 1, max_concurent: 2 } });
      expectClean400(unknown);
      expect(unknown.json.error.details.map((d: any) => d.path)).toEqual(["/max_concurent"]);
      for (const raw of ["null", "[]", "5", '"x"']) expectClean400(await call("PUT", path, { ...opts, raw }));
      expectClean400(await call("PUT", path, { ...opts, raw: "{not json" }), "malformed_body");
      expectClean400(await call("PUT", path, { ...opts, raw: "max_concurrent=1", headers: { ...("headers" in opts ? opts.headers : {}), "content-type": "application/x-www-form-urlencoded" } }), "malformed_body");
    }
    expect(await rows(id)).toEqual([]);
    expect(await rows(0)).toEqual([]);
  });

  test("a user keeps at most 100 limits: the 101st host is 409, changing one of the 100 is not", async () => {
    const { id, token } = await signup(unique("tl_many"));
    await dbs.users`INSERT INTO target_limits (user_id, host, max_concurrent) SELECT ${id}, 'h' || i || '.example', 1 FROM generate_series(1, 99) i`;
    expect((await call("PUT", "/api/v1/me/targets/h100.example", { token, body: { max_concurrent: 2 } })).status).toBe(200);
    const over = await call("PUT", "/api/v1/me/targets/h101.example", { token, body: { max_concurrent: 2 } });
    expectError(over, 409, "too_many_target_limits");
    expect((await call("PUT", "/api/v1/me/targets/h7.example", { token, body: { max_per_second: 9 } })).status).toBe(200);
    expect((await rows(id)).length).toBe(100);
  });

  test("a deleted user's limits go with it", async () => {
    const { id, token } = await signup(unique("tl_gone"));
    expect((await call("PUT", "/api/v1/me/targets/gone.example", { token, body: { max_concurrent: 2 } })).status).toBe(200);
    expect((await call("DELETE", `/api/v1/admin/users/${id}`, { headers: admin })).status).toBe(200);
    expect(await rows(id)).toEqual([]);
  });

  test("one user cannot see, change or delete another's limits", async () => {
    const a = await signup(unique("tl_alice"));
    const b = await signup(unique("tl_bob"));
    expect((await call("PUT", "/api/v1/me/targets/shared.example.com", { token: a.token, body: { max_concurrent: 3 } })).status).toBe(200);
    expect((await call("PUT", "/api/v1/me/targets/alice-only.example.com", { token: a.token, body: { max_per_second: 8 } })).status).toBe(200);

    expect(await ownList(b.token)).toEqual({ targets: [], operator: [] });
    expectError(await call("DELETE", "/api/v1/me/targets/alice-only.example.com", { token: b.token }), 404, "not_found");
    expectError(await call("DELETE", "/api/v1/me/targets/shared.example.com", { token: b.token }), 404, "not_found");
    // Naming the other user anywhere in the request changes nothing: /me is the token's user.
    expectError(await call("DELETE", `/api/v1/me/targets/shared.example.com?user_id=${a.id}`, { token: b.token }), 404, "not_found");
    // B's limit on the same host is B's own row; A's is untouched.
    const bPut = await call("PUT", "/api/v1/me/targets/shared.example.com", { token: b.token, body: { max_concurrent: 50, max_per_second: 60 } });
    expect(bPut.json.data).toMatchObject({ host: "shared.example.com", max_concurrent: 50, max_per_second: 60 });
    expectClean400(await call("PUT", "/api/v1/me/targets/shared.example.com", { token: b.token, body: { max_concurrent: 1, user_id: a.id } }));

    expect(await rows(a.id)).toEqual([
      { host: "alice-only.example.com", max_concurrent: null, max_per_second: 8 },
      { host: "shared.example.com", max_concurrent: 3, max_per_second: null },
    ]);
    expect(await rows(b.id)).toEqual([{ host: "shared.example.com", max_concurrent: 50, max_per_second: 60 }]);
    expect((await ownList(a.token)).targets.map((l) => [l.host, l.max_concurrent])).toEqual([["alice-only.example.com", null], ["shared.example.com", 3]]);
    expect((await ownList(b.token)).targets.map((l) => [l.host, l.max_concurrent])).toEqual([["shared.example.com", 50]]);

    expect((await call("DELETE", "/api/v1/me/targets/shared.example.com", { token: b.token })).status).toBe(204);
    expect((await rows(a.id)).map((r) => r.host)).toEqual(["alice-only.example.com", "shared.example.com"]);
    expect(await rows(b.id)).toEqual([]);
  });

  test("no token or a bad token is 401", async () => {
    for (const [method, path] of [["GET", "/api/v1/me/targets"], ["PUT", "/api/v1/me/targets/a.example.com"], ["DELETE", "/api/v1/me/targets/a.example.com"]] as const) {
      const body = method === "PUT" ? { max_concurrent: 1 } : undefined;
      expectError(await call(method, path, { body }), 401, "unauthorized");
      expectError(await call(method, path, { body, token: "a.b.c" }), 401, "unauthorized");
      expectError(await call(method, path, { body, headers: admin }), 401, "unauthorized");
    }
    // A bad token is 401 whatever the host or body.
    expectError(await call("PUT", "/api/v1/me/targets/a:80", { raw: "{bad", token: "a.b.c" }), 401, "unauthorized");
  });
});

describe("operator limits", () => {
  test("only the admin token reaches them", async () => {
    const { token } = await signup(unique("tl_notadmin"));
    for (const [method, path] of [
      ["GET", "/api/v1/admin/targets"],
      ["PUT", "/api/v1/admin/targets/a.example.com"],
      ["DELETE", "/api/v1/admin/targets/a.example.com"],
      ["GET", "/api/v1/admin/users/1/targets"],
    ] as const) {
      const body = method === "PUT" ? { max_concurrent: 1 } : undefined;
      expectError(await call(method, path, { body }), 401, "unauthorized");
      expectError(await call(method, path, { body, token }), 401, "unauthorized");
      expectError(await call(method, path, { body, headers: { authorization: "Bearer not-the-admin-token" } }), 401, "unauthorized");
    }
    expect(await rows(0)).toEqual([]);
  });

  test("an operator's limit binds every user: each sees it under operator, not as their own", async () => {
    const a = await signup(unique("tl_bound_a"));
    const b = await signup(unique("tl_bound_b"));
    await call("PUT", "/api/v1/me/targets/own.example.com", { token: a.token, body: { max_concurrent: 2 } });

    const put = await call("PUT", "/api/v1/admin/targets/Global.Example.COM", { headers: admin, body: { max_concurrent: 100, max_per_second: 1000 } });
    expect(put.status).toBe(200);
    expect(put.json.data).toMatchObject({ host: "global.example.com", max_concurrent: 100, max_per_second: 1000 });
    expect((await call("PUT", "/api/v1/admin/targets/192.0.2.1", { headers: admin, body: { max_per_second: 1 } })).status).toBe(200);
    expect(await rows(0)).toEqual([
      { host: "192.0.2.1", max_concurrent: null, max_per_second: 1 },
      { host: "global.example.com", max_concurrent: 100, max_per_second: 1000 },
    ]);

    const adminList = await call("GET", "/api/v1/admin/targets", { headers: admin });
    expect(adminList.status).toBe(200);
    expect(adminList.json).toEqual({ data: { targets: [expect.objectContaining({ host: "192.0.2.1" }), put.json.data] }, success: true });

    for (const [user, own] of [[a, ["own.example.com"]], [b, []]] as const) {
      const list = await ownList(user.token);
      expect(list.targets.map((l) => l.host)).toEqual([...own]);
      expect(list.operator.map((l) => l.host)).toEqual(["192.0.2.1", "global.example.com"]);
      expect(list.operator[1]).toEqual(put.json.data);
    }
    // A user cannot remove or change the operator's limit through their own routes.
    expectError(await call("DELETE", "/api/v1/me/targets/global.example.com", { token: a.token }), 404, "not_found");
    expect((await call("PUT", "/api/v1/me/targets/global.example.com", { token: a.token, body: { max_concurrent: 100_000 } })).status).toBe(200);
    expect((await rows(0)).find((r) => r.host === "global.example.com")).toEqual({ host: "global.example.com", max_concurrent: 100, max_per_second: 1000 });

    // The operator's view of a user: their own limits only.
    const aView = await call("GET", `/api/v1/admin/users/${a.id}/targets`, { headers: admin });
    expect(aView.status).toBe(200);
    expect(aView.json.data.targets.map((l: any) => [l.host, l.max_concurrent])).toEqual([["global.example.com", 100_000], ["own.example.com", 2]]);
    expect((await call("GET", `/api/v1/admin/users/${b.id}/targets`, { headers: admin })).json).toEqual({ data: { targets: [] }, success: true });
    expectError(await call("GET", "/api/v1/admin/users/999999999/targets", { headers: admin }), 404, "not_found");
    expectClean400(await call("GET", "/api/v1/admin/users/abc/targets", { headers: admin }));
    expectClean400(await call("GET", "/api/v1/admin/users/0/targets", { headers: admin }));

    // Removing the operator's limit leaves the users' own.
    const del = await call("DELETE", "/api/v1/admin/targets/GLOBAL.example.com", { headers: admin });
    expect(del.status).toBe(204);
    expect(del.text).toBe("");
    expectError(await call("DELETE", "/api/v1/admin/targets/global.example.com", { headers: admin }), 404, "not_found");
    expect((await ownList(a.token)).operator.map((l) => l.host)).toEqual(["192.0.2.1"]);
    expect((await rows(a.id)).map((r) => r.host)).toEqual(["global.example.com", "own.example.com"]);
    expect((await call("DELETE", "/api/v1/admin/targets/192.0.2.1", { headers: admin })).status).toBe(204);
    expect((await call("GET", "/api/v1/admin/targets", { headers: admin })).json).toEqual({ data: { targets: [] }, success: true });
  });
});

test("/docs/json describes the routes, their host parameter and the port rule", async () => {
  const doc = (await call("GET", "/docs/json")).json;
  for (const [path, method, tag, security, params] of [
    ["/api/v1/me/targets", "get", "users", "bearer", []],
    ["/api/v1/me/targets/{host}", "put", "users", "bearer", ["host"]],
    ["/api/v1/me/targets/{host}", "delete", "users", "bearer", ["host"]],
    ["/api/v1/admin/targets", "get", "admin", "admin", []],
    ["/api/v1/admin/targets/{host}", "put", "admin", "admin", ["host"]],
    ["/api/v1/admin/targets/{host}", "delete", "admin", "admin", ["host"]],
    ["/api/v1/admin/users/{user_id}/targets", "get", "admin", "admin", ["user_id"]],
  ] as const) {
    const op = doc.paths[path]?.[method];
    expect(op, `${method} ${path}`).toBeDefined();
    expect(op.summary.length).toBeGreaterThan(10);
    expect(op.description).toContain("whatever its port");
    expect(op.tags).toEqual([tag]);
    expect(op.security).toEqual([{ [security]: [] }]);
    expect(op.responses["401"]).toBeDefined();
    const pathParams = (op.parameters ?? []).filter((p: any) => p.in === "path");
    expect(pathParams.map((p: any) => p.name)).toEqual([...params]);
    for (const p of pathParams) expect(p.required).toBe(true);
  }
  const host = doc.paths["/api/v1/me/targets/{host}"].put.parameters.find((p: any) => p.name === "host");
  expect(host.schema).toMatchObject({ type: "string", minLength: 1, maxLength: 253 });
  expect(host.description ?? host.schema.description).toContain("punycode");
  for (const [path, method] of [["/api/v1/me/targets/{host}", "put"], ["/api/v1/admin/targets/{host}", "put"]] as const) {
    expect(doc.paths[path][method].responses["400"].description).toContain("invalid_request");
  }
  for (const [path, method] of [["/api/v1/me/targets/{host}", "delete"], ["/api/v1/admin/targets/{host}", "delete"], ["/api/v1/admin/users/{user_id}/targets", "get"]] as const) {
    expect(doc.paths[path][method].responses["404"].description).toContain("not_found");
  }
  expect(doc.paths["/api/v1/me/targets/{host}"].delete.responses["204"]).toBeDefined();
  // No optional query parameter anywhere acquired a default that no request gets.
  for (const [path, ops] of Object.entries<any>(doc.paths)) {
    for (const [method, op] of Object.entries<any>(ops)) {
      for (const p of op.parameters ?? []) {
        if (p.in === "query" && !p.required) expect(JSON.stringify(p.schema), `${method} ${path} ?${p.name}`).not.toContain('"default"');
      }
    }
  }
});
