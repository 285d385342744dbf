// The API client: the bearer token (sessionStorage), fetch with it, and errors made readable.

const TOKEN_KEY = "llm-jobs-token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An answer that was not 2xx (`status` 0: the server could not be reached). */
export class ApiError extends Error {
  constructor(status, message, lines = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    /** details, one readable line each (the issues of a 422) */
    this.lines = lines;
  }

  get unauthorized() {
    return this.status === 401 || this.status === 403;
  }
}

let onUnauthorized = () => {};

/** What to do when a call answers 401/403 (the page goes back to sign-in). */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** Sends the page back to sign-in for this 401/403 (for calls made without `api`). */
export function notifyUnauthorized(err) {
  onUnauthorized(err);
}

export function authHeaders(bearer = token.get()) {
  return bearer ? { Authorization: `Bearer ${bearer}` } : {};
}

/** A path segment: job ids may hold ":" and "." */
export const seg = (value) => encodeURIComponent(value);

/**
 * Calls the API and returns the JSON body. Options: method, json (a body sent as JSON), body,
 * headers, signal, bearer (a token other than the stored one: the sign-in check), and
 * quietAuth (do not send the page back to sign-in on 401/403).
 */
export async function api(path, { method = "GET", json, body, headers = {}, signal, bearer, quietAuth } = {}) {
  const init = { method, signal, cache: "no-store", headers: { ...authHeaders(bearer ?? token.get()), ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body; // FormData sets its own multipart content type
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "The server could not be reached (network error).");
  }
  if (!res.ok) {
    const err = await errorOf(res);
    if (err.unauthorized && !quietAuth) onUnauthorized(err);
    throw err;
  }
  return res.status === 204 ? null : res.json();
}

/** The ApiError of a failed response, from any of the API's error bodies. */
export async function errorOf(res) {
  let payload = null;
  let text = "";
  try {
    text = await res.text();
    payload = JSON.parse(text);
  } catch {
    /* not JSON: the text (cut short) is the message */
  }
  const { message, lines } = describe(payload, text);
  const prefix = res.status === 401 || res.status === 403 ? "Not signed in" : `Error ${res.status}`;
  const retry = res.headers.get("Retry-After");
  const suffix = res.status === 429 && retry ? ` (try again in ${retry} s)` : "";
  return new ApiError(res.status, `${prefix}: ${message || res.statusText || "request refused"}${suffix}`, lines);
}

/**
 * The readable text of an error body:
 *   {"detail": "text"}                                    our routes
 *   {"detail": [{"message", "field", "line", ...}, ...]}  a 422 (one line each)
 *   {"error": {"message", "param", ...}}                  the OpenAI routes (/v1/files, /v1/batches)
 * plus " (error id …)" when the server logged it under one.
 */
export function describe(payload, text = "") {
  let message = "";
  let lines = [];
  if (payload && typeof payload === "object") {
    const { detail, error } = payload;
    if (typeof detail === "string") message = detail;
    else if (Array.isArray(detail)) {
      lines = detail.map(issueLine);
      message = detail.length === 1 ? lines.shift() : `${detail.length} problems:`;
    } else if (error && typeof error === "object") {
      message = String(error.message ?? "");
      if (error.param && !message.includes(error.param)) message += ` (field ${error.param})`;
    }
    if (payload.error_id) message += ` (error id ${payload.error_id})`;
  } else if (text) {
    message = text.slice(0, 300);
  }
  return { message, lines };
}

function issueLine(issue) {
  if (!issue || typeof issue !== "object") return String(issue);
  const where = [];
  if (issue.line !== null && issue.line !== undefined) where.push(`line ${issue.line}`);
  else if (issue.index !== null && issue.index !== undefined) where.push(`item ${issue.index}`);
  if (issue.field) where.push(`field ${issue.field}`);
  const msg = String(issue.message ?? issue.msg ?? "invalid");
  return where.length ? `${where.join(", ")}: ${msg}` : msg;
}

/**
 * Every page of a job's results (`format` "ours" or "openai"), as one array; or, with `onPage`,
 * each page handed to it as it comes (it returns false to stop) and nothing kept.
 */
export async function allResults(jobId, { format = "ours", signal, onPage } = {}) {
  const rows = [];
  let after = null;
  do {
    const q = new URLSearchParams({ format, limit: "1000" });
    if (after !== null) q.set("after", after);
    const page = await api(`/v1/jobs/${seg(jobId)}/results?${q}`, { signal });
    if (!onPage) rows.push(...page.data);
    else if ((await onPage(page.data)) === false) break; // the caller has enough
    after = page.next_after;
  } while (after);
  return rows;
}
