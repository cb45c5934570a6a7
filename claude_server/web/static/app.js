// The web app: sign-in, the views (chat, operations) by the URL's fragment, and the wiring.
import { $, askText, confirmDanger, banner } from "./dom.js";
import { getJson, call, sendJson, getKey, setKey, onUnauthorized, sentence, ApiError } from "./api.js";
import { Chat, savedRunning } from "./chat.js";
import { SessionList, Options } from "./sessions.js";
import { Files } from "./files.js";
import { Ops } from "./ops.js";

const sessions = new SessionList();
const options = new Options();
const files = new Files();
const ops = new Ops();
let isAdmin = false;
let current = null; // the open session's id

const chat = new Chat({
  options: (sessionId) => options.values(!sessionId),
  onSession: (sessionId) => {
    current = sessionId;
    history.replaceState(null, "", `#/s/${encodeURIComponent(sessionId)}`);
    showSessionControls(true);
    files.setSession(sessionId);
    options.setMode(false, options.values(true));
    sessions.load().then(() => sessions.mark(sessionId));
  },
  onTurnEnd: (sessionId) => {
    sessions.load();
    if (sessionId && sessionId === current && $("chat-title").textContent === "New session") {
      getJson(`/api/sessions/${encodeURIComponent(sessionId)}`).then((s) => ($("chat-title").textContent = s.title)).catch(() => {});
    }
    if (sessionId && !$("files-panel").hidden) files.refresh();
  },
});

function showSessionControls(on) {
  for (const id of ["rename-session", "delete-session", "toggle-files"]) $(id).hidden = !on;
  if (!on) {
    $("files-panel").hidden = true;
    $("toggle-files").setAttribute("aria-expanded", "false");
  }
}

function showView(name) {
  $("signin").hidden = name !== "signin";
  $("chat-view").hidden = name !== "chat";
  $("ops-view").hidden = name !== "ops";
  $("toggle-sidebar").hidden = name !== "chat";
  $("nav-chat").toggleAttribute("aria-current", name === "chat");
  if (name === "chat") $("nav-chat").setAttribute("aria-current", "page");
  $("nav-ops").toggleAttribute("aria-current", name === "ops");
  if (name === "ops") $("nav-ops").setAttribute("aria-current", "page");
}

async function route() {
  const hash = location.hash || "#/";
  $("sidebar").classList.remove("open");
  if (hash === "#/ops") {
    showView("ops");
    return ops.show();
  }
  showView("chat");
  const m = /^#\/s\/(.+)$/.exec(hash);
  if (!m) {
    current = null;
    chat.newSession();
    $("chat-title").textContent = "New session";
    showSessionControls(false);
    options.setMode(true);
    files.setSession(null);
    sessions.mark(null);
    $("prompt").focus();
    return;
  }
  const sessionId = decodeURIComponent(m[1]);
  if (sessionId === current && chat.sessionId === sessionId) return; // the URL caught up with a new session
  current = sessionId;
  sessions.mark(sessionId);
  try {
    const opened = await chat.open(sessionId);
    if (!opened) return;
    $("chat-title").textContent = opened.detail.title || "(untitled)";
    showSessionControls(true);
    files.setSession(sessionId);
    let turnOptions = {};
    if (opened.lastTurnId) {
      const turn = await getJson(`/api/turns/${encodeURIComponent(opened.lastTurnId)}`);
      turnOptions = Options.fromTurn(turn.options || {});
    }
    options.setMode(false, turnOptions);
  } catch (e) {
    banner(e instanceof ApiError ? sentence(e.code, e.message) : String(e));
    if (e.status === 404) location.hash = "#/";
  }
}

async function signedIn() {
  try {
    await getJson("/api/sessions?limit=1");
    return true;
  } catch (e) {
    if (e.status === 401) return false;
    throw e;
  }
}

async function start() {
  if (!(await signedIn())) {
    $("sign-out").hidden = true;
    showView("signin");
    $("signin-key").focus();
    return;
  }
  $("sign-out").hidden = !getKey();
  try {
    await getJson("/api/keys");
    isAdmin = true;
  } catch {
    isAdmin = false;
  }
  $("nav-ops").hidden = !isAdmin;
  options.loadChoices();
  await sessions.load();
  const saved = savedRunning();
  if (saved && saved.sessionId && !location.hash.startsWith("#/s/")) {
    location.hash = `#/s/${encodeURIComponent(saved.sessionId)}`;
  } else if (saved && !saved.sessionId) {
    showView("chat");
    chat.resumeOrphan(saved);
    return;
  }
  await route();
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = $("signin-key").value.trim();
  setKey(key);
  $("signin-error").textContent = "";
  try {
    if (await signedIn()) {
      $("signin-key").value = "";
      await start();
      return;
    }
    $("signin-error").textContent = "That key is not valid (unknown or revoked).";
  } catch (err) {
    $("signin-error").textContent = sentence(err.code, err.message);
  }
  setKey(null);
});

$("sign-out").addEventListener("click", () => {
  setKey(null);
  sessionStorage.clear();
  location.hash = "#/";
  location.reload();
});

onUnauthorized(() => {
  if (!$("signin").hidden) return;
  setKey(null);
  $("signin-error").textContent = "Sign in again: the key is no longer accepted.";
  showView("signin");
});

$("new-session").addEventListener("click", () => {
  location.hash = "#/";
  if (location.hash === "#/") route();
});

$("rename-session").addEventListener("click", async () => {
  const title = await askText("New title", $("chat-title").textContent);
  if (title === null) return;
  try {
    const s = await sendJson("PATCH", `/api/sessions/${encodeURIComponent(current)}`, { title });
    $("chat-title").textContent = s.title;
    sessions.load();
  } catch (e) {
    banner(sentence(e.code, e.message));
  }
});

$("delete-session").addEventListener("click", async () => {
  if (!(await confirmDanger(`Delete “${$("chat-title").textContent}”, its history and its workspace?`))) return;
  try {
    await call("DELETE", `/api/sessions/${encodeURIComponent(current)}`);
    current = null;
    location.hash = "#/";
    await sessions.load();
  } catch (e) {
    banner(sentence(e.code, e.message));
  }
});

$("toggle-files").addEventListener("click", () => {
  const panel = $("files-panel");
  panel.hidden = !panel.hidden;
  $("toggle-files").setAttribute("aria-expanded", String(!panel.hidden));
  if (!panel.hidden) files.refresh();
});

$("toggle-sidebar").addEventListener("click", () => {
  const open = $("sidebar").classList.toggle("open");
  $("toggle-sidebar").setAttribute("aria-expanded", String(open));
});

window.addEventListener("hashchange", () => route());
start().catch((e) => banner(e instanceof ApiError ? sentence(e.code, e.message) : String(e)));
