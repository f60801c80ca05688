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
