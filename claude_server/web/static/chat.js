// The chat: a session's history redrawn from /api/sessions/{id}/messages, new turns
// streamed from POST /api/claude, and a running turn followed after a reload from its
// event log (/api/turns/{id}/events with Last-Event-ID), with nothing drawn twice.
import { $, h, clear, banner } from "./dom.js";
import { call, getJson, sentence, authHeaders, errorOf } from "./api.js";
import { readEvents, seqOf } from "./sse.js";
import { TurnView } from "./transcript.js";
import * as prompts from "./prompts.js";

const RUNNING_ITEM = "claude-server.running"; // {sessionId, turnId, seq, prompt}
const RECONNECT_TRIES = 8;

export function savedRunning() {
  try {
    return JSON.parse(sessionStorage.getItem(RUNNING_ITEM) || "null");
  } catch {
    return null;
  }
}

function saveRunning(value) {
  if (value) sessionStorage.setItem(RUNNING_ITEM, JSON.stringify(value));
  else sessionStorage.removeItem(RUNNING_ITEM);
}

export class Chat {
  constructor({ options, onSession, onTurnEnd }) {
    this.options = options; // () => the new-session options, or the session's turn options
    this.onSession = onSession; // (sessionId) when a new session gets its id
    this.onTurnEnd = onTurnEnd;
    this.sessionId = null;
    this.running = null; // {turnId, view, seq}
    this.generation = 0; // bumps on every open(): a late answer for another session is dropped
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    $("prompt").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.send();
      }
    });
    $("stop").addEventListener("click", () => this.stop());
  }

  setBusy(busy) {
    $("send").disabled = busy;
    $("stop").hidden = !busy;
    // A screen reader waits for the turn's end instead of reading every token.
    $("transcript").setAttribute("aria-busy", String(busy));
  }

  hooks(turnId) {
    return {
      onRequest: (kind, ev) => prompts.ask(kind, turnId, ev),
      onResolved: (rid) => prompts.resolved(rid),
    };
  }

  newSession() {
    this.generation++;
    this.sessionId = null;
    this.running = null;
    prompts.reset();
    clear($("transcript"));
    this.setBusy(false);
  }

  // Draw a session's history; follow its running turn, if any, from where the history ends.
  async open(sessionId) {
    const gen = ++this.generation;
    this.sessionId = sessionId;
    this.running = null;
    prompts.reset();
    this.setBusy(false);
    const box = clear($("transcript"));
    const detail = await getJson(`/api/sessions/${encodeURIComponent(sessionId)}`);
    const turns = [];
    for (let cursor = null; ; ) {
      const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const page = await getJson(`/api/sessions/${encodeURIComponent(sessionId)}/messages?limit=100${q}`);
      turns.push(...page.turns);
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    if (gen !== this.generation) return null;
    const live = detail.running_turn ? detail.running_turn.turn_id : null;
    for (const t of turns) {
      const isLive = t.turn_id === live;
      const view = new TurnView(box, t.prompt, isLive ? this.hooks(t.turn_id) : {});
      for (const ev of t.events) view.handle(ev);
      if (!isLive) view.showMeta(t.cost_usd);
      if (isLive) {
        // The messages hold the log from seq 1, one event per seq: go on after the last.
        this.follow(t.turn_id, view, t.events.length, t.prompt);
      }
    }
    if (live && !turns.some((t) => t.turn_id === live)) {
      const view = new TurnView(box, "", this.hooks(live));
      this.follow(live, view, 0, "");
    }
    box.scrollTop = box.scrollHeight;
    return { detail, lastTurnId: turns.length ? turns[turns.length - 1].turn_id : null };
  }

  // A turn that started before the page knew its session (reloaded before init): replay it.
  resumeOrphan(saved) {
    const view = new TurnView(clear($("transcript")), saved.prompt || "", this.hooks(saved.turnId));
    this.follow(saved.turnId, view, 0, saved.prompt);
  }

  async send() {
    const text = $("prompt").value;
    if (!text.trim() || this.running) return;
    const gen = this.generation;
    const body = {
      prompt: text,
      include_partial_messages: true,
      permission_prompt: true,
      // Kept running when the page goes away (a reload): the page finds it again by its id.
      detach: true,
      ...this.options(this.sessionId),
    };
    if (this.sessionId) body.session_id = this.sessionId;
    const view = new TurnView($("transcript"), text, {});
    $("transcript").scrollTop = $("transcript").scrollHeight;
    this.setBusy(true);
    let resp;
    try {
      resp = await fetch("/api/claude", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(body),
      });
      if (!resp.ok) throw await errorOf(resp);
    } catch (e) {
      view.handle({ type: "error", code: e.code, message: e.message });
      this.setBusy(false);
      return;
    }
    $("prompt").value = "";
    const turnId = resp.headers.get("X-Turn-Id");
    view.hooks = this.hooks(turnId);
    this.running = { turnId, view, seq: 0, prompt: text };
    saveRunning({ sessionId: this.sessionId, turnId, seq: 0, prompt: text });
    await this.consume(resp, gen);
    if (gen === this.generation && !view.finished) await this.reconnect(gen);
    if (gen === this.generation) await this.finish();
  }

  follow(turnId, view, after, prompt) {
    const gen = this.generation;
    this.running = { turnId, view, seq: after, prompt };
    saveRunning({ sessionId: this.sessionId, turnId, seq: after, prompt });
    this.setBusy(true);
    (async () => {
      await this.reconnect(gen);
      if (gen === this.generation) await this.finish();
    })();
  }

  // Read the turn's events after the last seq seen, again if the connection drops.
  async reconnect(gen) {
    for (let tries = 0; tries < RECONNECT_TRIES && gen === this.generation; tries++) {
      const r = this.running;
      if (!r || r.view.finished) return;
      let resp;
      try {
        resp = await fetch(`/api/turns/${encodeURIComponent(r.turnId)}/events`, {
          headers: authHeaders({ "Last-Event-ID": `${r.turnId}:${r.seq}`, Accept: "text/event-stream" }),
        });
      } catch {
        await new Promise((ok) => setTimeout(ok, 500 * (tries + 1)));
        continue;
      }
      if (resp.status === 204) return; // finished, and every event seen
      if (!resp.ok) {
        const e = await errorOf(resp);
        r.view.handle({ type: "error", code: e.code, message: e.message });
        return;
      }
      await this.consume(resp, gen);
    }
  }

  async consume(resp, gen) {
    const r = this.running;
    try {
      await readEvents(resp, (ev) => {
        if (gen !== this.generation) throw new Error("stale");
        const seq = seqOf(ev.id);
        if (seq !== null) {
          if (seq <= r.seq) return; // seen already (never expected; cheap to be sure)
          r.seq = seq;
        }
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (data.type === "system" && data.subtype === "init" && data.session_id && !this.sessionId) {
          this.sessionId = data.session_id;
          this.onSession(this.sessionId);
        }
        r.view.handle(data);
        saveRunning({ sessionId: this.sessionId, turnId: r.turnId, seq: r.seq, prompt: r.prompt });
        const box = $("transcript");
        if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
      });
    } catch {
      // The connection broke (or another session was opened): reconnect() decides.
    }
  }

  async finish() {
    const r = this.running;
    this.running = null;
    saveRunning(null);
    prompts.reset();
    this.setBusy(false);
    if (!r) return;
    try {
      const turn = await getJson(`/api/turns/${encodeURIComponent(r.turnId)}`);
      r.view.showMeta(turn.cost_usd);
      if (!r.view.finished && turn.error) r.view.handle({ type: "error", ...turn.error });
    } catch {
      // the turn's summary is a nicety
    }
    this.onTurnEnd?.(this.sessionId);
  }

  async stop() {
    const r = this.running;
    if (!r) return;
    $("stop").disabled = true;
    try {
      await call("POST", `/api/turns/${encodeURIComponent(r.turnId)}/cancel`);
    } catch (e) {
      if (e.code !== "not_running") banner(sentence(e.code, e.message));
    } finally {
      $("stop").disabled = false;
    }
  }
}

export function noteInTranscript(text) {
  $("transcript").append(h("p", { class: "note" }, text));
}
