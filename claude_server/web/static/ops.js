// Operations, for admin keys: health (running turns, queue, warm pool, tasks), charts from
// /api/stats, running sessions, providers, tasks, and API keys (created with the secret
// shown once, revoked).
import { $, h, clear, money, ago, table, banner, showDialog, confirmDanger } from "./dom.js";
import { getJson, sendJson, sentence } from "./api.js";
import { drawCharts } from "./charts.js";

function card(label, value, note) {
  return h("div", { class: "card" }, h("div", { class: "muted" }, label), h("div", { class: "value" }, value), note ? h("div", { class: "note" }, note) : null);
}

async function section(el, load) {
  clear(el);
  try {
    await load(el);
  } catch (e) {
    el.append(h("p", { class: "muted" }, sentence(e.code, e.message)));
  }
}

export class Ops {
  constructor() {
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.createKey();
    });
  }

  async show() {
    await Promise.all([
      section($("ops-health"), (el) => this.health(el)),
      this.charts(),
      section($("ops-running"), (el) => this.runningTurns(el)),
      section($("ops-providers"), (el) => this.providers(el)),
      section($("ops-tasks"), (el) => this.tasks(el)),
      section($("ops-keys"), (el) => this.keys(el)),
    ]);
  }

  async health(el) {
    const hl = await getJson("/health");
    const warm = hl.warm || {};
    const tasks = hl.tasks || {};
    el.append(
      card("Status", hl.status, hl.problems?.join("; ") || hl.warnings?.join("; ")),
      card("Running turns", `${hl.running_turns} / ${hl.max_concurrent}`),
      card("Queue", `${hl.queue_length} / ${hl.max_queue}`),
      card("Warm CLIs", String(warm.size ?? "–"), `hits ${warm.hits ?? 0}, misses ${warm.misses ?? 0}`),
      card("Tasks", `${tasks.running ?? 0} running`, `${tasks.queued ?? 0} queued`),
      card("CLI", hl.cli?.version || "missing", hl.version ? `server ${hl.version}` : ""),
    );
  }

  async charts() {
    const from = new Date(Date.now() - 29 * 86400_000).toISOString().slice(0, 10);
    const targets = { turns: $("chart-turns"), cost: $("chart-cost"), latency: $("chart-latency") };
    try {
      const stats = await getJson(`/api/stats?group_by=day&from=${from}`);
      await drawCharts(stats.groups, targets);
    } catch (e) {
      targets.turns.replaceChildren(h("p", { class: "muted" }, sentence(e.code, e.message)));
    }
  }

  async runningTurns(el) {
    const page = await getJson("/api/sessions?all=true&limit=200").catch(() => getJson("/api/sessions?limit=200"));
    const rows = page.sessions.filter((s) => s.last_turn_status === "running" || s.last_turn_status === "queued");
    if (!rows.length) return el.append(h("p", { class: "muted" }, "None."));
    el.append(table(["Session", "Status", "Started"], rows.map((s) => [
      h("a", { href: `#/s/${encodeURIComponent(s.session_id)}` }, s.title), s.last_turn_status, ago(s.last_used_at),
    ])));
  }

  async providers(el) {
    const p = await getJson("/api/providers");
    if (!p.configured) return el.append(h("p", { class: "muted" }, "No providers file: turns use the server's own credentials."));
    el.append(table(["Provider", "State", "Failures", "Turns today", "Cost today", "Last error"], p.providers.map((x) => [
      x.name || x.id, x.state, String(x.consecutive_failures ?? 0), String(x.turns_today), money(x.cost_today_usd), x.last_error || "",
    ])));
  }

  async tasks(el) {
    const page = await getJson("/api/tasks?all=true&limit=20").catch(() => getJson("/api/tasks?limit=20"));
    if (!page.tasks.length) return el.append(h("p", { class: "muted" }, "No tasks."));
    el.append(table(["Task", "Status", "Priority", "Prompt", "Cost", "Created"], page.tasks.map((t) => [
      h("code", {}, t.task_id), t.status, String(t.priority), (t.prompt || "").slice(0, 80), money(t.cost_usd), ago(t.created_at),
    ])));
  }

  async keys(el) {
    const { keys } = await getJson("/api/keys");
    $("key-form").hidden = false;
    if (!keys.length) return el.append(h("p", { class: "muted" }, "No keys in the database (operator keys live in the environment)."));
    el.append(table(["Name", "Id", "Admin", "Daily budget", "Created", ""], keys.map((k) => [
      k.name, h("code", {}, k.key_id), k.admin ? "yes" : "no", k.daily_budget_usd === null ? "–" : money(k.daily_budget_usd), ago(k.created_at),
      k.revoked_at ? `revoked ${ago(k.revoked_at)}` : h("button", { type: "button", class: "danger", onclick: () => this.revoke(k) }, "Revoke"),
    ])));
  }

  async createKey() {
    const body = { name: $("key-name").value.trim(), admin: $("key-admin").checked };
    const budget = $("key-budget").value;
    if (budget !== "") body.daily_budget_usd = Number(budget);
    try {
      const made = await sendJson("POST", "/api/keys", body);
      $("dlg-secret-value").textContent = made.secret;
      $("key-form").reset();
      await showDialog($("dlg-secret"));
      $("dlg-secret-value").textContent = "";
    } catch (e) {
      banner(sentence(e.code, e.message));
    }
    await section($("ops-keys"), (el) => this.keys(el));
  }

  async revoke(k) {
    if (!(await confirmDanger(`Revoke the key ${k.name}? Its next request is refused.`, "Revoke"))) return;
    try {
      await sendJson("POST", `/api/keys/${encodeURIComponent(k.key_id)}/revoke`, {});
    } catch (e) {
      banner(sentence(e.code, e.message));
    }
    await section($("ops-keys"), (el) => this.keys(el));
  }
}
