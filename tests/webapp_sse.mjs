// Feeds the web app's SSE parser (a copy of claude_server/web/static/sse.js, named on the
// command line: as .mjs it is a module to any Node) the chunks given as JSON on stdin
// ({"cases": [[chunk, ...], ...], "ids": [...]}) and prints the events each case gave, as JSON.
import { pathToFileURL } from "node:url";

const { SseParser, seqOf } = await import(pathToFileURL(process.argv[2]).href);
let input = "";
process.stdin.setEncoding("utf8");
for await (const part of process.stdin) input += part;
const { cases, ids } = JSON.parse(input);
const events = cases.map((chunks) => {
  const parser = new SseParser();
  return chunks.flatMap((c) => parser.feed(c));
});
process.stdout.write(JSON.stringify({ events, seqs: ids.map(seqOf) }));
