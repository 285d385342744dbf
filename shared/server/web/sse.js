// text/event-stream over fetch(): EventSource cannot send an Authorization header.
//
// SSEParser follows the HTML standard's parsing rules (the parts the API uses): lines end in
// \r\n, \n or \r; "field: value" (one leading space dropped); `data` lines join with \n; a line
// starting with ":" is a comment (the server's pings); a blank line dispatches the event; an event
// with no data is dropped; the last `id` persists from one event to the next.

import { authHeaders, errorOf, notifyUnauthorized } from "./api.js";
import { sleep } from "./dom.js";

export class SSEParser {
  #buffer = "";
  #data = [];
  #type = "";

  /** `onEvent({id, type, data})` is called for each dispatched event. */
  constructor(onEvent, lastEventId = null) {
    this.onEvent = onEvent;
    this.lastEventId = lastEventId;
  }

  /** Feeds decoded text; any partial line waits for the next call. */
  feed(text) {
    this.#buffer += text;
    const eol = /\r\n|\r|\n/g;
    let start = 0;
    let m;
    while ((m = eol.exec(this.#buffer)) !== null) {
      // a lone \r at the very end may be the first half of \r\n: wait for the next chunk
      if (m[0] === "\r" && m.index === this.#buffer.length - 1) break;
      this.#line(this.#buffer.slice(start, m.index));
      start = eol.lastIndex;
    }
    this.#buffer = this.#buffer.slice(start);
  }

  #line(line) {
    if (line === "") return this.#dispatch();
    if (line.startsWith(":")) return; // a comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#type = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    // "retry" and unknown fields are ignored: the reconnect backoff is our own
  }

  #dispatch() {
    const data = this.#data;
    const type = this.#type || "message";
    this.#data = [];
    this.#type = "";
    if (!data.length) return;
    this.onEvent({ id: this.lastEventId, type, data: data.join("\n") });
  }
}

/** An answer after which reconnecting cannot help (401, 403, 404...). */
export class StreamRefused extends Error {
  constructor(apiError) {
    super(apiError.message);
    this.name = "StreamRefused";
    this.apiError = apiError;
  }
}

const RETRIABLE = new Set([408, 425, 429, 500, 502, 503, 504]);

/**
 * Reads `url` as an event stream until `onEvent` returns true (the stream's end: `final`), or
 * `signal` aborts. A dropped connection (a network error, an answer of 429/5xx, or the stream
 * ending without the last event) reconnects after 0.5 s, doubling up to 5 s, with
 * `Last-Event-ID` set to the last id seen, so no event is missed or repeated.
 *
 * `onState(state)` hears "connecting", "live" and "reconnecting". Returns the last event id (to
 * follow on from later). Throws StreamRefused for an answer that retrying cannot fix (a 401/403
 * also sends the page back to sign-in), and the abort reason when `signal` aborts.
 */
export async function followEvents(url, { signal, onEvent, onState = () => {}, lastEventId = null }) {
  let lastId = lastEventId;
  let backoff = 500;
  onState("connecting");
  for (;;) {
    let done = false;
    try {
      const headers = { ...authHeaders(), Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const res = await fetch(url, { headers, signal, cache: "no-store" });
      if (!res.ok) {
        const err = await errorOf(res);
        if (err.unauthorized) notifyUnauthorized(err);
        if (!RETRIABLE.has(res.status)) throw new StreamRefused(err);
        throw err;
      }
      onState("live");
      const parser = new SSEParser((ev) => {
        if (done) return; // anything after the end is not read
        try {
          done = onEvent(ev) === true;
        } catch (e) {
          console.error("event handler failed", ev.type, e); // reading it again would fail again: go on
        }
        lastId = ev.id ?? lastId;
        backoff = 500; // the connection works: the next drop starts the backoff over
      }, lastId);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      try {
        while (!done) {
          const { value, done: ended } = await reader.read();
          if (ended) break;
          parser.feed(value);
        }
      } finally {
        reader.cancel().catch(() => {});
      }
      if (done) return lastId;
    } catch (e) {
      if (signal?.aborted || e instanceof StreamRefused) throw signal?.aborted ? signal.reason : e;
      // a network error, a retriable status or a broken stream: reconnect below
    }
    onState("reconnecting");
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, 5000);
  }
}
