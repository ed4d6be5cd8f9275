// Connection: the WebSocket to /ws, requests and their replies (`request`), the acks of
// received private messages, the keep-alive ping, disconnection and reconnection with
// backoff, the connection indicator, and what follows the server's hello.

import { $ } from './dom.js';
import { fmtFull, sentence } from './format.js';
import { state } from './state.js';
import { showError, toast } from './toast.js';
import { applyRegistration, leaveApp, loadToken, reloadSignedOut, showAuth, signedOutNotice } from './auth.js';
import { enterApp } from './session.js';
import { onEvent } from './events.js';
import { renderPeople } from './people.js';
import { renderDms, renderHeader } from './conversation.js';

const PROTOCOL = 1;
const PING_EVERY_MS = 25000;
const PING_TIMEOUT_MS = 10000;

// Message ids are integers below 2^53 (docs/PROTOCOL.md), exact as JavaScript numbers.
const parseFrame = (text) => JSON.parse(text);

// ----- Connection -----------------------------------------------------------------------

export const conn = {
  ws: null,
  nextId: 1,
  pending: new Map(),
  closing: null,
  retry: 0,
  reconnectAt: 0,
  timer: null,
  tick: null,
  ping: null,
  open: false,
  waiters: [], // resolvers waiting for the next hello
  shutdownMessage: null, // the administrator's message of a shutdown under way (events.js)
  stopped: null, // after a shutdown: its message, said in the one banner until back
  leaving: false, // signing out: the page reloads once the server answered (auth.js: logout)
};

/** Resolves once connected (at once if already), or after `ms` regardless. */
export function whenOpen(ms = 8000) {
  if (conn.open) return Promise.resolve();
  if (!conn.ws && conn.timer) {
    // Waiting out a back-off: somebody wants to act now, so connect now.
    conn.retry = 0;
    connect();
  }
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    conn.waiters.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function wsUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

export function connect() {
  clearTimeout(conn.timer);
  clearInterval(conn.tick);
  conn.timer = null;
  if (conn.ws || conn.leaving) return;
  setConnState('connecting');
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch {
    scheduleReconnect();
    return;
  }
  conn.ws = ws;
  conn.closing = null;
  conn.open = false;
  ws.addEventListener('message', (ev) => {
    if (ws === conn.ws) onFrame(ev.data);
  });
  ws.addEventListener('close', () => onDisconnect(ws));
}

/** Sends a request; resolves with `data`, rejects with the error frame. */
export function request(cmd, args) {
  return new Promise((resolve, reject) => {
    const ws = conn.ws;
    if (!ws || !conn.open || ws.readyState !== WebSocket.OPEN) {
      reject({ code: 'disconnected', message: 'Not connected to the server: reconnecting, try again in a moment.' });
      return;
    }
    const id = conn.nextId++;
    const frame = { id, cmd };
    if (args) frame.args = args;
    const text = JSON.stringify(frame);
    conn.pending.set(id, { resolve, reject, cmd });
    ws.send(text);
  });
}

// Private messages count as delivered only once acknowledged: the server pushes them
// again at the next sign-in otherwise, and sends the next page of a backlog only after
// the previous one. Ids are gathered and sent together, at most 256 per request.
const acks = { ids: [], timer: null };
export function acknowledge(id) {
  acks.ids.push(id);
  if (!acks.timer) acks.timer = setTimeout(flushAcks, 0);
}
function flushAcks() {
  acks.timer = null;
  while (acks.ids.length) {
    const ids = acks.ids.splice(0, 256);
    // A lost acknowledgement only means the message comes again later.
    request('ack_directs', { ids }).catch(() => {});
  }
}

function onFrame(text) {
  let f;
  try {
    f = parseFrame(text);
  } catch {
    return; // not JSON: ignore
  }
  switch (f.type) {
    case 'hello':
      if (f.protocol !== PROTOCOL) {
        conn.ws.close();
        showAuth(`This page speaks protocol ${PROTOCOL} but the server speaks ${f.protocol}: reload the page.`, 'error');
        return;
      }
      conn.open = true;
      for (const wake of conn.waiters.splice(0)) wake();
      if (f.max_message_chars) state.maxChars = f.max_message_chars;
      applyRegistration(f.registration || 'open');
      startPing();
      afterHello();
      return;
    case 'ok':
    case 'error': {
      const p = f.re !== undefined ? conn.pending.get(f.re) : undefined;
      if (!p) {
        if (f.type === 'error') showError(f, 'Server error');
        return;
      }
      conn.pending.delete(f.re);
      if (f.type === 'ok') p.resolve(f.data || {});
      else p.reject(f);
      return;
    }
    case 'event':
      onEvent(f);
      return;
    case 'closing':
      conn.closing = f;
      return;
    default:
      return; // unknown frame types are ignored
  }
}

function startPing() {
  clearInterval(conn.ping);
  const ws = conn.ws;
  conn.ping = setInterval(() => {
    if (ws !== conn.ws) return;
    let answered = false;
    request('ping').then(() => { answered = true; }, () => { answered = true; });
    setTimeout(() => {
      if (!answered && ws === conn.ws) {
        // The network went away without the socket noticing: start over.
        onDisconnect(ws);
        try { ws.close(); } catch { /* already closed */ }
      }
    }, PING_TIMEOUT_MS);
  }, PING_EVERY_MS);
}

function onDisconnect(ws) {
  if (ws !== conn.ws) return;
  conn.ws = null;
  conn.open = false;
  clearInterval(conn.ping);
  const pending = [...conn.pending.values()];
  conn.pending.clear();
  for (const p of pending) {
    p.reject({ code: 'disconnected', message: 'The connection to the server was lost before it answered.' });
  }
  setConnState('closed');
  // Signing out: the server closes after its answer to `logout`, and the page reloads; a
  // reconnection now would show the sign-in form in the page being left.
  if (conn.leaving) return;
  if (state.signedIn) {
    // Nobody's status is known while disconnected (item 11).
    state.presenceStale = true;
    renderPeople();
    renderDms();
    renderHeader();
  }
  const closing = conn.closing;
  conn.closing = null;
  const code = closing ? closing.code : null;

  if (code === 'kicked' || code === 'banned' || code === 'password_changed') {
    const title = code === 'kicked' ? 'You were disconnected by an administrator'
      : code === 'banned' ? 'Your account is banned'
      : 'Your password was changed';
    const until = closing.until ? ` (until ${fmtFull(closing.until)})` : '';
    // The reloaded page's sign-in form says why; nothing of the session stays in it.
    reloadSignedOut(sentence(`${title}: ${closing.message}${until}`), 'error');
    return;
  }
  if (code === 'logout' || code === 'login_timeout') {
    // A sign-in form left open past the server's login timeout: a fresh connection,
    // quietly.
    conn.retry = 0;
    scheduleReconnect(0);
    return;
  }
  if (code === 'shutdown') {
    // One banner (the connection's) says it, with the administrator's own message
    // (item 11): the countdown's, else the closing frame's.
    conn.stopped = conn.shutdownMessage || closing.message || 'the server is stopping';
    conn.shutdownMessage = null;
    if (state.signedIn || loadToken()) {
      $('shutdown-banner').hidden = true;
    } else {
      // No connection banner on the sign-in screen: this one says it.
      $('shutdown-banner').textContent = `The server has stopped: ${sentence(conn.stopped)}`;
      $('shutdown-banner').hidden = false;
    }
  } else if (code === 'slow_consumer' || code === 'frame_too_large' || code === 'too_many_connections') {
    toast(sentence(closing.message), { kind: 'warn', title: 'Disconnected' });
  }
  scheduleReconnect();
}

function scheduleReconnect(delay) {
  if (delay === undefined) {
    const base = Math.min(10000, 500 * 2 ** conn.retry);
    delay = Math.round(base * (0.75 + Math.random() * 0.5));
    conn.retry += 1;
  }
  clearTimeout(conn.timer);
  clearInterval(conn.tick);
  conn.reconnectAt = Date.now() + delay;
  conn.timer = setTimeout(connect, delay);
  if (state.signedIn || loadToken()) {
    const banner = $('conn-banner');
    const update = () => {
      const left = Math.max(0, Math.ceil((conn.reconnectAt - Date.now()) / 1000));
      const what = conn.stopped ? `The server has stopped: ${sentence(conn.stopped)}` : 'Connection lost.';
      $('conn-banner-text').textContent = left > 0
        ? `${what} Reconnecting in ${left} s…`
        : `${what} Reconnecting…`;
    };
    update();
    banner.hidden = false;
    conn.tick = setInterval(update, 500);
  }
}

function setConnState(s) {
  const el = $('conn-state');
  el.dataset.state = s;
  const label = { open: 'Connected', connecting: 'Connecting…', closed: 'Disconnected' }[s];
  el.setAttribute('aria-label', label);
  el.title = label;
  document.body.dataset.conn = s;
}

/** After the server's hello: resume the session if a token is kept, else sign in. */
function afterHello() {
  setConnState('open');
  clearInterval(conn.tick);
  const token = loadToken();
  // After a sign-out's reload: "You are signed out." (taken at the first hello, token or not).
  const notice = signedOutNotice();
  if (!token) {
    conn.stopped = null;
    $('conn-banner').hidden = true;
    $('shutdown-banner').hidden = true;
    conn.retry = 0;
    if (state.signedIn) leaveApp();
    showAuth(...notice);
    return;
  }
  $('conn-banner-text').textContent = 'Reconnecting…';
  request('resume', { token })
    .then((data) => {
      conn.retry = 0;
      conn.stopped = null;
      $('conn-banner').hidden = true;
      $('shutdown-banner').hidden = true;
      enterApp(data);
    })
    .catch((err) => {
      $('conn-banner').hidden = true;
      if (err.code === 'disconnected') return; // the close handler takes over
      if (err.code === 'shutting_down' || err.code === 'unavailable' || err.code === 'rate_limited') {
        // Temporary: keep the token and try again later.
        const ws = conn.ws;
        conn.ws = null;
        conn.open = false;
        try { ws.close(); } catch { /* closed */ }
        scheduleReconnect(err.retry_after_ms || undefined);
        return;
      }
      // The session drawn in this page (if any) is over: a fresh page, as at sign-out.
      if (err.code === 'invalid_credentials') {
        reloadSignedOut('Your session has ended. Please sign in again.');
      } else {
        reloadSignedOut(sentence(err.message || 'Please sign in again.'), 'error');
      }
    });
}
