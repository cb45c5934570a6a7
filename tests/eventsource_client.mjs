// A browser's view of a turn's stream: the WhatWG `eventsource` package (pinned in
// package.json) follows a URL for a while, reconnecting as a browser would, and prints one
// JSON object: every connection it made (the Last-Event-ID it sent, the status it got),
// every open/message/error event, and its readyState at the end.
//
// Usage: node tests/eventsource_client.mjs <url> <seconds>

import { EventSource } from "eventsource";

const [url, seconds] = process.argv.slice(2);
if (!url || !seconds) {
  console.error("usage: node tests/eventsource_client.mjs <url> <seconds>");
  process.exit(64);
}

const connections = [];
// Every connection goes through fetch: counting them here sees reconnects the events hide.
async function countingFetch(input, init) {
  const headers = new Headers(init?.headers);
  const connection = { last_event_id: headers.get("last-event-id"), status: null, at_ms: Date.now() - started };
  connections.push(connection);
  const response = await fetch(input, init);
  connection.status = response.status;
  return response;
}

const started = Date.now();
const seen = { opens: 0, messages: [], errors: [] };
const source = new EventSource(url, { fetch: countingFetch });
source.addEventListener("open", () => {
  seen.opens += 1;
});
source.addEventListener("message", (event) => {
  seen.messages.push({ id: event.lastEventId, data: event.data });
});
source.addEventListener("error", (event) => {
  // A failed connection has a code and a message; the server's own `event: error` is a
  // named event that reaches these listeners too, with its data and id.
  seen.errors.push({
    code: event.code ?? null,
    message: event.message ?? null,
    data: event.data ?? null,
    last_event_id: event.lastEventId ?? null,
    ready_state: source.readyState,
  });
});

setTimeout(() => {
  const readyState = source.readyState;
  source.close();
  console.log(JSON.stringify({ ...seen, connections, ready_state: readyState, closed: EventSource.CLOSED }));
}, Number(seconds) * 1000);
