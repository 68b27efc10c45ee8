// Live updates: one Server-Sent Events stream from GET /api/live, read with fetch() because
// EventSource cannot send the Authorization header (and a token must never go into a URL).
// Pages subscribe by event name (`value`, `device`, `event`, `command`); `reconnected` is
// dispatched after a connection came back, so pages can fetch what they may have missed.

import {accessHeader, apiUrl, renew} from './api.js';

const subscribers = new Map(); // event name -> Set of handlers
let stateHandler = () => {};
let controller = null; // aborts the running connection loop
let state = 'closed';

export function subscribe(name, handler) {
  if (!subscribers.has(name)) subscribers.set(name, new Set());
  subscribers.get(name).add(handler);
  return () => subscribers.get(name).delete(handler);
}

/** Sets the one handler that shows the connection's state: `connecting`, `open`, `reconnecting` or `closed`. */
export function onState(handler) {
  stateHandler = handler;
  handler(state);
}

function setState(next) {
  state = next;
  stateHandler(state);
}

function dispatch(name, data) {
  for (const handler of [...(subscribers.get(name) || [])]) {
    try {
      handler(data);
    } catch (error) {
      console.error(error);
    }
  }
}

export function start() {
  if (controller) return;
  controller = new AbortController();
  run(controller.signal);
}

export function stop() {
  if (controller) controller.abort();
  controller = null;
  setState('closed');
}

/** Reconnects, e.g. after the system administrator picked another tenant. */
export function restart() {
  stop();
  start();
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, {once: true});
  });
}

async function run(signal) {
  const FIRST_DELAY = 1000;
  let delay = FIRST_DELAY;
  let connections = 0;
  setState('connecting');
  while (!signal.aborted) {
    const opened = await connect(signal, connections > 0);
    if (signal.aborted) return;
    if (opened) {
      connections += 1;
      delay = FIRST_DELAY;
    }
    setState('reconnecting');
    // Back off (1 s, 2 s, 4 s … 30 s) while the server cannot be reached or refuses the stream.
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 30000);
  }
}

function open(signal) {
  return fetch(apiUrl('/api/live'), {
    headers: {Accept: 'text/event-stream', ...accessHeader()},
    cache: 'no-store',
    signal,
  });
}

/** One connection, read to its end; true if the stream was opened at all. */
async function connect(signal, again) {
  let response;
  try {
    response = await open(signal);
    if (response.status === 401) {
      // The access token expired: take a fresh one (this signs out if the session is over).
      await renew();
      response = await open(signal);
    }
  } catch {
    return false;
  }
  if (!response.ok || !response.body) return false;
  setState('open');
  if (again) dispatch('reconnected', {});
  try {
    await read(response.body, signal);
  } catch {
    // A dropped connection or an abort: the loop decides what comes next.
  }
  return true;
}

/** Parses the SSE framing: `event:` and `data:` lines, a blank line ends an event, `:` lines are comments. */
async function read(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener('abort', () => reader.cancel().catch(() => {}), {once: true});
  let buffer = '';
  let name = '';
  let data = [];
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split('\n');
    buffer = lines.pop(); // an unfinished line waits for the next chunk
    for (const raw of lines) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line === '') {
        if (data.length) deliver(name || 'message', data.join('\n'));
        name = '';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const key = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? '' : line.slice(colon + 1);
        if (text.startsWith(' ')) text = text.slice(1);
        if (key === 'event') name = text;
        else if (key === 'data') data.push(text);
      }
    }
  }
}

function deliver(name, text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    console.warn(`live: ${name} event with data that is not JSON`, text);
    return;
  }
  dispatch(name, data);
}
