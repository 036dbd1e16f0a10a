// How the dashboard talks to its node: JSON-RPC on POST /jrpc, and Server-Sent Events (GET /events, GET /logs)
// read with fetch() and the small parser below, since EventSource cannot send the Authorization header. The token
// (--rpc-token) is kept in sessionStorage for the tab and sent in that header, never in a URL.
//
// Loaded before app.js, which takes these names from window.cmnode.
'use strict';

(function () {
  const TOKEN_KEY = 'cmnode.token';

  // -- JSON-RPC ------------------------------------------------------------------------------------------------

  class RpcError extends Error {
    constructor(code, message, data) {
      super(message);
      this.code = code;
      this.data = data;
    }
  }

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  let rpcId = 0;
  async function rpc(method, params) {
    const response = await fetch('/jrpc', {
      method: 'POST',
      headers: Object.assign({ 'Content-Type': 'application/json' }, authHeaders()),
      body: JSON.stringify({ jsonrpc: '2.0', method: method, params: params || {}, id: ++rpcId }),
    });
    if (response.status === 401) {
      Alpine.store('auth').ask(sessionStorage.getItem(TOKEN_KEY) ? 'that token was refused' : '');
      throw new RpcError(-32001, 'this node needs a token');
    }
    const body = await response.json();
    if (body.error) throw new RpcError(body.error.code, body.error.message, body.error.data);
    return body.result;
  }

  function describe(error) {
    return String(error && error.message ? error.message : error); // a node's message names the field and the rule
  }

  // -- the event stream ----------------------------------------------------------------------------------------

  // Server-Sent Events as the HTML standard parses them: fields up to a blank line, `data` lines joined, comment
  // lines (": ping") ignored, the last `id` kept for the resume.
  class SseParser {
    constructor(onEvent, lastId) {
      this.onEvent = onEvent;
      this.rest = '';
      this.reset();
      this.lastId = lastId;
    }
    reset() {
      this.type = '';
      this.data = [];
    }
    feed(text) {
      const lines = (this.rest + text).split(/\r\n|\r|\n/);
      this.rest = lines.pop();
      for (const line of lines) this.line(line);
    }
    line(line) {
      if (line === '') {
        if (this.data.length) this.onEvent({ id: this.lastId, type: this.type || 'message', data: this.data.join('\n') });
        this.reset();
        return;
      }
      // A comment; the node's opening block carries an id with no data: where a quiet stream resumes.
      if (line.startsWith(':')) return;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') this.data.push(value);
      else if (field === 'event') this.type = value;
      else if (field === 'id' && !value.includes('\0')) this.lastId = value;
    }
  }

  const listeners = new Set();
  function onEvent(fn) {
    listeners.add(fn);
    return () => listeners.delete(fn);
  }
  function emit(event) {
    for (const fn of listeners) {
      try {
        fn(event);
      } catch (error) {
        console.warn('event handler failed', error);
      }
    }
  }

  // A GET of a Server-Sent Events stream, the token in its header (a 401 asks for the token again).
  async function openStream(url, signal, extra) {
    const headers = Object.assign({ Accept: 'text/event-stream' }, authHeaders(), extra || {});
    const response = await fetch(url, { headers: headers, signal: signal, cache: 'no-store' });
    if (response.status === 401) Alpine.store('auth').ask('that token was refused');
    return response;
  }

  // The text of an open stream, chunk by chunk, to onChunk while keepGoing() holds and the stream lasts.
  async function readStream(response, onChunk, keepGoing) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    while (keepGoing()) {
      const { value, done } = await reader.read();
      if (done) return;
      onChunk(value);
    }
  }

  // One stream for the page. It reconnects after a failure with a growing wait (1 s to 30 s) and resumes from the
  // last id, so no event is missed; a `dropped` event (this reader fell behind) reconnects at once.
  const feed = {
    controller: null,
    lastId: null,
    wait: 1000,
    generation: 0,
    start() {
      this.stop();
      const generation = ++this.generation;
      this.run(generation);
    },
    stop() {
      if (this.controller) this.controller.abort();
      this.controller = null;
    },
    async run(generation) {
      const live = Alpine.store('live');
      while (generation === this.generation) {
        live.set('connecting', '');
        let outcome;
        try {
          outcome = await this.read(generation);
        } catch (error) {
          outcome = error && error.name === 'AbortError' ? 'stopped' : 'failed: ' + describe(error);
        }
        if (generation !== this.generation || outcome === 'stopped' || outcome === 'unauthorized') return;
        if (outcome === 'dropped') continue;
        live.set(outcome === 'missing' ? 'unavailable' : 'reconnecting', outcome);
        await new Promise((resolve) => setTimeout(resolve, this.wait));
        this.wait = Math.min(this.wait * 2, 30000);
      }
    },
    async read(generation) {
      this.controller = new AbortController();
      const resume = this.lastId === null ? {} : { 'Last-Event-ID': this.lastId };
      const response = await openStream('/events', this.controller.signal, resume);
      if (response.status === 401) return 'unauthorized';
      if (response.status === 404) return 'missing';
      if (!response.ok || !response.body) return 'failed: HTTP ' + response.status;
      const live = Alpine.store('live');
      live.set('live', '');
      this.wait = 1000;
      // A stream that does not resume starts at the node's present: the views read their state again after it
      // opened, so nothing that happened before it (or while none was open) is missed.
      const fresh = this.lastId === null;
      let dropped = false;
      const parser = new SseParser((event) => {
        this.lastId = event.id;
        if (event.type === 'dropped') {
          dropped = true;
          return;
        }
        let data = null;
        try {
          data = JSON.parse(event.data);
        } catch (error) {
          return;
        }
        live.count += 1;
        emit({ id: event.id, type: event.type, data: data });
      }, this.lastId);
      let announced = false;
      const onChunk = (text) => {
        parser.feed(text);
        if (parser.lastId !== null) this.lastId = parser.lastId;
        if (fresh && this.lastId !== null && !announced) {
          announced = true;
          emit({ id: null, type: 'reload', data: {} });
        }
      };
      await readStream(response, onChunk, () => generation === this.generation && !dropped);
      if (dropped) {
        this.controller.abort();
        return 'dropped';
      }
      return 'ended';
    },
  };

  window.cmnode = Object.assign(window.cmnode || {}, {
    TOKEN_KEY, RpcError, authHeaders, rpc, describe, SseParser, onEvent, emit, openStream, readStream, feed,
  });
})();
