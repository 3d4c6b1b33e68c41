// Who the console is talking as: GET /v1/caller names the role of the token (or "admin",
// unauthenticated, on a server without tokens), so the pages offer only what it may do.

import { ApiError, call, setToken } from "./api.js";

export const session = {
  /** "admin", "viewer", "" (not signed in / unknown). */
  role: "",
  /** True when the server accepts calls without a token (no tokens configured). */
  open: false,
  get isAdmin() { return this.role === "admin"; },
};

/**
 * Learns the role of the current token (or of no token). Resolves to one of
 * "admin" | "viewer" | "signin" (a token is needed or was refused) | "publisher-only".
 */
export async function detect() {
  let caller;
  try {
    caller = await call("GET", "/v1/caller");
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      session.role = "";
      return "signin";
    }
    throw err;
  }
  session.open = !caller.authenticated;
  if (caller.role !== "admin" && caller.role !== "viewer") {
    session.role = "";
    return "publisher-only";
  }
  session.role = caller.role;
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
