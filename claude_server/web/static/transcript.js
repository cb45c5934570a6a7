// A conversation drawn from the turn's events, the same way live and from history: text
// token by token from the partial messages (stream_event deltas), then the full assistant
// message settles each block; thinking and tool calls as collapsed blocks.
import { h, money, duration } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { sentence } from "./api.js";

const RENDER_EVERY_MS = 40;

function toolSummary(name, input) {
  if (!input || typeof input !== "object") return "";
  const first = input.command ?? input.file_path ?? input.path ?? input.pattern ?? input.url ?? input.description;
  if (typeof first === "string") return first.length > 80 ? `${first.slice(0, 80)}…` : first;
  return "";
}

function resultText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((b) => (b && b.type === "text" ? b.text : b && b.type === "image" ? "[image]" : "")).join("\n");
  }
  return content === undefined || content === null ? "" : JSON.stringify(content, null, 2);
}

class TextBlock {
  constructor(parent, type) {
    this.type = type;
    this.text = "";
    this.done = false;
    this.timer = 0;
    if (type === "thinking") {
      this.body = h("div", { class: "body" });
      this.el = h("details", { class: "thinking" }, h("summary", {}, "Thinking"), this.body);
    } else {
      this.body = this.el = h("div", { class: "text", dataset: { role: "text" } });
    }
    parent.append(this.el);
  }

  append(delta) {
    this.text += delta;
    if (!this.timer) this.timer = setTimeout(() => this.render(), RENDER_EVERY_MS);
  }

  settle(text) {
    this.text = text;
    this.done = true;
    this.render();
  }

  render() {
    clearTimeout(this.timer);
    this.timer = 0;
    if (this.type === "thinking") this.body.textContent = this.text;
    else this.body.replaceChildren(renderMarkdown(this.text));
    this.el.dataset.state = this.done ? "done" : "streaming";
  }
}

class ToolBlock {
  constructor(parent, id, name) {
    this.type = "tool_use";
    this.id = id;
    this.done = false;
    this.json = "";
    this.label = h("code", {});
    this.status = h("span", { class: "tool-status" }, "running…");
    this.input = h("pre", { class: "tool-input" });
    this.output = h("pre", { class: "tool-result" });
    this.outputWrap = h("div", { hidden: true }, h("div", { class: "note" }, "Result"), this.output);
    this.el = h(
      "details",
      { class: "tool", dataset: { tool: name, toolUseId: id } },
      h("summary", {}, h("strong", {}, name), " ", this.label, this.status),
      h("div", { class: "note" }, "Input"),
      this.input,
      this.outputWrap,
    );
    parent.append(this.el);
  }

  appendJson(part) {
    this.json += part;
    this.input.textContent = this.json;
  }

  settle(block) {
    this.done = true;
    this.input.textContent = JSON.stringify(block.input ?? {}, null, 2);
    this.label.textContent = toolSummary(block.name, block.input);
  }

  result(content, isError) {
    this.output.textContent = resultText(content);
    this.outputWrap.hidden = false;
    this.status.textContent = isError ? "failed" : "done";
    this.el.dataset.state = isError ? "error" : "done";
  }
}

// One turn: the user's prompt and what came back.
export class TurnView {
  constructor(container, prompt, hooks = {}) {
    this.hooks = hooks;
    this.user = h("div", { class: "msg user", dataset: { role: "prompt" } }, prompt);
    this.body = h("div", { class: "msg assistant" });
    this.meta = h("div", { class: "turn-meta" });
    this.queued = null;
    container.append(this.user, this.body, this.meta);
    this.blocks = new Map(); // "<message id>:<index>" -> block
    this.byMessage = new Map(); // message id -> blocks in order
    this.tools = new Map(); // tool_use id -> ToolBlock
    this.currentMessage = null;
    this.result = null;
    this.error = null;
  }

  block(messageId, index, make) {
    const key = `${messageId}:${index}`;
    let b = this.blocks.get(key);
    if (!b) {
      b = make();
      this.blocks.set(key, b);
      if (!this.byMessage.has(messageId)) this.byMessage.set(messageId, []);
      this.byMessage.get(messageId).push(b);
      if (b.type === "tool_use") this.tools.set(b.id, b);
    }
    return b;
  }

  handle(ev) {
    if (!ev || typeof ev !== "object") return;
    if (this.queued && ev.type !== "queued") {
      this.queued.remove();
      this.queued = null;
    }
    switch (ev.type) {
      case "stream_event":
        return this.partial(ev);
      case "assistant":
        return this.assistant(ev.message || {});
      case "user":
        return this.toolResults(ev.message || {});
      case "result":
        this.result = ev;
        return this.showMeta();
      case "error":
        this.error = ev;
        this.body.append(h("p", { class: "turn-error", role: "alert" }, sentence(ev.code, ev.message)));
        return this.showMeta();
      case "queued":
        if (!this.queued) this.queued = this.body.appendChild(h("p", { class: "note" }));
        this.queued.textContent = `Waiting for a free slot (position ${ev.position}).`;
        return;
      case "permission_request":
        this.body.append(h("p", { class: "note" }, `Claude asks to use ${ev.tool_name}.`));
        return this.hooks.onRequest?.("permission", ev);
      case "question":
        this.body.append(h("p", { class: "note" }, "Claude asks a question."));
        return this.hooks.onRequest?.("question", ev);
      case "permission_resolved":
      case "question_resolved": {
        const what = ev.behavior === "allow" ? (ev.type === "question_resolved" ? "Answered" : "Allowed") : "Declined";
        this.body.append(h("p", { class: "note" }, `${what} (by ${ev.by}).`));
        return this.hooks.onResolved?.(ev.request_id);
      }
      default:
    }
  }

  partial(ev) {
    const e = ev.event || {};
    if (e.type === "message_start") {
      this.currentMessage = e.message?.id ?? null;
      return;
    }
    const id = ev.api_message_id ?? this.currentMessage;
    if (e.type === "content_block_start") {
      const cb = e.content_block || {};
      if (cb.type === "text" || cb.type === "thinking") this.block(id, e.index, () => new TextBlock(this.body, cb.type));
      else if (cb.type === "tool_use") this.block(id, e.index, () => new ToolBlock(this.body, cb.id, cb.name));
    } else if (e.type === "content_block_delta") {
      const b = this.blocks.get(`${id}:${e.index}`);
      const d = e.delta || {};
      if (!b || b.done) return;
      if (d.type === "text_delta") b.append(d.text ?? "");
      else if (d.type === "thinking_delta") b.append(d.thinking ?? "");
      else if (d.type === "input_json_delta" && b.appendJson) b.appendJson(d.partial_json ?? "");
    }
  }

  assistant(message) {
    const id = message.id ?? `m${this.byMessage.size}`;
    const drafts = this.byMessage.get(id) || [];
    for (const block of message.content || []) {
      const kind = block.type === "redacted_thinking" ? "thinking" : block.type;
      if (!["text", "thinking", "tool_use"].includes(kind)) continue;
      let b =
        kind === "tool_use"
          ? this.tools.get(block.id)
          : drafts.find((d) => d.type === kind && !d.done);
      if (!b) {
        const index = `final${(this.byMessage.get(id) || []).length}`;
        b = this.block(id, index, () =>
          kind === "tool_use" ? new ToolBlock(this.body, block.id, block.name) : new TextBlock(this.body, kind),
        );
      }
      if (kind === "tool_use") b.settle(block);
      else b.settle(kind === "thinking" ? block.thinking ?? "" : block.text ?? "");
    }
  }

  toolResults(message) {
    if (!Array.isArray(message.content)) return;
    for (const block of message.content) {
      if (block && block.type === "tool_result") this.tools.get(block.tool_use_id)?.result(block.content, block.is_error);
    }
  }

  // Cost comes from the turn's record (the CLI's total_cost_usd is the session's running total).
  showMeta(costUsd) {
    const parts = [];
    if (this.result) {
      parts.push(duration(this.result.duration_ms));
      if (this.result.num_turns > 1) parts.push(`${this.result.num_turns} steps`);
    }
    if (costUsd !== undefined && costUsd !== null) parts.push(money(costUsd));
    this.meta.textContent = parts.join(" · ");
  }

  get finished() {
    return Boolean(this.result || this.error);
  }
}
