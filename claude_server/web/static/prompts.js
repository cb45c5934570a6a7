// Tool approvals and Claude's questions (permission_prompt turns): one dialog at a time,
// closed by the answer, or when the log says the request was resolved some other way.
import { $, h, clear, banner } from "./dom.js";
import { sendJson, sentence } from "./api.js";

const waiting = []; // {kind, turnId, ev}
let showing = null;

export function ask(kind, turnId, ev) {
  if (waiting.some((w) => w.ev.request_id === ev.request_id)) return;
  waiting.push({ kind, turnId, ev });
  next();
}

export function resolved(requestId) {
  const i = waiting.findIndex((w) => w.ev.request_id === requestId);
  if (i >= 0) waiting.splice(i, 1);
  if (showing && showing.ev.request_id === requestId) {
    showing = null;
    $("dlg-prompt").close("resolved");
  }
  next();
}

// Forget everything (another session opened).
export function reset() {
  waiting.length = 0;
  if (showing) {
    showing = null;
    $("dlg-prompt").close("reset");
  }
}

function next() {
  if (showing || !waiting.length) return;
  showing = waiting[0];
  if (showing.kind === "permission") showPermission(showing);
  else showQuestion(showing);
}

function button(label, cls, onclick) {
  return h("button", { type: "button", class: cls, onclick }, label);
}

async function answer(item, path, body) {
  try {
    await sendJson("POST", `/api/turns/${encodeURIComponent(item.turnId)}/${path}/${encodeURIComponent(item.ev.request_id)}`, body);
  } catch (e) {
    if (e.code !== "already_answered") banner(sentence(e.code, e.message));
  }
  resolved(item.ev.request_id);
}

function open(title, body, actions) {
  $("dlg-prompt-title").textContent = title;
  clear($("dlg-prompt-body")).append(...body);
  clear($("dlg-prompt-actions")).append(...actions);
  const dlg = $("dlg-prompt");
  if (!dlg.open) dlg.showModal();
  // Escape would close the dialog unanswered: keep it until an answer or a resolution.
  dlg.oncancel = (e) => e.preventDefault();
  actions[actions.length - 1].focus();
}

function showPermission(item) {
  const ev = item.ev;
  const body = [
    ev.description ? h("p", {}, ev.description) : null,
    ev.blocked_path ? h("p", {}, "Path: ", h("code", {}, ev.blocked_path)) : null,
    h("pre", { class: "permission-input" }, JSON.stringify(ev.input ?? {}, null, 2)),
  ].filter(Boolean);
  const actions = [
    button("Deny", "danger", () => answer(item, "permissions", { behavior: "deny", message: "The user declined." })),
  ];
  if (Array.isArray(ev.suggestions) && ev.suggestions.length) {
    actions.push(button("Always allow", "", () => answer(item, "permissions", { behavior: "allow", remember: true })));
  }
  actions.push(button("Allow", "primary", () => answer(item, "permissions", { behavior: "allow" })));
  open(`Allow ${ev.tool_name}?`, body, actions);
}

function showQuestion(item) {
  const ev = item.ev;
  const inputs = [];
  const body = (ev.questions || []).map((q, qi) => {
    const type = q.multiSelect ? "checkbox" : "radio";
    const name = `q${qi}`;
    const other = h("input", { type: "text", "aria-label": "Another answer", placeholder: "Another answer" });
    inputs.push({ q, name, other });
    return h(
      "fieldset",
      {},
      h("legend", {}, q.question),
      (q.options || []).map((o, oi) =>
        h(
          "label",
          { class: "choice" },
          h("input", { type, name, value: o.label, checked: oi === 0 && type === "radio" }),
          h("span", {}, h("strong", {}, o.label), o.description ? ` – ${o.description}` : ""),
        ),
      ),
      other,
    );
  });
  const submit = () => {
    const answers = {};
    for (const { q, name, other } of inputs) {
      const picked = [...document.querySelectorAll(`#dlg-prompt-body input[name="${name}"]:checked`)].map((i) => i.value);
      answers[q.question] = other.value.trim() || picked.join(", ");
    }
    answer(item, "questions", { answers });
  };
  open(
    "Claude asks",
    body,
    [button("Decline", "danger", () => answer(item, "questions", { behavior: "deny", message: "The user declined." })), button("Answer", "primary", submit)],
  );
}
