// The sessions sidebar (search, list, more) and the options a new session starts with.
import { $, h, clear, ago, money } from "./dom.js";
import { getJson } from "./api.js";

const BUILTIN_AGENTS = ["claude", "Explore", "general-purpose", "Plan"];
const SEARCH_DELAY_MS = 250;

export class SessionList {
  constructor() {
    this.query = "";
    this.cursor = null;
    this.current = null;
    this.timer = 0;
    $("session-search").addEventListener("input", (e) => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => {
        this.query = e.target.value.trim();
        this.load();
      }, SEARCH_DELAY_MS);
    });
    $("more-sessions").addEventListener("click", () => this.load(this.cursor));
  }

  async load(cursor = null) {
    const params = new URLSearchParams({ limit: "50" });
    if (this.query) params.set("q", this.query);
    if (cursor) params.set("cursor", cursor);
    const page = await getJson(`/api/sessions?${params}`);
    const list = $("session-list");
    if (!cursor) clear(list);
    for (const s of page.sessions) list.append(this.item(s));
    if (!cursor && !page.sessions.length) {
      list.append(h("li", { class: "muted" }, this.query ? "No session matches." : "No sessions yet."));
    }
    this.cursor = page.next_cursor;
    $("more-sessions").hidden = !this.cursor;
    this.mark(this.current);
  }

  item(s) {
    const turns = `${s.turn_count} turn${s.turn_count === 1 ? "" : "s"}`;
    const running = s.last_turn_status === "running" ? " · running" : "";
    return h(
      "li",
      {},
      h(
        "a",
        { href: `#/s/${encodeURIComponent(s.session_id)}`, dataset: { sessionId: s.session_id } },
        h("span", { class: "title" }, s.title || "(untitled)"),
        h("span", { class: "meta" }, `${ago(s.last_used_at)} · ${turns} · ${money(s.total_cost_usd)}${running}`),
      ),
    );
  }

  mark(sessionId) {
    this.current = sessionId;
    for (const a of $("session-list").querySelectorAll("a")) {
      if (a.dataset.sessionId === sessionId) a.setAttribute("aria-current", "true");
      else a.removeAttribute("aria-current");
    }
  }
}

// The options form: everything for a new session; a resumed one keeps what its CLI needs again
// on every turn (model, permission mode, tools, MCP servers), from its last turn.
export class Options {
  constructor() {
    this.form = $("options-form");
  }

  async loadChoices() {
    const agents = [...BUILTIN_AGENTS];
    let mcp = [];
    try {
      agents.push(...(await getJson("/api/config/agents?limit=500")).agents.map((a) => a.name));
      mcp = (await getJson("/api/config/mcp-servers?limit=500")).mcp_servers.map((m) => m.name);
    } catch {
      // Configuration is for admin keys: others get the built-in agents only.
    }
    const select = $("opt-agent");
    clear(select).append(h("option", { value: "" }, "none"), ...agents.map((a) => h("option", { value: a }, a)));
    const box = clear($("opt-mcp"));
    box.append(h("legend", {}, "MCP servers"));
    if (!mcp.length) box.append(h("p", { class: "muted" }, "None configured."));
    for (const name of mcp) {
      box.append(h("label", { class: "choice" }, h("input", { type: "checkbox", name: "mcp", value: name }), name));
    }
  }

  // A recorded turn's options (GET /api/turns/{id}) as the form holds them: MCP servers are
  // recorded as their config files, mcp-servers/<name>.json.
  static fromTurn(opts) {
    const mcp = (opts.mcp_config || []).map((p) => p.split("/").pop().replace(/\.json$/, ""));
    return { ...opts, mcp_servers: mcp };
  }

  // forNew: whether the fields only a new session takes (workspace, agent) are open.
  setMode(forNew, turnOptions = {}) {
    $("opt-workspace").disabled = !forNew;
    $("opt-agent").disabled = !forNew;
    if (forNew) {
      this.form.reset();
      return;
    }
    $("opt-model").value = turnOptions.model || "";
    $("opt-permission").value = turnOptions.permission_mode || "";
    $("opt-tools").value = (turnOptions.allowed_tools || []).join(", ");
    $("opt-workspace").value = turnOptions.workspace || "";
    const mcp = new Set(turnOptions.mcp_servers || []);
    for (const box of this.form.querySelectorAll('input[name="mcp"]')) box.checked = mcp.has(box.value);
  }

  values(forNew) {
    const out = {};
    const model = $("opt-model").value.trim();
    if (model) out.model = model;
    const mode = $("opt-permission").value;
    if (mode) out.permission_mode = mode;
    const tools = $("opt-tools").value.split(",").map((t) => t.trim()).filter(Boolean);
    if (tools.length) out.allowed_tools = tools;
    const mcp = [...this.form.querySelectorAll('input[name="mcp"]:checked')].map((b) => b.value);
    if (mcp.length) out.mcp_servers = mcp;
    if (forNew) {
      const ws = $("opt-workspace").value.trim();
      if (ws) out.workspace = ws;
      const agent = $("opt-agent").value;
      if (agent) out.agent = agent;
    }
    return out;
  }
}
