import { describe, expect, test } from "bun:test";
import { ApiError } from "../../src/http/errors.ts";
import { LoginThrottle } from "../../src/http/limits.ts";

const T0 = 1_700_000_000_000;
const refused = (t: LoginThrottle, username: string, address: string, now: number): string | null => {
  try {
    t.check(username, address, now);
    return null;
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).code).toBe("too_many_attempts");
    return (e as ApiError).message;
  }
};

describe("login throttle", () => {
  test("per account: past the limit the username is refused from any address until its minute ends", () => {
    const t = new LoginThrottle(3, 1000);
    for (let i = 0; i < 3; i++) t.failed("ann", `198.51.100.${i}`, T0 + i);
    expect(refused(t, "ann", "203.0.113.1", T0 + 10)).toContain("this username");
    expect(refused(t, "bob", "198.51.100.0", T0 + 10)).toBeNull();
    expect(refused(t, "ann", "203.0.113.1", T0 + 60_000)).toBeNull();
  });

  test("per address: repeated failures on one username count once; different usernames count each", () => {
    const t = new LoginThrottle(1_000_000, 3);
    for (let i = 0; i < 500; i++) t.failed("ann", "nat", T0 + i);
    expect(refused(t, "bob", "nat", T0 + 1_000)).toBeNull();
    t.failed("bob", "nat", T0 + 1_000);
    t.failed("bob", "nat", T0 + 1_001);
    expect(refused(t, "carl", "nat", T0 + 1_002)).toBeNull();
    t.failed("carl", "nat", T0 + 1_002); // the third different username
    expect(refused(t, "dora", "nat", T0 + 1_003)).toContain("this address");
    expect(refused(t, "ann", "nat", T0 + 1_003)).toContain("this address");
    expect(refused(t, "dora", "elsewhere", T0 + 1_003)).toBeNull();
    expect(refused(t, "dora", "nat", T0 + 60_000)).toBeNull(); // a new minute
  });

  test("per address: a username that logged in from the address in the last 24 h is still admitted; from another address it is not", () => {
    const t = new LoginThrottle(10, 2);
    t.succeeded("reg", "nat", T0);
    t.failed("x1", "nat", T0 + 1);
    t.failed("x2", "nat", T0 + 2);
    expect(refused(t, "newbie", "nat", T0 + 3)).not.toBeNull();
    expect(refused(t, "reg", "nat", T0 + 3)).toBeNull();
    t.succeeded("reg2", "other", T0);
    expect(refused(t, "reg2", "nat", T0 + 3)).not.toBeNull();
    // Its own limit still holds.
    for (let i = 0; i < 10; i++) t.failed("reg", "nat", T0 + 4);
    expect(refused(t, "reg", "nat", T0 + 5)).toContain("this username");
    // Known for 24 h.
    const later = T0 + 86_400_000;
    t.failed("y1", "nat", later);
    t.failed("y2", "nat", later);
    expect(refused(t, "reg", "nat", later + 1)).toContain("this address");
  });

  test("0 turns either limit off", () => {
    const noAddress = new LoginThrottle(3, 0);
    for (let i = 0; i < 100; i++) noAddress.failed(`u${i}`, "nat", T0);
    expect(refused(noAddress, "other", "nat", T0)).toBeNull();
    const noAccount = new LoginThrottle(0, 5);
    for (let i = 0; i < 100; i++) noAccount.failed("ann", "nat", T0);
    expect(refused(noAccount, "ann", "nat", T0)).toBeNull();
  });
});
