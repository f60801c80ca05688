/** The console's entry: routes (`#/path?query`) to pages, and the navigation. */
import { session, whenUnauthorized } from "./api.ts";
import { fill, h } from "./dom.ts";
import { signInPage, signUpPage } from "./pages/auth.ts";
import { jobPage } from "./pages/job.ts";
import { jobsPage } from "./pages/jobs.ts";
import { newJobPage } from "./pages/new-job.ts";
import { operatorPage } from "./pages/operator.ts";
import { go, pageChanged, say, signOut, watchExpiry, type Page, type Route } from "./shell.ts";

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
let leave: (() => void) | void;

function parse(): Route {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(2) : "jobs";
  const [path = "", query = ""] = raw.split("?");
  return { path: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

function page(route: Route): { page: Page; title: string; needs: "user" | "none" } {
  const [first, second] = route.path;
  if (first === "signin") return { page: signInPage, title: "Sign in", needs: "none" };
  if (first === "signup") return { page: signUpPage, title: "Sign up", needs: "none" };
  if (first === "operator") return { page: operatorPage, title: "Operator", needs: "none" };
  if (first === "new") return { page: newJobPage, title: "New job", needs: "user" };
  if (first === "jobs" && second) return { page: jobPage, title: `Job ${second}`, needs: "user" };
  return { page: jobsPage, title: "My jobs", needs: "user" };
}

function renderNav(current: string): void {
  const link = (hash: string, text: string, key: string) => h("a", { href: hash, "aria-current": current === key ? "page" : null }, text);
  const signedIn = !!session.user();
  fill(
    nav,
    signedIn ? [link("#/jobs", "My jobs", "jobs"), link("#/new", "New job", "new")] : [link("#/signin", "Sign in", "signin"), link("#/signup", "Sign up", "signup")],
    link("#/operator", "Operator", "operator"),
    signedIn ? h("span", { class: "who" }, h("button", { type: "button", onclick: () => signOut("You are signed out.") }, "Sign out")) : null,
  );
}

function render(): void {
  if (leave) leave();
  leave = undefined;
  const route = parse();
  const chosen = page(route);
  if (chosen.needs === "user" && !session.user()) {
    go("#/signin");
    return;
  }
  // A token past its expiry is not used for a page's first request (the timer may not have fired yet).
  const exp = session.userExpiry();
  if (chosen.needs === "user" && exp !== null && exp * 1000 <= Date.now()) {
    signOut("Your session has expired. Sign in again.");
    return;
  }
  renderNav(route.path[0] === "jobs" && route.path[1] ? "" : (route.path[0] ?? "jobs"));
  document.title = `${chosen.title} - fairshare console`;
  pageChanged();
  main.replaceChildren();
  leave = chosen.page(main, route);
  main.focus({ preventScroll: true });
}

whenUnauthorized((which, message) => {
  if (which === "user") signOut(message);
  else {
    session.clear("admin");
    say(message);
    go(location.hash || "#/operator");
  }
});
window.addEventListener("hashchange", () => {
  // In-page anchors (the skip link) are not routes.
  if (location.hash === "" || location.hash.startsWith("#/")) render();
});
watchExpiry();
render();
