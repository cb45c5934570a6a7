// Feeds the web app's SSE parser (claude_server/web/static/sse.js) the chunks given as JSON on
// stdin ({"cases": [[chunk, ...], ...]}) and prints the events each case gave, as JSON.
import { SseParser, seqOf } from "../claude_server/web/static/sse.js";

let input = "";
process.stdin.setEncoding("utf8");
for await (const part of process.stdin) input += part;
const { cases, ids } = JSON.parse(input);
const events = cases.map((chunks) => {
  const parser = new SseParser();
  return chunks.flatMap((c) => parser.feed(c));
});
process.stdout.write(JSON.stringify({ events, seqs: ids.map(seqOf) }));
