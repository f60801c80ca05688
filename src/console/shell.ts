/**
 * What every page shares: moving between pages, the message line, the session's end. Each page
 * is a function that fills `main` and returns what to stop (its refresh timers) when it is left.
 */
import { session } from "./api.ts";
import { fill } from "./dom.ts";

export interface Route { path: string[]; query: URLSearchParams }
export type Page = (main: HTMLElement, route: Route) => (() => void) | void;

let expiry: ReturnType<typeof setTimeout> | undefined;
let fresh = false;

/** A message in the live region (announced to screen readers), kept through the next page change. */
export function say(message: string): void {
  fill(document.getElementById("notice")!, message);
  fresh = true;
}

/** On a page change: a message said before it stays for the new page, an older one goes. */
export function pageChanged(): void {
  if (!fresh) fill(document.getElementById("notice")!);
  fresh = false;
}

/** Shows the page at `hash` (again, if it is the current one). */
export function go(hash: string): void {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}

export function signOut(message: string): void {
  session.clear("user");
  clearTimeout(expiry);
  say(message);
  go("#/signin");
}

/** Signs out when the token's expiry passes, without waiting for a refused request. */
export function watchExpiry(): void {
  clearTimeout(expiry);
  const exp = session.userExpiry();
  if (exp !== null) expiry = setTimeout(() => signOut("Your session has expired. Sign in again."), Math.max(0, exp * 1000 - Date.now()));
}
