// The session's workspace: browse, download a file or the whole archive, upload (drop files
// on the chat or the panel, or pick them), during a turn too.
import { $, h, clear, bytes, banner } from "./dom.js";
import { call, getJson, sentence } from "./api.js";

const enc = (path) => path.split("/").map(encodeURIComponent).join("/");

export class Files {
  constructor() {
    this.sessionId = null;
    this.path = "";
    $("files-archive").addEventListener("click", () =>
      this.download(`/api/sessions/${encodeURIComponent(this.sessionId)}/archive`, "workspace.tar.gz"),
    );
    $("files-upload").addEventListener("change", (e) => {
      this.upload([...e.target.files]);
      e.target.value = "";
    });
    for (const zone of [$("drop-zone"), $("composer"), $("transcript")]) this.dropTarget(zone);
  }

  dropTarget(zone) {
    zone.addEventListener("dragover", (e) => {
      if (!this.sessionId || !e.dataTransfer.types.includes("Files")) return;
      e.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (e) => {
      zone.classList.remove("dragging");
      if (!this.sessionId || !e.dataTransfer.files.length) return;
      e.preventDefault();
      this.upload([...e.dataTransfer.files]);
    });
  }

  setSession(sessionId) {
    this.sessionId = sessionId;
    this.path = "";
    if (!$("files-panel").hidden) this.refresh();
  }

  async refresh() {
    if (!this.sessionId) return;
    const list = clear($("files-list"));
    this.crumbs();
    let answer;
    try {
      const q = new URLSearchParams({ path: this.path });
      answer = await getJson(`/api/sessions/${encodeURIComponent(this.sessionId)}/files?${q}`);
    } catch (e) {
      list.append(h("li", { class: "muted" }, e.status === 404 ? "No workspace yet." : sentence(e.code, e.message)));
      return;
    }
    const entries = [...answer.entries].sort((a, b) =>
      (a.type === "directory") === (b.type === "directory") ? a.name.localeCompare(b.name) : a.type === "directory" ? -1 : 1,
    );
    if (!entries.length) list.append(h("li", { class: "muted" }, "Empty."));
    for (const e of entries) {
      const full = this.path ? `${this.path}/${e.name}` : e.name;
      const open =
        e.type === "directory"
          ? h("button", { type: "button", onclick: () => this.go(full) }, `${e.name}/`)
          : e.type === "file"
            ? h("button", { type: "button", title: "Download", onclick: () => this.download(this.fileUrl(full), e.name) }, e.name)
            : h("span", {}, `${e.name} (${e.type})`);
      list.append(h("li", { dataset: { name: e.name } }, open, h("span", { class: "size" }, e.type === "file" ? bytes(e.size) : "")));
    }
  }

  crumbs() {
    const nav = clear($("files-path"));
    nav.append(h("button", { type: "button", onclick: () => this.go("") }, "workspace"));
    let acc = "";
    for (const part of this.path ? this.path.split("/") : []) {
      acc = acc ? `${acc}/${part}` : part;
      const to = acc;
      nav.append("/", h("button", { type: "button", onclick: () => this.go(to) }, part));
    }
  }

  go(path) {
    this.path = path;
    this.refresh();
  }

  fileUrl(path) {
    return `/api/sessions/${encodeURIComponent(this.sessionId)}/files/${enc(path)}`;
  }

  // With a key the download needs the Authorization header: fetch it, then hand the browser a blob.
  async download(url, name) {
    try {
      const blob = await (await call("GET", url)).blob();
      const href = URL.createObjectURL(blob);
      const a = h("a", { href, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60_000);
    } catch (e) {
      banner(sentence(e.code, e.message));
    }
  }

  async upload(files) {
    if (!this.sessionId) {
      banner("Send a first message: the session's workspace exists from then on.");
      return;
    }
    const status = $("files-status");
    for (const file of files) {
      const target = this.path ? `${this.path}/${file.name}` : file.name;
      status.textContent = `Uploading ${file.name}…`;
      try {
        await call("PUT", this.fileUrl(target), { body: file, headers: { "Content-Type": "application/octet-stream" } });
        status.textContent = `Uploaded ${file.name}.`;
      } catch (e) {
        status.textContent = `${file.name}: ${sentence(e.code, e.message)}`;
      }
    }
    if (!$("files-panel").hidden) this.refresh();
  }
}
