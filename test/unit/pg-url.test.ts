import { expect, test } from "bun:test";
import { databaseName, parsePgUrl, splitDatabaseUrls, withDatabase } from "../../src/db/pg-url.ts";

const HA = "postgres://root@127.0.0.1:5441,127.0.0.1:5442/fairshare_0?target_session_attrs=primary";

test("a multi-host URL keeps its host list, database and options", () => {
  expect(parsePgUrl(HA)).toEqual({ protocol: "postgres", userinfo: "root", hosts: ["127.0.0.1:5441", "127.0.0.1:5442"], database: "fairshare_0", search: "?target_session_attrs=primary" });
  expect(withDatabase(HA, "postgres")).toBe("postgres://root@127.0.0.1:5441,127.0.0.1:5442/postgres?target_session_attrs=primary");
  expect(databaseName("postgresql://u:p@h/db")).toBe("db");
  expect(parsePgUrl("http://h/db")).toBeNull();
  expect(parsePgUrl("postgres://h a/db")).toBeNull();
});

test("DATABASE_URLS splits between URLs, not inside a host list", () => {
  expect(splitDatabaseUrls(`${HA},postgres://root@127.0.0.1:5443,127.0.0.1:5444/fairshare_1`)).toEqual([HA, "postgres://root@127.0.0.1:5443,127.0.0.1:5444/fairshare_1"]);
  expect(splitDatabaseUrls("postgres://a/x, postgresql://b/y")).toEqual(["postgres://a/x", "postgresql://b/y"]);
});
