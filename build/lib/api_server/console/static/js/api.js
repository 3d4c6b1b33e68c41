// The HTTP/JSON API of the same origin (DESIGN §9): fetch with the bearer token, errors as
// ApiError carrying the google.rpc.Status details (ErrorInfo reason, BadRequest violations).

const TOKEN_KEY = "listener.console.token";

/** The token lives in sessionStorage only: never in a URL or a cookie. */
export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage disabled: the token is simply not kept */ }
}

/** A failed call: `status` is the HTTP status, `code` the gRPC code name. */
export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.message) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = body && body.code;
    this.reason = "";
    this.metadata = {};
    this.violations = [];
    for (const detail of (body && body.details) || []) {
      const type = String(detail["@type"] || "");
      if (type.endsWith("google.rpc.ErrorInfo")) {
        this.reason = detail.reason || "";
        this.metadata = detail.metadata || {};
      } else if (type.endsWith("google.rpc.BadRequest")) {
        for (const v of detail.fieldViolations || detail.field_violations || []) {
          this.violations.push({ field: v.field || "", description: v.description || "" });
        }
      }
    }
  }
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const token = getToken();
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) params.append(key, String(item));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

async function parseError(response) {
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  return new ApiError(response.status, body || { message: `${response.status} ${response.statusText}` });
}

/** Calls one route; resolves to the parsed JSON answer ({} for an empty one). */
export async function call(method, path, { query, body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), credentials: "omit", cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(url(path, query), init);
  } catch (err) {
    throw new ApiError(0, { code: "UNAVAILABLE", message: `The server cannot be reached (${err.message}).` });
  }
  if (!response.ok) throw await parseError(response);
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

/** Every page of a List call, joined; `field` is the repeated field of the answer. */
export async function listAll(path, field, query = {}) {
  const out = [];
  let pageToken = "";
  for (let guard = 0; guard < 200; guard++) {
    const page = await call("GET", path, { query: { ...query, pageSize: 1000, pageToken } });
    out.push(...(page[field] || []));
    pageToken = page.nextPageToken || "";
    if (!pageToken) break;
  }
  return out;
}

/**
 * Uploads a plugin zip as the raw body of POST /v1/pluginPackages, reporting progress
 * (fetch has no upload progress, XMLHttpRequest does). Resolves to {sha256, size}.
 */
export function uploadPackage(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/pluginPackages");
    xhr.setRequestHeader("Content-Type", "application/zip");
    xhr.setRequestHeader("Accept", "application/json");
    const token = getToken();
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      let body = null;
      try { body = xhr.responseText ? JSON.parse(xhr.responseText) : {}; } catch { body = null; }
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        onProgress(file.size, file.size);
        resolve(body);
      } else {
        reject(new ApiError(xhr.status, body || { message: `${xhr.status} ${xhr.statusText}` }));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, { code: "UNAVAILABLE", message: "The upload failed: the server cannot be reached." }));
    xhr.send(file);
  });
}

let schemaPromise = null;

/** Whether this server's ListenerInstance has a field (from /openapi.json, read once). */
export async function instanceHasField(field) {
  schemaPromise ??= fetch("/openapi.json", { credentials: "omit" })
    .then((r) => (r.ok ? r.json() : {}))
    .catch(() => ({}));
  const doc = await schemaPromise;
  const schema = ((doc.components || {}).schemas || {})["listener.v1.ListenerInstance"] || {};
  return Object.prototype.hasOwnProperty.call(schema.properties || {}, field);
}

// -- routes ------------------------------------------------------------------------------

const enc = encodeURIComponent;
export const idOf = (name) => String(name || "").split("/").pop();

export const api = {
  listPlugins: () => listAll("/v1/plugins", "plugins"),
  getPlugin: (id) => call("GET", `/v1/plugins/${enc(id)}`),
  createPlugin: (request) => call("POST", "/v1/plugins", { body: request }),
  updatePlugin: (id, request) => call("PATCH", `/v1/plugins/${enc(id)}`, { body: request }),
  deletePlugin: (id) => call("DELETE", `/v1/plugins/${enc(id)}`),

  listInstances: () => listAll("/v1/listenerInstances", "listenerInstances"),
  getInstance: (id) => call("GET", `/v1/listenerInstances/${enc(id)}`),
  createInstance: (id, instance) =>
    call("POST", "/v1/listenerInstances", { query: { listenerInstanceId: id }, body: instance }),
  updateInstance: (id, instance, mask) =>
    call("PATCH", `/v1/listenerInstances/${enc(id)}`, { query: { updateMask: mask.join(",") }, body: instance }),
  deleteInstance: (id) => call("DELETE", `/v1/listenerInstances/${enc(id)}`),
  action: (id, verb, body = {}) => call("POST", `/v1/listenerInstances/${enc(id)}:${verb}`, { body }),
  listParked: (id) => listAll(`/v1/listenerInstances/${enc(id)}/parkedEvents`, "parkedEvents"),

  listEvents: (query) => call("GET", "/v1/events", { query }),
};
