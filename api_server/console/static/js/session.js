// Who the console is talking as. The API has no "who am I" call, so the role is learned from
// the answers themselves: a read that fails with 401 means a token is needed; a harmless
// admin-only call tells an admin (it fails on its argument, 400) from a viewer (403) before any
// state is touched — the role check runs before the request is looked at.

import { ApiError, call, getToken, setToken } from "./api.js";

export const session = {
  /** "admin", "viewer", "" (not signed in / unknown). */
  role: "",
  /** True when the server accepts calls without a token (no tokens configured). */
  open: false,
  get isAdmin() { return this.role === "admin"; },
};

/** The harmless admin-only probe: retry an instance whose id cannot exist ("-" is invalid). */
async function probeAdmin() {
  try {
    await call("POST", "/v1/listenerInstances/-:retry", { body: {} });
    return true;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 401)) return false;
    return true; // 400/404: the role check passed
  }
}

/**
 * Learns the role of the current token (or of no token). Resolves to one of
 * "admin" | "viewer" | "signin" (a token is needed or was refused) | "publisher-only".
 */
export async function detect() {
  try {
    await call("GET", "/v1/plugins", { query: { pageSize: 1 } });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      session.role = "";
      return "signin";
    }
    if (err instanceof ApiError && err.status === 403) {
      session.role = "";
      return "publisher-only";
    }
    throw err;
  }
  session.open = !getToken();
  session.role = (await probeAdmin()) ? "admin" : "viewer";
  return session.role;
}

export async function signIn(token) {
  setToken(token.trim());
  const result = await detect();
  if (result === "signin" || result === "publisher-only") setToken("");
  return result;
}

export function signOut() {
  setToken("");
  session.role = "";
}
