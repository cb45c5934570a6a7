// Server-Sent Events read with fetch(): EventSource cannot send the API key (no headers of
// one's own), so the page reads the stream's body and parses it here, by the WHATWG rules:
// lines end with \r\n, \n or \r; "data:" lines join with \n; a blank line dispatches;
// ":" lines are comments; one space after the colon is dropped; an id with NUL is ignored.

export class SseParser {
  constructor() {
    this.buffer = "";
    this.reset();
    this.lastEventId = "";
    this.pendingCR = false;
  }

  reset() {
    this.data = [];
    this.event = "";
    this.hasData = false;
  }

  // Feed a chunk of decoded text; returns the events it completed, in order.
  feed(chunk) {
    const out = [];
    let text = chunk;
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1); // a \r\n split across chunks
    this.pendingCR = false;
    this.buffer += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      if (!m) break;
      // A lone \r at the very end may be the first half of \r\n: wait for the next chunk.
      const line = this.buffer.slice(0, m.index);
      if (m[0] === "\r" && m.index === this.buffer.length - 1) this.pendingCR = true;
      this.buffer = this.buffer.slice(m.index + m[0].length);
      const ev = this.line(line);
      if (ev) out.push(ev);
    }
    return out;
  }

  line(line) {
    if (line === "") {
      if (!this.hasData) {
        this.reset();
        return null;
      }
      const ev = { event: this.event || "message", data: this.data.join("\n"), id: this.lastEventId };
      this.reset();
      return ev;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      this.data.push(value);
      this.hasData = true;
    } else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    return null;
  }
}

// The seq in an event id "<turn_id>:<seq>" (or a bare seq); null if there is none.
export function seqOf(id) {
  const m = /(?:^|:)(\d+)$/.exec(id || "");
  return m ? Number(m[1]) : null;
}

// Read a fetch() response's SSE body, calling onEvent(event) for each; resolves when the
// body ends. BOM at the start is dropped, as EventSource does.
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  let first = true;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    let chunk = value;
    if (first && chunk.startsWith("\uFEFF")) chunk = chunk.slice(1);
    first = false;
    for (const ev of parser.feed(chunk)) onEvent(ev);
  }
}
