/**
 * My jobs: counts per status, a status filter, one page of 50 at a time (cursor paging: however
 * many jobs there are, the page holds 50 rows), refreshed every 2 seconds in place.
 * The filter and the page are in the address (#/jobs?status=failed&cursor=...), so reload and
 * back keep them.
 */
import { call, STATUSES, words, type Job, type One, type Page as ApiPage } from "../api.ts";
import { alertLine, fill, h, poll, statusBadge, time } from "../dom.ts";
import { go, type Page } from "../shell.ts";
import { takeSigningSecret } from "./auth.ts";

const PAGE_SIZE = 50;

export const jobsPage: Page = (main, route) => {
  const selected = new Set((route.query.get("status") ?? "").split(",").filter((s) => (STATUSES as readonly string[]).includes(s)));
  const cursor = route.query.get("cursor");
  // Cursors of the pages before this one, so "Newer" can go back.
  const back = (route.query.get("back") ?? "").split(",").filter(Boolean);
  const to = (opts: { status?: Set<string>; cursor?: string | null; back?: string[] }) => {
    const q = new URLSearchParams();
    const st = opts.status ?? selected;
    if (st.size) q.set("status", [...st].join(","));
    if (opts.cursor) q.set("cursor", opts.cursor);
    if (opts.back?.length) q.set("back", opts.back.join(","));
    go(`#/jobs${q.size ? `?${q}` : ""}`);
  };

  const secret = takeSigningSecret();
  const counts = new Map<string, HTMLElement>(STATUSES.map((s) => [s, h("span", { class: "count" }, "")]));
  const filters = h(
    "fieldset",
    { class: "filters" },
    h("legend", { class: "visually-hidden" }, "Show jobs with status"),
    STATUSES.map((s) =>
      h(
        "label",
        null,
        h("input", {
          type: "checkbox",
          name: "status",
          value: s,
          checked: selected.has(s),
          onchange: (e: Event) => {
            const next = new Set(selected);
            if ((e.target as HTMLInputElement).checked) next.add(s);
            else next.delete(s);
            to({ status: next });
          },
        }),
        statusBadge(s),
        counts.get(s)!,
      ),
    ),
  );
  const live = h("span", { class: "live", "aria-live": "off" }, "");
  const error = alertLine();
  const body = h("tbody");
  const older = h("button", { type: "button", disabled: true }, "Older");
  const newer = h("button", { type: "button", disabled: !cursor, onclick: () => to({ cursor: back[back.length - 1] || null, back: back.slice(0, -1) }) }, "Newer");
  let next: string | null = null;
  older.addEventListener("click", () => next && to({ cursor: next, back: [...back, cursor ?? ""] }));

  main.append(h("h1", null, "My jobs"));
  if (secret) {
    main.append(
      h(
        "div",
        { class: "panel" },
        h("strong", null, "Your signing secret (shown once): "),
        h("span", { class: "secret" }, secret),
        h("p", { class: "hint" }, "HTTP targets receive X-Signature, an HMAC of each call made with this secret. Keep it; rotate it with POST /api/v1/me/signing-secret."),
      ),
    );
  }
  main.append(
    h("div", { class: "bar" }, h("a", { href: "#/new" }, "New job"), live),
    filters,
    error.el,
    h(
      "table",
      null,
      h("caption", { class: "visually-hidden" }, "Your jobs, newest first"),
      h("thead", null, h("tr", null, ["Job", "Status", "Kind", "Message", "Runs at", "Attempts", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
      body,
    ),
    h("div", { class: "bar" }, h("nav", { "aria-label": "Pages" }, newer, " ", older)),
  );

  const refresh = async () => {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (selected.size) q.set("status", [...selected].join(","));
    if (cursor) q.set("cursor", cursor);
    try {
      const [page, stats] = await Promise.all([
        call<ApiPage<Job>>("GET", `/api/v1/me/jobs?${q}`),
        call<One<Record<string, number>>>("GET", "/api/v1/me/jobs/stats"),
      ]);
      for (const [s, el] of counts) fill(el, `(${(stats.data[s] ?? 0).toLocaleString()})`);
      fill(
        body,
        page.data.length === 0
          ? h("tr", null, h("td", { colspan: 7 }, selected.size ? "No jobs with these statuses." : "No jobs yet. ", selected.size ? null : h("a", { href: "#/new" }, "Schedule one")))
          : page.data.map((j) =>
              h(
                "tr",
                { "data-job": j.id },
                h("td", null, h("a", { href: `#/jobs/${j.id}` }, j.id)),
                h("td", null, statusBadge(j.status)),
                h("td", null, j.kind),
                h("td", { class: "msg", title: j.message }, j.message),
                h("td", null, time(j.next_attempt_at ?? j.execute_at)),
                h("td", { class: "num" }, `${j.attempt}/${j.max_attempts}`),
                h("td", null, time(j.updated_at)),
              ),
            ),
      );
      next = page.next_cursor;
      older.disabled = !next;
      error.clear();
      fill(live, `Updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      error.show(`Could not load your jobs: ${words(e)}`);
    }
  };
  return poll(refresh, 2_000);
};
