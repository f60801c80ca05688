/**
 * The operator view (admin token): who gets what share of the starts and of executor time against
 * their weight, the due backlog and start lateness over time, dead letters with retry, shard
 * ownership, and users' weights, running caps (max_running) and pause. Served by /api/v1/admin/*,
 * which reads SQL and etcd; nothing here scrapes metrics.
 */
import type { Activity } from "../../jobs/activity.ts";
import type { ShardView } from "../../scheduler/ownership-view.ts";
import { call, session, words, type Job, type One, type Page as ApiPage, type User } from "../api.ts";
import { LineChart, PALETTE, type SeriesSpec } from "../chart.ts";
import { alertLine, fill, h, poll, statusBadge, time } from "../dom.ts";
import { Form } from "../form.ts";
import { go, say, type Page } from "../shell.ts";

/** Window choices: seconds shown, and the interval each point covers. */
const WINDOWS = [
  { window: 120, interval: 2, label: "last 2 minutes" },
  { window: 600, interval: 10, label: "last 10 minutes" },
  { window: 3600, interval: 60, label: "last hour" },
];
/** "Recent share": the last complete intervals (the current one is still filling). */
const RECENT_INTERVALS = 5;
/** Backlog samples kept (one per refresh: about 10 minutes at 2 s). */
const BACKLOG_SAMPLES = 300;
const SHOWN_USERS = PALETTE.length;
const USER_COLUMNS = ["User", "Name", "State", "Weight", "Max running", "Paused"];

const pct = (x: number | null | undefined) => (x === null || x === undefined ? "-" : `${(x * 100).toFixed(1)} %`);
const ms = (x: number | null) => (x === null ? "-" : x >= 10_000 ? `${(x / 1000).toFixed(1)} s` : `${x} ms`);

export const operatorPage: Page = (main, route) => {
  main.append(h("h1", null, "Operator"));
  if (!session.admin()) return adminSignIn(main);

  const choice = WINDOWS.find((w) => String(w.window) === route.query.get("window")) ?? WINDOWS[0]!;
  const windowSelect = h(
    "select",
    { id: "window", onchange: (e: Event) => go(`#/operator?window=${(e.target as HTMLSelectElement).value}`) },
    WINDOWS.map((w) => h("option", { value: String(w.window), selected: w === choice }, w.label)),
  );
  const live = h("span", { class: "live" });
  const error = alertLine();
  const shareChart = new LineChart("Share of starts per user over time (solid) against the share their weight owes them (dashed)", { yLabel: "share of starts", yRange: [0, 1] });
  const lateChart = new LineChart("Start lateness p50 and p99 over time", { yLabel: "ms late" });
  const backlogChart = new LineChart("Jobs due and waiting over time", { yLabel: "jobs waiting" });
  const shareRows = h("tbody");
  const backlogNow = h("p", { id: "backlog-now" });
  const dead = h("tbody");
  const deadMore = h("button", { type: "button", hidden: true }, "Older dead letters");
  const shards = h("tbody");
  const members = h("p", { class: "hint" });
  const users = h("tbody");
  const usersMore = h("button", { type: "button", hidden: true }, "More users");

  main.append(
    h(
      "div",
      { class: "bar" },
      h("label", { for: "window", class: "inline" }, "Show "),
      windowSelect,
      live,
      h("button", { type: "button", onclick: forgetAdminToken }, "Forget admin token"),
    ),
    error.el,
    h("section", { "aria-labelledby": "h-share" },
      h("h2", { id: "h-share" }, "Fair share"),
      h("p", { class: "hint" }, "Each user's share of the jobs that started in each interval (solid), against their weight's share among the users who started jobs in it (dashed). Under a backlog the two meet; a user who asks for less than their share gets all they ask."),
      h("p", { class: "hint" }, "Executor time is each user's share of the run time of the jobs that started in those intervals and have ended (runs still going are not counted yet). A user whose jobs run 100 times longer holds the executors 100 times longer per start: the scheduler shares executor time by weight, so when jobs take unequal times it is this share, not the share of starts, that meets the owed share."),
      shareChart.el,
      h("table", { id: "shares" },
        h("caption", { class: "visually-hidden" }, "Shares of starts and of executor time per user"),
        h("thead", null, h("tr", null, ["User", "Weight", "Waiting now", "Owed share", `Share, last ${RECENT_INTERVALS} intervals`, `Executor time, last ${RECENT_INTERVALS} intervals`, "Share in window", "Starts in window"].map((c) => h("th", { scope: "col" }, c)))),
        shareRows,
      ),
    ),
    h("section", { "aria-labelledby": "h-load" },
      h("h2", { id: "h-load" }, "Backlog and lateness"),
      backlogNow,
      h("div", { class: "grid2" }, h("div", null, h("h3", null, "Start lateness (p50, p99)"), lateChart.el), h("div", null, h("h3", null, "Due backlog (since this page opened)"), backlogChart.el)),
    ),
    h("section", { "aria-labelledby": "h-dead" },
      h("h2", { id: "h-dead" }, "Dead letters"),
      h("table", { id: "dead-letters" },
        h("caption", { class: "visually-hidden" }, "Failed jobs, newest first"),
        h("thead", null, h("tr", null, ["Job", "User", "Attempts", "Last error", "Failed", ""].map((c, i) => h("th", { scope: "col" }, c || h("span", { class: "visually-hidden" }, i === 5 ? "Action" : ""))))),
        dead,
      ),
      deadMore,
    ),
    h("section", { "aria-labelledby": "h-shards" },
      h("h2", { id: "h-shards" }, "Shards"),
      members,
      h("table", { id: "shards" },
        h("caption", { class: "visually-hidden" }, "Shard ownership"),
        h("thead", null, h("tr", null, ["Shard", "Database", "Owner (etcd)", "Epoch", "Since", "State"].map((c) => h("th", { scope: "col" }, c)))),
        shards,
      ),
    ),
    h("section", { "aria-labelledby": "h-users" },
      h("h2", { id: "h-users" }, "Users"),
      h("table", { id: "users" },
        h("caption", { class: "visually-hidden" }, "Users, their weights, running caps and whether they are paused"),
        h("thead", null, h("tr", null, USER_COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
        users,
      ),
      usersMore,
    ),
  );

  const failed = (what: string) => (e: unknown) => {
    error.show(`${what}: ${words(e)}`);
  };
  const backlog: { at: number; waiting: number; oldest: number | null }[] = [];

  const refreshActivity = async () => {
    const a = (await call<One<Activity>>("GET", `/api/v1/admin/activity?window_seconds=${choice.window}&interval_seconds=${choice.interval}`, { as: "admin" })).data;
    const shown = a.users.filter((u) => u.starts > 0 || u.waiting > 0).slice(0, SHOWN_USERS);
    const name = (u: Activity["users"][number]) => u.username ?? `user ${u.id}`;
    const xs = a.intervals.map((i) => Date.parse(i.at) / 1000);
    const series: SeriesSpec[] = shown.flatMap((u, k) => [
      { label: name(u), color: PALETTE[k]! },
      { label: `${name(u)} (weight share)`, color: PALETTE[k]!, dash: true },
    ]);
    const ys = shown.flatMap((u) => [a.intervals.map((i) => (i.starts ? (i.share[u.id] ?? 0) : null)), a.intervals.map((i) => i.weight_share[u.id] ?? null)]);
    shareChart.update(series, xs, ys);
    // The last complete intervals: the current one is still filling.
    const recent = a.intervals.slice(-1 - RECENT_INTERVALS, -1);
    const recentTotal = recent.reduce((s, i) => s + i.starts, 0);
    const recentRunMs = recent.reduce((s, i) => s + i.run_ms, 0);
    fill(
      shareRows,
      shown.length === 0
        ? h("tr", null, h("td", { colspan: 8 }, "No job started in this window and none is waiting."))
        : shown.map((u, k) => {
            const mine = recent.reduce((s, i) => s + (i.share[u.id] ?? 0) * i.starts, 0);
            const mineMs = recent.reduce((s, i) => s + (i.occupancy[u.id] ?? 0) * i.run_ms, 0);
            return h(
              "tr",
              { "data-user": u.id },
              h("td", null, h("span", { class: `swatch s${k}`, "aria-hidden": "true" }), name(u)),
              h("td", { class: "num" }, u.job_weight === null ? "-" : String(u.job_weight)),
              h("td", { class: "num" }, u.waiting.toLocaleString()),
              h("td", { class: "num", "data-owed": u.owed_share ?? "" }, pct(u.owed_share)),
              h("td", { class: "num", "data-recent": recentTotal ? mine / recentTotal : "" }, recentTotal ? pct(mine / recentTotal) : "-"),
              h("td", { class: "num", "data-occupancy": recentRunMs ? mineMs / recentRunMs : "" }, recentRunMs ? pct(mineMs / recentRunMs) : "-"),
              h("td", { class: "num" }, pct(u.share)),
              h("td", { class: "num" }, u.starts.toLocaleString()),
            );
          }),
    );
    lateChart.update(
      [{ label: "p50", color: PALETTE[0]! }, { label: "p99", color: PALETTE[1]! }],
      xs,
      [a.intervals.map((i) => i.lateness_p50_ms), a.intervals.map((i) => i.lateness_p99_ms)],
    );
    const now = Date.now();
    backlog.push({ at: now / 1000, waiting: a.backlog.waiting, oldest: a.backlog.oldest_due_at ? now - Date.parse(a.backlog.oldest_due_at) : null });
    if (backlog.length > BACKLOG_SAMPLES) backlog.shift();
    backlogChart.update([{ label: "waiting", color: PALETTE[2]! }], backlog.map((b) => b.at), [backlog.map((b) => b.waiting)]);
    const last = a.intervals[a.intervals.length - 2];
    fill(
      backlogNow,
      `${a.backlog.waiting.toLocaleString()} jobs due and waiting`,
      a.backlog.oldest_due_at ? `, the oldest due ${ms(Math.max(0, now - Date.parse(a.backlog.oldest_due_at)))} ago` : "",
      last ? `. Last complete interval: ${last.starts.toLocaleString()} starts, lateness p50 ${ms(last.lateness_p50_ms)}, p99 ${ms(last.lateness_p99_ms)}.` : ".",
    );
  };

  const refreshShards = async () => {
    const o = (await call<One<{ members: string[]; shards: ShardView[] }>>("GET", "/api/v1/admin/shards", { as: "admin" })).data;
    const unowned = o.shards.filter((s) => !s.owner).length;
    fill(members, `${o.members.length} scheduler${o.members.length === 1 ? "" : "s"} in the group: ${o.members.join(", ") || "none"}. `, unowned ? h("strong", { class: "error" }, `${unowned} shard${unowned === 1 ? " has" : "s have"} no owner.`) : "Every shard has an owner.");
    fill(
      shards,
      o.shards.map((s) =>
        h("tr", null, h("td", { class: "num" }, String(s.shard)), h("td", { class: "num" }, String(s.database)), h("td", null, s.owner ?? h("strong", { class: "error" }, "none")), h("td", { class: "num" }, s.epoch ?? "-"), h("td", null, time(s.since)), h("td", null, s.owner ? "owned" : s.epoch === null ? "never owned" : s.released ? "released in order" : "owner lost: the next owner takes back its dispatches")),
      ),
    );
  };

  let deadCursor: string | null = null;
  const deadRow = (j: Job) =>
    h(
      "tr",
      { "data-job": j.id },
      h("td", null, j.id),
      h("td", { class: "num" }, String(j.user_id)),
      h("td", { class: "num" }, `${j.attempt}/${j.max_attempts}`),
      h("td", { class: "msg", title: j.last_error ?? "" }, j.last_error ?? ""),
      h("td", null, time(j.finished_at)),
      h("td", null, h("button", {
        type: "button",
        "aria-label": `Retry job ${j.id}`,
        onclick: async (e: Event) => {
          (e.target as HTMLButtonElement).disabled = true;
          try {
            await call("POST", `/api/v1/admin/jobs/${j.id}/retry`, { as: "admin" });
            say(`Job ${j.id} will be retried now.`);
            await refreshDead();
          } catch (err) {
            failed(`Could not retry job ${j.id}`)(err);
            (e.target as HTMLButtonElement).disabled = false;
          }
        },
      }, "Retry")),
    );
  const refreshDead = async () => {
    const page = await call<ApiPage<Job>>("GET", "/api/v1/admin/jobs?status=failed&limit=20", { as: "admin" });
    fill(dead, page.data.length ? page.data.map(deadRow) : h("tr", null, h("td", { colspan: 6 }, "No dead letters.")));
    deadCursor = page.next_cursor;
    deadMore.hidden = !deadCursor;
  };
  deadMore.addEventListener("click", async () => {
    if (!deadCursor) return;
    const page = await call<ApiPage<Job>>("GET", `/api/v1/admin/jobs?status=failed&limit=20&cursor=${deadCursor}`, { as: "admin" }).catch(failed("Could not load older dead letters"));
    if (!page) return;
    dead.append(...page.data.map(deadRow));
    deadCursor = page.next_cursor;
    deadMore.hidden = !deadCursor;
  });

  let usersCursor: string | null = null;
  const userRow = (u: User) => {
    const weight = h("input", { id: `weight-${u.id}`, type: "number", step: "any", min: "0.01", value: String(u.job_weight), inputmode: "decimal" });
    const form: Form = new Form({ class: "inline compact", label: `Change the weight of ${u.username}` }, async () => {
      const changed = (await call<One<User>>("PATCH", `/api/v1/admin/users/${u.id}`, { as: "admin", body: { job_weight: Number(weight.value) } })).data;
      say(`${changed.username}'s weight is now ${changed.job_weight}; the schedulers apply it within a second.`);
    });
    form.el.append(form.field("/job_weight", `Weight of ${u.username}`, weight), h("button", { type: "submit" }, "Save"), form.errorLine());
    // Empty: the configured default (null); the API states the range when a value is refused.
    const cap = h("input", { id: `max-running-${u.id}`, type: "number", step: "1", min: "1", value: u.max_running === null ? "" : String(u.max_running), placeholder: "default", inputmode: "numeric" });
    const capForm: Form = new Form({ class: "inline compact", label: `Change the most running jobs of ${u.username}` }, async () => {
      const raw = cap.value.trim();
      const changed = (await call<One<User>>("PATCH", `/api/v1/admin/users/${u.id}`, { as: "admin", body: { max_running: raw === "" ? null : Number(raw) } })).data;
      say(`${changed.username}'s max running is now ${changed.max_running ?? "the default"}.`);
    });
    // "Set", not "Save": each button of the row has a name of its own.
    capForm.el.append(capForm.field("/max_running", `Max running of ${u.username}`, cap), h("button", { type: "submit" }, "Set"), capForm.errorLine());
    const row = h(
      "tr",
      { "data-user": String(u.id), "data-paused": String(u.paused) },
      h("td", { class: "num" }, String(u.id)),
      h("td", null, u.username),
      h("td", null, u.disabled ? "disabled" : "active"),
      h("td", null, form.el),
      h("td", null, capForm.el),
      h("td", { class: "paused" }, u.paused ? h("strong", null, "paused") : "no", " ", h("button", {
        type: "button",
        "aria-label": `${u.paused ? "Resume" : "Pause"} ${u.username}`,
        onclick: async (e: Event) => {
          const button = e.target as HTMLButtonElement;
          button.disabled = true;
          try {
            const changed = (await call<One<User>>("POST", `/api/v1/admin/users/${u.id}/${u.paused ? "resume" : "pause"}`, { as: "admin" })).data;
            say(changed.paused ? `${changed.username} is paused: none of their due jobs is dispatched until resumed.` : `${changed.username} is resumed: their due jobs are dispatched again.`);
            const next = userRow(changed);
            row.replaceWith(next);
            next.querySelector<HTMLButtonElement>("td.paused button")?.focus();
          } catch (err) {
            failed(`Could not ${u.paused ? "resume" : "pause"} ${u.username}`)(err);
            button.disabled = false;
          }
        },
      }, u.paused ? "Resume" : "Pause")),
    );
    return row;
  };
  const loadUsers = async (more: boolean) => {
    const page = await call<ApiPage<User>>("GET", `/api/v1/admin/users?limit=50${more && usersCursor ? `&cursor=${usersCursor}` : ""}`, { as: "admin" });
    if (more) users.append(...page.data.map(userRow));
    else fill(users, page.data.length ? page.data.map(userRow) : h("tr", null, h("td", { colspan: USER_COLUMNS.length }, "No users yet.")));
    usersCursor = page.next_cursor;
    usersMore.hidden = !usersCursor;
  };
  usersMore.addEventListener("click", () => void loadUsers(true).catch(failed("Could not load more users")));
  void loadUsers(false).catch(failed("Could not load users"));

  const stops = [
    poll(async () => {
      try {
        await Promise.all([refreshActivity(), refreshShards()]);
        error.clear();
        fill(live, `Updated ${new Date().toLocaleTimeString()}`);
      } catch (e) {
        failed("Could not refresh")(e);
      }
    }, Math.max(2_000, choice.interval * 500)), // twice per interval: a wide window changes slowly
    poll(() => refreshDead().catch(failed("Could not load dead letters")), 5_000),
  ];
  return () => {
    for (const stop of stops) stop();
    shareChart.destroy();
    lateChart.destroy();
    backlogChart.destroy();
  };
};

function forgetAdminToken(): void {
  session.clear("admin");
  say("The admin token is forgotten in this tab.");
  go("#/operator");
}

function adminSignIn(main: HTMLElement): void {
  const token = h("input", { type: "password", name: "admin_token", autocomplete: "off" });
  const form = new Form({ label: "Operator sign-in" }, async () => {
    session.setAdmin(token.value.trim());
    try {
      await call("GET", "/api/v1/admin/users?limit=1", { as: "admin" });
    } catch (e) {
      session.clear("admin");
      throw e;
    }
    say("Admin token accepted for this tab.");
    go("#/operator");
  });
  form.el.append(
    form.errorLine(),
    form.field("/admin_token", "Admin token", token, "the ADMIN_TOKEN the cluster runs with; kept in this tab only"),
    h("div", null, h("button", { class: "primary", type: "submit" }, "Open the operator view")),
  );
  main.append(form.el);
}
