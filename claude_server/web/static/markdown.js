// Markdown to a DOM fragment. Raw HTML in the text is shown as text (escaped, as chat apps
// do), never rendered; DOMPurify then cleans what marked made, in case marked lets through
// anything (a javascript: link, say). Code blocks that name a language are highlighted.
import { Marked } from "./vendor/marked/marked.esm.js";
import DOMPurify from "./vendor/dompurify/purify.es.mjs";
import { highlightCode } from "./code.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    // Block and inline raw HTML alike: its source, escaped.
    html(token) {
      return escapeHtml(token.text ?? token.raw ?? "");
    },
  },
});

const purifier = DOMPurify(window);
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});
const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style"],
};

export function renderMarkdown(text) {
  const html = marked.parse(String(text ?? ""));
  return highlightCode(purifier.sanitize(html, PURIFY));
}
