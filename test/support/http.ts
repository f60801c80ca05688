import { expect } from "bun:test";
/** Drives an Elysia app in-process with real Requests (app.handle), returning status and JSON. */
export type Handler = { handle(req: Request): Promise<Response> };

export interface Reply {
  status: number;
  headers: Headers;
  json: any;
  text: string;
}

export function client(app: Handler, base = "http://localhost") {
  return async function call(
    method: string,
    path: string,
    opts: { body?: unknown; raw?: string | Uint8Array; token?: string; headers?: Record<string, string> } = {},
  ): Promise<Reply> {
    const headers: Record<string, string> = { ...opts.headers };
    let body: string | Uint8Array | undefined;
    if (opts.raw !== undefined) body = opts.raw;
    else if (opts.body !== undefined) body = JSON.stringify(opts.body);
    if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) headers["content-type"] = "application/json";
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const res = await app.handle(new Request(base + path, { method, headers, body }));
    const text = await res.text();
    let json: any = null;
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: res.status, headers: res.headers, json, text };
  };
}

type Call = ReturnType<typeof client>;

/** Signs a user up (optionally with a weight) and logs in; fails the test on any other answer. */
export async function signup(call: Call, username: string, job_weight?: number): Promise<{ token: string; id: number }> {
  const created = await call("POST", "/api/v1/users", { body: { username, password: "correct horse battery", job_weight } });
  expect(created.status).toBe(201);
  const login = await call("POST", "/api/v1/auth/login", { body: { username, password: "correct horse battery" } });
  expect(login.status).toBe(200);
  return { token: login.json.data.token, id: login.json.data.user.id };
}

/** The error envelope: the status, success false, the stable code and a message. */
export function expectError(r: { status: number; json: any }, status: number, code: string): void {
  expect(r.status).toBe(status);
  expect(r.json.success).toBe(false);
  expect(r.json.error.code).toBe(code);
  expect(typeof r.json.error.message).toBe("string");
}
