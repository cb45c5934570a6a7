// The server's HTTP API as the page uses it. The key lives in sessionStorage only: never in
// a URL (it would reach logs and history) and never in localStorage (it would outlive the tab).

const KEY_ITEM = "claude-server.key";

export function getKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

// Listeners told when the server answers 401 (the key is missing, wrong or revoked).
const unauthorized = new Set();
export function onUnauthorized(fn) {
  unauthorized.add(fn);
}

export function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

// fetch() with the key; a JSON body for objects. Throws ApiError for any non-2xx answer.
export async function call(method, path, { json, body, headers, signal } = {}) {
  const init = { method, headers: authHeaders(headers), signal };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const resp = await fetch(path, init);
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

export async function getJson(path, opts) {
  return (await call("GET", path, opts)).json();
}

export async function sendJson(method, path, json) {
  const resp = await call(method, path, { json });
  return resp.status === 204 ? null : resp.json();
}

export async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const err = body && body.error ? body.error : {};
  const e = new ApiError(resp.status, err.code || `http_${resp.status}`, err.message || resp.statusText, body);
  if (resp.status === 401) for (const fn of unauthorized) fn(e);
  return e;
}

// What an error code means, in a sentence a person can act on.
const HINTS = {
  not_logged_in: "The Claude Code CLI on the server has no credentials.",
  authentication_failed: "The Anthropic API refused the CLI's credentials.",
  api_rate_limited: "The Anthropic API is rate limiting this server; try again shortly.",
  api_overloaded: "The Anthropic API is overloaded; try again shortly.",
  api_error: "The Anthropic API answered with an error.",
  max_turns: "The turn stopped at its limit of agent turns.",
  max_budget: "The turn stopped at its budget.",
  cli_failed: "The Claude Code CLI stopped without an answer.",
  cli_not_found: "The Claude Code CLI is not installed on the server.",
  turn_timeout: "The turn ran too long and was stopped.",
  inactivity_timeout: "The CLI printed nothing for too long and was stopped.",
  cancelled: "Stopped.",
  client_disconnected: "The connection was lost and the turn was stopped.",
  session_deleted: "The session was deleted.",
  server_shutdown: "The server shut down while the turn ran.",
  interrupted: "The server stopped while the turn ran.",
  queue_timeout: "The server was busy: no slot freed up in time.",
  session_busy: "A turn is already running in this session.",
  rate_limited: "Too many turns for this key; wait a minute.",
  budget_exceeded: "This key's daily budget is spent.",
  unauthorized: "The API key is missing or not valid.",
  admin_only: "Only admin keys may do this.",
};

export function sentence(code, message) {
  const hint = HINTS[code];
  if (!hint) return message || code;
  if (!message || code === "cancelled") return hint;
  return `${hint} (${message})`;
}
