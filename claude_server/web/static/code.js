// Syntax highlighting of code blocks with highlight.js (its core and the grammars we ship):
// only blocks that name a language (```python); others stay plain. highlight.js builds its
// markup from the block's text, escaped, so nothing of the text becomes HTML.
import hljs from "./vendor/highlight/core.min.js";
import bash from "./vendor/highlight/bash.min.js";
import css from "./vendor/highlight/css.min.js";
import diff from "./vendor/highlight/diff.min.js";
import dockerfile from "./vendor/highlight/dockerfile.min.js";
import go from "./vendor/highlight/go.min.js";
import ini from "./vendor/highlight/ini.min.js";
import javascript from "./vendor/highlight/javascript.min.js";
import json from "./vendor/highlight/json.min.js";
import markdown from "./vendor/highlight/markdown.min.js";
import plaintext from "./vendor/highlight/plaintext.min.js";
import python from "./vendor/highlight/python.min.js";
import rust from "./vendor/highlight/rust.min.js";
import shell from "./vendor/highlight/shell.min.js";
import sql from "./vendor/highlight/sql.min.js";
import typescript from "./vendor/highlight/typescript.min.js";
import xml from "./vendor/highlight/xml.min.js";
import yaml from "./vendor/highlight/yaml.min.js";

const GRAMMARS = { bash, css, diff, dockerfile, go, ini, javascript, json, markdown, plaintext, python, rust, shell, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(GRAMMARS)) hljs.registerLanguage(name, grammar);
hljs.configure({ ignoreUnescapedHTML: true });

export function highlightCode(root) {
  for (const code of root.querySelectorAll("pre > code[class*='language-']")) {
    const lang = [...code.classList].find((c) => c.startsWith("language-"))?.slice(9);
    if (!lang || !hljs.getLanguage(lang)) continue;
    const { value } = hljs.highlight(code.textContent, { language: lang, ignoreIllegals: true });
    code.innerHTML = value; // highlight.js output: the text escaped, in <span class="hljs-...">
    code.classList.add("hljs");
  }
  return root;
}
