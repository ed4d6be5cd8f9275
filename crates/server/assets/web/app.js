// Salon web client: speaks the native protocol (docs/PROTOCOL.md) over the WebSocket at
// /ws. Plain JavaScript, no build step. Two vendored libraries (vendor/, loaded before this
// file): markdown-it and DOMPurify, for message formatting.
//
// Safety rule: every string that comes from the server or from a user is put in the page
// with textContent / text nodes (see `h`), never parsed as HTML, except a message's text,
// which markdown-it renders with raw HTML disabled and DOMPurify sanitizes into DOM nodes
// (`formatted`); no HTML string is ever assigned to the page.
'use strict';

(() => {
  const PROTOCOL = 1;
  const TOKEN_KEY = 'salon.token';
  const VIEW_KEY = 'salon.view';
  const PING_EVERY_MS = 25000;
  const PING_TIMEOUT_MS = 10000;

  // ----- DOM helpers ----------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  /** Builds an element; string children become text nodes (never HTML). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  // ----- Formatting -----------------------------------------------------------------------

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

  const fmtTime = (ts) => timeFmt.format(new Date(ts));
  const fmtFull = (ts) => fullFmt.format(new Date(ts));
  const dayKey = (ts) => new Date(ts).toDateString();

  function fmtDay(ts) {
    const d = new Date(ts);
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return 'Today';
    const y = new Date(today);
    y.setDate(today.getDate() - 1);
    if (d.toDateString() === y.toDateString()) return 'Yesterday';
    return dayFmt.format(d);
  }

  /** "your request was accepted" -> "Your request was accepted." */
  function sentence(text) {
    const t = text.trim();
    if (!t) return t;
    return t[0].toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.');
  }

  function fmtDuration(seconds) {
    if (seconds < 60) return `${seconds} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  const POLICY_LABEL = { everyone: 'everyone', open: 'open', request: 'on request', private: 'private' };
  const STATE_LABEL = { member: 'member', pending: 'request pending', can_join: 'can join', can_request: 'can request' };
  const STATUS_LABEL = { online: 'online', away: 'away', busy: 'busy', offline: 'offline' };
  const STATUS_ORDER = { online: 0, busy: 1, away: 2, offline: 3 };

  // ----- Message text: a safe subset of Markdown --------------------------------------------

  /** markdown-it with raw HTML off, links made from URLs, and only the constructs a chat
   *  needs: no headings, tables, images, rules or reference definitions. */
  const md = (() => {
    if (typeof window.markdownit !== 'function') return null;
    const it = window.markdownit({ html: false, linkify: true, breaks: true, typographer: false });
    it.disable(['heading', 'lheading', 'table', 'image', 'hr', 'reference', 'html_block', 'html_inline']);
    return it;
  })();
  const purify = window.DOMPurify && window.DOMPurify.isSupported ? window.DOMPurify : null;
  /** What the sanitizer keeps of markdown-it's output: exactly what the enabled rules make. */
  const PURIFY = {
    ALLOWED_TAGS: ['p', 'br', 'strong', 'em', 's', 'code', 'pre', 'blockquote', 'ul', 'ol', 'li', 'a'],
    ALLOWED_ATTR: ['href', 'start'],
    ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
    RETURN_DOM_FRAGMENT: true,
  };

  /** A message's text as DOM nodes: Markdown rendered, sanitized, links opened in a new
   *  tab without referrer or opener, mentions highlighted. Without the libraries (a page
   *  that could not load them), the plain text. */
  function formatted(text, m) {
    if (!md || !purify) return null;
    const frag = purify.sanitize(md.render(text), PURIFY);
    for (const a of frag.querySelectorAll('a')) {
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
    }
    // markdown-it ends blocks with newlines: not part of the text people read.
    for (const n of [...frag.childNodes]) {
      if (n.nodeType === Node.TEXT_NODE && !n.data.trim()) n.remove();
    }
    if (m) highlightMentions(frag, m);
    return frag;
  }

  /** The mentions of a room message as they appear in its text (`@Alias`, `@username`,
   *  `@room`), the longest first. */
  function mentionLabels(m) {
    const out = [];
    const me = state.me ? state.me.username : null;
    if (m.mention_room) out.push({ label: '@room', me: true });
    for (const u of m.mentions || []) {
      const alias = memberAlias(m.room, u);
      out.push({ label: `@${alias}`, me: u === me });
      if (alias.toLowerCase() !== u.toLowerCase()) out.push({ label: `@${u}`, me: u === me });
    }
    return out.sort((a, b) => b.label.length - a.label.length);
  }

  /** Wraps each mention in the text (outside code and links) in a highlighted span. */
  function highlightMentions(root, m) {
    const labels = mentionLabels(m);
    if (!labels.length) return;
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const nodes = [];
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (!(n.parentElement && n.parentElement.closest('code, pre, a'))) nodes.push(n);
    }
    for (let rest of nodes) {
      for (;;) {
        const lower = rest.data.toLowerCase();
        let best = null;
        for (const l of labels) {
          const at = lower.indexOf(l.label.toLowerCase());
          if (at >= 0 && (!best || at < best.at)) best = { at, l };
        }
        if (!best) break;
        const hit = rest.splitText(best.at);
        rest = hit.splitText(best.l.label.length);
        hit.replaceWith(h('span', { class: `mention${best.l.me ? ' me' : ''}` }, hit.data));
      }
    }
  }

  const mentionsMe = (m) => !!state.me && !!m.room
    && (!!m.mention_room || (m.mentions || []).includes(state.me.username));

  /** The beginning of a text, on one line. */
  function snippet(text, n = 120) {
    const t = text.replace(/\s+/g, ' ').trim();
    const chars = [...t];
    return chars.length > n ? `${chars.slice(0, n).join('')}…` : t;
  }

  // Message ids are integers below 2^53 (docs/PROTOCOL.md), exact as JavaScript numbers.
  const parseFrame = (text) => JSON.parse(text);
  const idCmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

  // ----- State ----------------------------------------------------------------------------

  const state = {
    me: null, // account
    rooms: [], // RoomInfo, in the server's order
    people: new Map(), // username -> {username, alias, status}
    convs: new Map(), // key -> conversation
    view: null, // {kind: 'room', name} | {kind: 'dm', user}
    adminOpen: false,
    requests: [], // pending join requests (administrators)
    accounts: [], // accounts waiting for approval (administrators)
    registration: 'open', // the server's registration mode (hello)
    sessions: [], // connected sessions (administrators)
    signedIn: false,
    everSignedIn: false,
    maxChars: 4000,
    typing: new Map(), // conversation key -> Map(username -> {alias, until})
    members: new Map(), // lower-case room name -> Map(username -> alias)
    replyTo: null, // {key, quote}: the message the composer replies to
    editing: null, // {id, where: 'main' | 'thread', draft}: a message being edited
    thread: null, // the open thread panel (openThread)
    backlog: 0, // private messages received while offline still to come (Welcome)
  };

  // ----- Typing indicators: shown for the time the server says, renewed while typing ----

  /** When this page last said it was typing, per conversation (the server forwards it
   *  at most once per 3 s anyway). */
  const typingSent = new Map();

  function typingKey(e) {
    if (!e.room) return `dm:${e.user}`;
    const r = roomInfo(e.room);
    return convKey({ kind: 'room', name: r ? r.name : e.room });
  }

  /** Someone else typing, from a `typing` event. */
  function onTyping(e) {
    if (state.me && e.user === state.me.username) return;
    const key = typingKey(e);
    let who = state.typing.get(key);
    if (!who) state.typing.set(key, (who = new Map()));
    who.set(e.user, { alias: e.alias, until: Date.now() + e.expires_ms });
    renderTyping();
    setTimeout(renderTyping, e.expires_ms + 50);
  }

  /** A message from `user` ends their indicator there. */
  function typingDone(key, user) {
    const who = state.typing.get(key);
    if (who && who.delete(user)) renderTyping();
  }

  function renderTyping() {
    const el = $('typing');
    if (!el) return;
    const who = state.view ? state.typing.get(convKey(state.view)) : undefined;
    const now = Date.now();
    const names = [];
    for (const [user, t] of who || []) {
      if (t.until > now) names.push(t.alias);
      else who.delete(user);
    }
    el.textContent = names.length === 0 ? ''
      : names.length === 1 ? `${names[0]} is typing…`
      : names.length === 2 ? `${names[0]} and ${names[1]} are typing…`
      : 'Several people are typing…';
  }

  /** The composer changed: tell the others, at most once per 3 s per conversation. */
  function sayTyping() {
    const view = state.view;
    if (!view || !state.signedIn || !conn.open || !$('composer-input').value.trim()) return;
    const key = convKey(view);
    const now = Date.now();
    if (now - (typingSent.get(key) || 0) < 3000) return;
    typingSent.set(key, now);
    request('typing', view.kind === 'room' ? { room: view.name } : { with: view.user })
      .catch(() => { /* an indicator only: a refusal changes nothing for the user */ });
  }

  const convKey = (view) => (view.kind === 'room' ? `room:${view.name}` : `dm:${view.user}`);

  function conv(key) {
    let c = state.convs.get(key);
    if (!c) {
      c = {
        key,
        msgs: [],
        ids: new Map(), // id -> message (the object in msgs)
        more: true,
        loaded: false,
        loading: false,
        dirty: false, // a message already shown changed: redraw rather than append
        unread: 0, // the server's count (read state), plus live messages since
        mentions: 0,
        lastRead: 0, // id of the last message read (the server's marker)
        notify: null, // rooms: all | mentions | none
        sepAfter: null, // the "new messages" line goes after this id (set when opened)
        toSep: false, // scroll to that line at the next render with messages
        notices: [], // membership notices: {after: message id, text, ts}
        last: null,
      };
      state.convs.set(key, c);
    }
    return c;
  }

  /** Adds messages (any order); one already present takes the new copy's fields (a
   *  history page fetched again after a reconnect brings edits, deletions, reactions).
   *  True if any was new. */
  function addMessages(c, msgs) {
    let added = false;
    for (const m of msgs) {
      const known = c.ids.get(m.id);
      if (known) {
        if (JSON.stringify({ ...known, event: undefined }) !== JSON.stringify({ ...m, event: undefined })) {
          for (const k of Object.keys(known)) if (!(k in m)) delete known[k];
          Object.assign(known, m);
          c.dirty = true;
        }
        continue;
      }
      if (holdBack(c, m)) continue; // past the end of a search result's window (Search)
      c.ids.set(m.id, m);
      c.msgs.push(m);
      added = true;
    }
    if (added) {
      c.msgs.sort((a, b) => idCmp(a.id, b.id));
      const last = c.msgs[c.msgs.length - 1].id;
      if (!c.newer || !c.last || last > c.last) c.last = last;
    }
    return added;
  }

  function roomInfo(name) {
    const lower = name.toLowerCase();
    return state.rooms.find((r) => r.name.toLowerCase() === lower) || null;
  }

  function aliasOf(username) {
    const p = state.people.get(username);
    return p ? p.alias : username;
  }

  // ----- Token storage --------------------------------------------------------------------

  function loadToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  function saveToken(token, remember) {
    try {
      if (remember === undefined) remember = localStorage.getItem(TOKEN_KEY) !== null;
      sessionStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(TOKEN_KEY);
      (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
    } catch {
      /* storage unavailable: the session simply will not survive a reload */
    }
  }

  function dropToken() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(TOKEN_KEY);
      sessionStorage.removeItem(VIEW_KEY);
    } catch {
      /* nothing stored */
    }
    dropDrafts();
  }

  // ----- Drafts: what is typed belongs to its room or conversation ------------------------
  //
  // The composer's text is kept per conversation: switching away and back restores it, and
  // it never follows the user into another room (where one Enter would post it there). It
  // is kept in the storage that holds the session token, so a draft survives a reload
  // exactly when the session does, for the same user only; signing out forgets them all.

  const DRAFTS_KEY = 'salon.drafts';
  const DRAFTS_MAX = 50; // conversations with a draft kept; the oldest goes first
  let drafts = null; // Map: conversation key -> text (loaded when first needed)
  let draftKey = null; // the conversation the composer's text belongs to

  function draftStorage() {
    try {
      return localStorage.getItem(TOKEN_KEY) !== null ? localStorage : sessionStorage;
    } catch {
      return null;
    }
  }

  function loadDrafts() {
    if (drafts) return drafts;
    drafts = new Map();
    try {
      const saved = JSON.parse(draftStorage()?.getItem(DRAFTS_KEY) || 'null');
      if (saved && state.me && saved.user === state.me.username) {
        for (const [key, text] of Object.entries(saved.drafts || {})) {
          if (typeof text === 'string') drafts.set(key, text);
        }
      }
    } catch {
      /* nothing usable stored */
    }
    return drafts;
  }

  function keepDraft() {
    if (!draftKey || !state.me) return;
    const all = loadDrafts();
    const text = $('composer-input').value;
    all.delete(draftKey);
    if (text) all.set(draftKey, text);
    while (all.size > DRAFTS_MAX) all.delete(all.keys().next().value);
    try {
      draftStorage()?.setItem(DRAFTS_KEY, JSON.stringify({ user: state.me.username, drafts: Object.fromEntries(all) }));
    } catch {
      /* storage full or unavailable: the draft stays for this page only */
    }
  }

  /** The composer now writes in conversation `key`: its draft, or nothing. */
  function switchDraft(key) {
    if (key === draftKey) return;
    draftKey = key;
    $('composer-input').value = loadDrafts().get(key) || '';
    autosize();
  }

  function dropDrafts() {
    drafts = null;
    draftKey = null;
    $('composer-input').value = '';
    try {
      sessionStorage.removeItem(DRAFTS_KEY);
      localStorage.removeItem(DRAFTS_KEY);
    } catch {
      /* nothing stored */
    }
  }

  // ----- Toasts ---------------------------------------------------------------------------

  function toast(text, opts = {}) {
    const kind = opts.kind || 'info';
    const close = h('button', { type: 'button', 'aria-label': 'Dismiss', text: '×' });
    const el = h(
      'div',
      { class: `toast ${kind}`, role: kind === 'error' || kind === 'notice' ? 'alert' : 'status', 'data-kind': kind },
      h('div', { class: 'toast-body' }, opts.title ? h('span', { class: 'toast-title', text: opts.title }) : null, text),
      close,
    );
    const remove = () => el.remove();
    close.addEventListener('click', remove);
    $('toasts').append(el);
    const ms = opts.ms ?? (kind === 'error' ? 9000 : kind === 'notice' ? 30000 : 5000);
    if (ms > 0) setTimeout(remove, ms);
    return el;
  }

  /** Shows a failed request's error: the server's own message. */
  function showError(err, what) {
    let text = err && err.message ? err.message : 'Something went wrong.';
    if (err && err.code === 'rate_limited' && err.retry_after_ms) {
      text += ` (try again in ${Math.ceil(err.retry_after_ms / 1000)} s)`;
    }
    toast(text, { kind: 'error', title: what });
  }

  // ----- Connection -----------------------------------------------------------------------

  const conn = {
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
  };

  /** Resolves once connected (at once if already), or after `ms` regardless. */
  function whenOpen(ms = 8000) {
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

  function connect() {
    clearTimeout(conn.timer);
    clearInterval(conn.tick);
    conn.timer = null;
    if (conn.ws) return;
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
  function request(cmd, args) {
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
  function acknowledge(id) {
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
    const closing = conn.closing;
    conn.closing = null;
    const code = closing ? closing.code : null;

    if (code === 'kicked' || code === 'banned' || code === 'password_changed') {
      const wasIn = state.signedIn;
      dropToken();
      leaveApp();
      const title = code === 'kicked' ? 'You were disconnected by an administrator'
        : code === 'banned' ? 'Your account is banned'
        : 'Your password was changed';
      const until = closing.until ? ` (until ${fmtFull(closing.until)})` : '';
      showAuth(`${title}: ${closing.message}${until}`, 'error');
      if (wasIn) toast(`${closing.message}${until}`, { kind: 'error', title, ms: 0 });
      conn.retry = 0;
      scheduleReconnect(0); // a fresh connection for the sign-in form
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
      $('shutdown-banner').textContent = `The server has stopped: ${closing.message}`;
      $('shutdown-banner').hidden = false;
    } else if (code === 'slow_consumer' || code === 'frame_too_large' || code === 'too_many_connections') {
      toast(closing.message, { kind: 'warn', title: 'Disconnected' });
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
        $('conn-banner-text').textContent = left > 0
          ? `Connection lost. Reconnecting in ${left} s…`
          : 'Connection lost. Reconnecting…';
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
    if (!token) {
      $('conn-banner').hidden = true;
      conn.retry = 0;
      if (state.signedIn) leaveApp();
      showAuth();
      return;
    }
    $('conn-banner-text').textContent = 'Reconnecting…';
    request('resume', { token })
      .then((data) => {
        conn.retry = 0;
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
        dropToken();
        leaveApp();
        if (err.code === 'invalid_credentials') {
          showAuth('Your session has ended. Please sign in again.');
        } else {
          showAuth(err.message || 'Please sign in again.', 'error');
        }
      });
  }

  // ----- Screens --------------------------------------------------------------------------

  function setScreen(name) {
    document.body.dataset.screen = name;
    $('loading').hidden = name !== 'loading';
    $('auth-screen').hidden = name !== 'auth';
    $('app').hidden = name !== 'app';
  }

  function showAuth(notice, kind) {
    setScreen('auth');
    const n = $('auth-notice');
    if (notice) {
      n.textContent = notice;
      n.className = kind === 'error' ? 'notice error' : 'notice';
      n.hidden = false;
    }
    if (!document.activeElement || document.activeElement === document.body) {
      ($('signin-form').hidden ? $('reg-first_name') : $('signin-login')).focus();
    }
  }

  function leaveApp() {
    // Pending messages belong to the session that wrote them.
    for (const entry of outbox.splice(0)) clearTimeout(entry.timer);
    renderPending();
    state.signedIn = false;
    state.me = null;
    state.rooms = [];
    state.people.clear();
    state.convs.clear();
    state.view = null;
    shown.key = null;
    state.adminOpen = false;
    state.requests = [];
    state.accounts = [];
    state.sessions = [];
    state.members.clear();
    state.replyTo = null;
    state.editing = null;
    state.backlog = 0;
    closeThread();
    closePicker();
    leaveFiles();
    resetSearch();
    $('conn-banner').hidden = true;
    updateTitle();
  }

  function selectTab(which) {
    const signin = which === 'signin';
    $('tab-signin').setAttribute('aria-selected', String(signin));
    $('tab-register').setAttribute('aria-selected', String(!signin));
    $('tab-signin').tabIndex = signin ? 0 : -1;
    $('tab-register').tabIndex = signin ? -1 : 0;
    $('signin-form').hidden = !signin;
    $('register-form').hidden = signin;
  }

  function clearFieldErrors(form) {
    for (const el of form.querySelectorAll('[data-field-error]')) el.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const fe = form.querySelector('.form-error');
    if (fe) fe.textContent = '';
  }

  /** Puts a server error next to the field it names, else at the form's level. */
  function showFormError(form, err, inputFor) {
    const fieldEl = err.field ? form.querySelector(`[data-field-error="${CSS.escape(err.field)}"]`) : null;
    let msg = err.message || 'Something went wrong.';
    if (err.code === 'rate_limited' && err.retry_after_ms) msg += ` (try again in ${Math.ceil(err.retry_after_ms / 1000)} s)`;
    if (err.code === 'kicked' && err.until) msg += ` (until ${fmtFull(err.until)})`;
    if (fieldEl) {
      fieldEl.textContent = msg;
      const input = inputFor(err.field);
      if (input) {
        input.setAttribute('aria-invalid', 'true');
        input.focus();
      }
    } else {
      form.querySelector('.form-error').textContent = msg;
    }
  }

  async function onSignIn(ev) {
    ev.preventDefault();
    const form = $('signin-form');
    clearFieldErrors(form);
    const login = $('signin-login').value.trim();
    const password = $('signin-password').value;
    if (!login) return showFormError(form, { field: 'login', message: 'Enter your username or alias.' }, () => $('signin-login'));
    if (!password) return showFormError(form, { field: 'password', message: 'Enter your password.' }, () => $('signin-password'));
    await signIn(form, login, password);
  }

  async function signIn(form, login, password) {
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await whenOpen();
      const data = await request('login', { login, password });
      saveToken(data.token, $('signin-remember').checked);
      $('signin-password').value = '';
      $('auth-notice').hidden = true;
      enterApp(data);
    } catch (err) {
      showFormError(form, err, (f) => (f === 'password' ? $('signin-password') : f === 'login' ? $('signin-login') : null));
      if (form !== $('signin-form')) {
        selectTab('signin');
        $('signin-login').value = login;
        showFormError($('signin-form'), err, () => null);
      }
    } finally {
      button.disabled = false;
    }
  }

  /**
   * What the sign-in screen offers depends on the server's registration mode (hello):
   * open, approval (a note: an administrator approves), invite (a code field, filled from
   * an invitation link `#invite=CODE`), closed (no "Create an account").
   */
  function applyRegistration(mode) {
    state.registration = mode;
    const closed = mode === 'closed';
    $('tab-register').hidden = closed;
    $('signin-closed-note').hidden = !closed;
    if (closed && !$('register-form').hidden) selectTab('signin');
    $('reg-invite-field').hidden = mode !== 'invite';
    const note = $('register-note');
    note.hidden = mode !== 'approval' && mode !== 'invite';
    note.textContent = mode === 'approval'
      ? 'An administrator approves each new account before it can sign in.'
      : 'Creating an account on this server needs an invitation code from an administrator.';
    const code = new URLSearchParams(location.hash.slice(1)).get('invite');
    if (mode === 'invite' && code && !$('reg-invite').value) {
      $('reg-invite').value = code;
      if (!state.signedIn) selectTab('register');
    }
  }

  async function onRegister(ev) {
    ev.preventDefault();
    const form = $('register-form');
    clearFieldErrors(form);
    const args = {};
    for (const f of ['username', 'alias', 'first_name', 'last_name', 'password']) {
      args[f] = f === 'password' ? $(`reg-${f}`).value : $(`reg-${f}`).value.trim();
    }
    if (state.registration === 'invite') args.invite = $('reg-invite').value.trim();
    if (args.password !== $('reg-password2').value) {
      showFormError(form, { field: 'password2', message: 'The two passwords differ.' }, () => $('reg-password2'));
      return;
    }
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    let account;
    try {
      await whenOpen();
      account = await request('register', args);
    } catch (err) {
      button.disabled = false;
      showFormError(form, err, (f) => $(`reg-${f}`));
      return;
    }
    button.disabled = false;
    if (account && account.pending_approval) {
      // Nothing to sign in to yet: say so, on the sign-in tab.
      $('reg-password').value = '';
      $('reg-password2').value = '';
      $('signin-login').value = args.username;
      selectTab('signin');
      showAuth('Your account is created and waits for an administrator\'s approval. You can sign in once it is approved.', 'info');
      return;
    }
    // Registration does not sign in: do it with the same credentials.
    $('reg-password').value = '';
    $('reg-password2').value = '';
    await signIn(form, args.username, args.password);
  }

  // ----- Signed in ------------------------------------------------------------------------

  function enterApp(data) {
    const again = state.everSignedIn && state.me && state.me.username === data.account.username;
    if (!again) leaveApp();
    state.me = data.account;
    state.signedIn = true;
    state.everSignedIn = true;
    state.rooms = data.rooms || [];
    saveToken(data.token);
    setScreen('app');
    selectTab('signin'); // what the next visit of the sign-in screen shows
    for (const input of $('register-form').querySelectorAll('input')) input.value = '';
    $('me').textContent = `${state.me.alias} (${state.me.username})`;
    $('me').title = `${state.me.first_name} ${state.me.last_name}`;
    $('status-select').value = state.me.status === 'offline' ? 'online' : state.me.status;
    $('admin-btn').hidden = !state.me.is_admin;
    if (!state.me.is_admin) state.adminOpen = false;

    // Whatever was loaded before a reconnect may have missed messages: reload on view.
    // The read state is the server's, for every device: it replaces the counts.
    for (const c of state.convs.values()) {
      c.loaded = false;
      c.unread = 0;
      c.mentions = 0;
    }
    for (const rs of data.read_state || []) applyReadState(rs);
    state.backlog = data.offline_directs || 0;
    renderNotifyButton();

    if (!state.view || (state.view.kind === 'room' && !isMember(state.view.name))) {
      let saved = null;
      try { saved = JSON.parse(sessionStorage.getItem(VIEW_KEY) || 'null'); } catch { saved = null; }
      if (saved && saved.kind === 'room' && isMember(saved.name)) state.view = { kind: 'room', name: saved.name };
      else if (saved && saved.kind === 'dm' && typeof saved.user === 'string') state.view = { kind: 'dm', user: saved.user };
      else {
        const first = state.rooms.find((r) => r.state === 'member');
        state.view = first ? { kind: 'room', name: first.name } : null;
      }
    }
    renderRooms();
    renderDms();
    showView();
    loadPeople();
    loadConversations();
    if (state.me.is_admin) {
      state.requests = [];
    state.accounts = [];
      loadRequests();
      if (state.adminOpen) loadSessions();
    }
    if (again) toast('Reconnected.', { ms: 2500 });
    flushOutbox();
  }

  const isMember = (name) => {
    const r = roomInfo(name);
    return !!r && r.state === 'member';
  };

  let presenceRefresh = null; // pending `who` after a presence refresh hint

  function loadPeople() {
    request('who')
      .then((data) => {
        state.people.clear();
        for (const u of data.users || []) state.people.set(u.username, u);
        renderPeople();
        renderDms();
        renderHeader();
      })
      .catch((err) => showError(err, 'Could not load people'));
  }

  /** Earlier private conversations, each with its last message, for the sidebar. */
  function loadConversations() {
    request('conversations')
      .then((data) => {
        for (const c of data.conversations || []) addMessages(conv(`dm:${c.with}`), [c.last]);
        renderDms();
      })
      .catch((err) => showError(err, 'Could not load your conversations'));
  }

  // ----- Rooms ----------------------------------------------------------------------------

  function renderRooms() {
    const list = $('room-list');
    clear(list);
    for (const r of state.rooms) {
      if (r.state === 'none') continue;
      const member = r.state === 'member';
      const c = state.convs.get(`room:${r.name}`);
      const unread = member && c ? shownUnread(c) : 0;
      const current = !state.adminOpen && state.view && state.view.kind === 'room' && state.view.name === r.name;
      let action = null;
      if (r.state === 'can_join') action = ['join', 'Join', `Join ${r.name}`];
      else if (r.state === 'can_request') action = ['request', 'Request', `Ask to join ${r.name}`];
      else if (r.state === 'pending') action = ['withdraw', 'Withdraw', `Withdraw the request to join ${r.name}`];
      else if (member && r.policy !== 'everyone') action = ['leave', 'Leave', `Leave ${r.name}`];
      const label = `${r.name}, ${POLICY_LABEL[r.policy] || r.policy}, ${STATE_LABEL[r.state] || r.state}${unread ? `, ${unread} unread` : ''}`;
      const li = h('li', {
        class: `room-item${member ? '' : ' not-member'}${current ? ' current' : ''}`,
        'data-room': r.name,
        'data-state': r.state,
        'data-policy': r.policy,
      },
      h('button', {
        type: 'button',
        class: 'room-open',
        disabled: !member,
        'aria-current': current ? 'page' : null,
        'aria-label': label,
        title: member ? `Open ${r.name}` : `${r.name}: ${STATE_LABEL[r.state] || r.state}`,
        onclick: () => openView({ kind: 'room', name: r.name }),
      },
      h('span', { class: 'room-name' },
        h('span', { class: 'label', text: `${r.policy === 'private' ? '🔒 ' : '# '}${r.name}` }),
        member && c ? badges(c) : null)),
      h('span', { class: 'room-meta', 'aria-hidden': 'true' },
        h('span', { class: 'tag policy', text: POLICY_LABEL[r.policy] || r.policy }),
        h('span', { class: `tag state-${r.state}`, 'data-state': r.state, text: STATE_LABEL[r.state] || r.state })));
      if (action) {
        li.append(h('button', {
          type: 'button',
          class: 'room-action',
          'data-action': action[0],
          'aria-label': action[2],
          text: action[1],
          onclick: (ev) => roomAction(r.name, action[0], ev.currentTarget),
        }));
      }
      list.append(li);
    }
    updateTitle();
  }

  function setRoom(info) {
    const i = state.rooms.findIndex((r) => r.name.toLowerCase() === info.name.toLowerCase());
    if (i >= 0) state.rooms[i] = info;
    else state.rooms.push(info);
  }

  const ownActions = new Map(); // lower-case room name -> time of our own join/leave

  async function roomAction(name, action, button) {
    button.disabled = true;
    ownActions.set(name.toLowerCase(), Date.now());
    try {
      const data = await request(action === 'join' || action === 'request' ? 'join' : 'leave', { room: name });
      setRoom(data.room);
      if (action === 'join') {
        toast(`You joined ${data.room.name}.`);
        openView({ kind: 'room', name: data.room.name });
      } else if (action === 'request') {
        toast(`Your request to join ${data.room.name} was sent to the administrators.`);
      } else if (action === 'withdraw') {
        toast(`Request to join ${data.room.name} withdrawn.`);
      } else {
        toast(`You left ${data.room.name}.`);
        state.convs.delete(`room:${data.room.name}`);
        if (state.view && state.view.kind === 'room' && state.view.name === data.room.name) {
          openDefault();
        }
      }
      renderRooms();
    } catch (err) {
      button.disabled = false;
      showError(err, `Could not ${action === 'request' ? 'request to join' : action} ${name}`);
    }
  }

  function openDefault() {
    const first = state.rooms.find((r) => r.state === 'member');
    if (first) openView({ kind: 'room', name: first.name });
    else {
      state.view = null;
      showView();
    }
  }

  // ----- Conversations --------------------------------------------------------------------

  function openView(view) {
    if (state.thread && state.thread.key !== convKey(view)) closeThread();
    state.view = view;
    state.adminOpen = false;
    try { sessionStorage.setItem(VIEW_KEY, JSON.stringify(view)); } catch { /* ignore */ }
    setPane('main');
    showView();
    $('composer-input').focus();
  }

  function showView() {
    $('admin').hidden = !state.adminOpen;
    $('chat').hidden = state.adminOpen;
    if (state.adminOpen) {
      renderRooms();
      renderDms();
      renderAdmin();
      return;
    }
    const view = state.view;
    if (!view) {
      $('chat-title').textContent = 'No conversation';
      $('chat-sub').textContent = '';
      clear($('message-list'));
      renderPending();
      shown.key = null;
      $('composer').hidden = true;
      return;
    }
    $('composer').hidden = false;
    const c = conv(convKey(view));
    if (shown.key !== c.key) {
      leaveWindow(shown.key);
      // Opened with unread messages: a "new messages" line where the reading stopped, and
      // the view starts there (unless it opens at a search result).
      c.sepAfter = c.unread > 0 && !c.at ? c.lastRead : null;
      c.toSep = c.sepAfter !== null;
      c.sepPages = 0;
      $('composer-notice').hidden = true;
      closeMentionMenu();
      switchDraft(c.key);
    }
    if (view.kind === 'room') loadMembers(view.name);
    renderHeader();
    renderRooms();
    renderDms();
    renderReplyBar();
    renderAttachments();
    renderMessages(true);
    if (!c.loaded || c.toSep) loadHistory(c, view, false);
  }

  function renderHeader() {
    const view = state.view;
    if (!view || state.adminOpen) return;
    if (view.kind === 'room') {
      const r = roomInfo(view.name);
      $('chat-title').textContent = `${r && r.policy === 'private' ? '🔒' : '#'} ${view.name}`;
      $('chat-sub').textContent = r ? `${POLICY_LABEL[r.policy] || r.policy} room` : '';
      $('composer-input').placeholder = `Message ${view.name}`;
      $('notify-field').hidden = false;
      $('notify-select').value = conv(convKey(view)).notify || 'all';
    } else {
      const p = state.people.get(view.user);
      $('notify-field').hidden = true;
      $('chat-title').textContent = p ? p.alias : view.user;
      $('chat-sub').textContent = p ? `Private conversation with ${p.username} · ${STATUS_LABEL[p.status] || p.status}` : `Private conversation with ${view.user}`;
      $('composer-input').placeholder = `Message ${p ? p.alias : view.user}`;
    }
  }

  async function loadHistory(c, view, older) {
    if (c.loading) return;
    if (!older && c.newer) {
      // A search result's window: the latest page would leave a gap; scrolling down
      // fetches what follows it (Search).
      c.loaded = true;
      return;
    }
    c.loading = true;
    // No `limit`: the server's default page (50, or its `history_page_max` if smaller).
    const args = view.kind === 'room' ? { room: view.name } : { with: view.user };
    if (older && c.msgs.length) args.before = c.msgs[0].id;
    try {
      const data = await request('history', args);
      const msgs = data.messages || [];
      addMessages(c, msgs);
      if (older || !c.loaded) c.more = !!data.more;
      c.loaded = true;
      if (older) c.sepPages = (c.sepPages || 0) + 1;
      const more = needsOlder(c);
      if (state.view && convKey(state.view) === c.key) renderMessages(!older, older);
      renderDms();
      if (more) setTimeout(() => loadHistory(c, view, true), 0);
    } catch (err) {
      showError(err, 'Could not load the history');
    } finally {
      c.loading = false;
    }
  }

  /** What the message list shows, to append new messages instead of redrawing (a
   *  redraw would make screen readers announce the whole log again). */
  const shown = { key: null, count: 0, lastId: null };

  /** The list items of message `i` of the conversation: a day separator if needed, the
   *  "new messages" line if it goes here, the message, then the membership notices that
   *  came after it. */
  function messageItems(c, i, sepId) {
    const msgs = c.msgs;
    const m = msgs[i];
    let prev = i > 0 ? msgs[i - 1] : null;
    const items = [];
    if (i === 0) items.push(...noticeItems(c, -Infinity, m.id));
    if (!prev || dayKey(prev.ts) !== dayKey(m.ts)) {
      items.push(h('li', { class: 'day-sep', role: 'separator', text: fmtDay(m.ts) }));
      prev = null;
    }
    if (m.id === sepId) {
      items.push(h('li', { class: 'new-sep', id: 'new-sep', role: 'separator', 'aria-label': 'New messages' }, h('span', { text: 'New messages' })));
      prev = null;
    }
    const grouped = !!prev && (prev.author ?? prev.from) === (m.author ?? m.from) && m.ts - prev.ts < 5 * 60 * 1000;
    items.push(messageEl(m, grouped, 'main'));
    items.push(...noticeItems(c, m.id, i + 1 < msgs.length ? msgs[i + 1].id : Infinity));
    return items;
  }

  /** The membership notices that came after message `from` and before message `to`. */
  function noticeItems(c, from, to) {
    return c.notices.filter((n) => n.after >= from && n.after < to).map(noticeEl);
  }

  const noticeEl = (n) => h('li', { class: 'msg system member-notice', role: 'note', title: fmtFull(n.ts) }, n.text);

  /** The message the "new messages" line goes before: the first after the read marker
   *  (not one's own) when the conversation was opened. */
  function sepIdOf(c) {
    if (c.sepAfter === null || !state.me) return null;
    const first = c.msgs.find((m) => m.id > c.sepAfter && (m.author ?? m.from) !== state.me.username);
    return first ? first.id : null;
  }

  /** One message: author and time, the quoted message it replies to, its text (or a
   *  tombstone, or the editor), "(edited)", reactions, its reply count, and its actions. */
  function messageEl(m, grouped, where) {
    const author = m.author ?? m.from;
    const alias = m.alias ?? m.from_alias;
    const mine = !!state.me && author === state.me.username;
    const time = h('time', { class: 'msg-time', datetime: new Date(m.ts).toISOString(), title: fmtFull(m.ts), text: fmtTime(m.ts) });
    const editing = !m.deleted && state.editing && state.editing.id === m.id && state.editing.where === where;
    return h('li', {
      class: `msg${grouped ? '' : ' first'}${mine ? ' mine' : ''}${!mine && mentionsMe(m) ? ' mentions-me' : ''}${m.deleted ? ' deleted' : ''}`,
      'data-id': m.id,
      'data-author': author,
      // Focusable by a tap, so that touch screens (no hover) show the actions too.
      tabindex: -1,
    },
    h('div', { class: grouped ? 'msg-head visually-hidden' : 'msg-head' },
      h('span', { class: 'msg-author', title: author, text: alias }),
      time),
    m.reply_to ? quoteEl(m.reply_to, where) : null,
    editing ? editForm(m, where) : textEl(m),
    m.deleted ? null : attachmentsEl(m),
    footEl(m, where),
    m.deleted || editing ? null : actionsEl(m, mine, where));
  }

  function textEl(m) {
    if (m.deleted) return h('div', { class: 'msg-text tombstone', text: 'message deleted' });
    if (!m.text && m.attachments && m.attachments.length) return h('div', { class: 'msg-text', hidden: true });
    const frag = formatted(m.text, m);
    return frag ? h('div', { class: 'msg-text md' }, frag) : h('div', { class: 'msg-text', text: m.text });
  }

  /** The message replied to: a button that shows it. */
  function quoteEl(q, where) {
    return h('button', {
      type: 'button',
      class: 'msg-quote',
      'data-quote': q.id,
      title: 'Show the original message',
      onclick: () => jumpTo(q.id, where),
    },
    h('span', { class: 'quote-author', text: q.alias }),
    h('span', { class: `quote-text${q.deleted ? ' tombstone' : ''}`, text: q.deleted ? 'message deleted' : snippet(q.text) }));
  }

  function footEl(m, where) {
    const parts = [];
    if (m.edited && !m.deleted) parts.push(h('span', { class: 'msg-edited', title: `Edited ${fmtFull(m.edited)}`, text: '(edited)' }));
    if (!m.deleted) for (const r of m.reactions || []) parts.push(reactionChip(m, r));
    if (m.replies > 0 && !(where === 'thread' && state.thread && state.thread.root.id === m.id)) {
      parts.push(h('button', {
        type: 'button',
        class: 'msg-replies',
        'data-replies': m.replies,
        text: `${m.replies} ${m.replies === 1 ? 'reply' : 'replies'}`,
        onclick: () => openThread(m),
      }));
    }
    return parts.length ? h('div', { class: 'msg-foot' }, parts) : null;
  }

  function actionsEl(m, mine, where) {
    const admin = !!state.me && state.me.is_admin && !!m.room;
    const button = (op, label, text, act) => h('button', {
      type: 'button', class: 'msg-action', 'data-op': op, 'aria-label': label, title: label, text, onclick: act,
    });
    return h('div', { class: 'msg-actions', role: 'toolbar', 'aria-label': 'Message actions' },
      button('react', 'Add a reaction', '☺', (ev) => openPicker(ev.currentTarget, m)),
      button('reply', 'Reply', '↩', () => (where === 'thread' ? $('thread-input').focus() : startReply(m))),
      mine ? button('edit', 'Edit', '✎', () => startEdit(m, where)) : null,
      mine || admin ? button('delete', 'Delete', '🗑', () => askDelete(m)) : null);
  }

  /** Renders the current conversation. `toBottom`: scroll to the newest message;
   *  `keep`: keep the visible messages in place (older ones were added above). The first
   *  render with messages of a conversation opened with unread messages scrolls to the
   *  "new messages" line instead. */
  function renderMessages(toBottom, keep) {
    if (!state.view) return;
    renderTyping();
    const box = $('messages');
    const c = conv(convKey(state.view));
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const fromBottom = box.scrollHeight - box.scrollTop;
    const list = $('message-list');
    const sepId = sepIdOf(c);
    const appendOnly = !c.dirty && shown.key === c.key && shown.count > 0 && c.msgs.length >= shown.count
      && c.msgs[shown.count - 1].id === shown.lastId;
    if (appendOnly) {
      for (let i = shown.count; i < c.msgs.length; i += 1) list.append(...messageItems(c, i, sepId));
    } else {
      clear(list);
      if (!c.msgs.length) list.append(...noticeItems(c, -Infinity, Infinity));
      for (let i = 0; i < c.msgs.length; i += 1) list.append(...messageItems(c, i, sepId));
    }
    c.dirty = false;
    renderPending();
    shown.key = c.key;
    shown.count = c.msgs.length;
    shown.lastId = c.msgs.length ? c.msgs[c.msgs.length - 1].id : null;
    $('load-older').hidden = !(c.loaded && c.more && c.msgs.length);
    $('history-start').hidden = !(c.loaded && !c.more);
    const sep = c.toSep && c.loaded ? $('new-sep') : null;
    if (c.loaded && c.msgs.length && !needsOlder(c)) c.toSep = false;
    if (windowScroll(c, keep)) { /* at a search result, or its window left where it is */ }
    else if (sep) box.scrollTop = sep.offsetTop - 8; // .messages is the offset parent
    else if (keep) box.scrollTop = box.scrollHeight - fromBottom;
    else if (toBottom || atBottom) box.scrollTop = box.scrollHeight;
    scheduleMarkRead();
  }

  /** Draws again the messages with these ids where they are shown (main list, thread). */
  function refreshMessages(ids) {
    const c = state.view && !state.adminOpen ? conv(convKey(state.view)) : null;
    for (const id of ids) {
      const li = $('message-list').querySelector(`li.msg[data-id="${id}"]`);
      const m = c && c.ids.get(id);
      if (li && m) li.replaceWith(messageEl(m, !li.classList.contains('first'), 'main'));
    }
    if (state.thread && ids.some((id) => state.thread.ids.has(id) || state.thread.root.id === id)) renderThread();
  }

  /** Opening at the "new messages" line: up to 4 more pages are loaded to reach it. */
  function needsOlder(c) {
    return c.toSep && c.more && c.msgs.length > 0 && c.msgs[0].id > c.sepAfter && (c.sepPages || 0) < 4;
  }

  function onScroll() {
    const box = $('messages');
    scheduleMarkRead();
    windowOnScroll();
    if (box.scrollTop > 40 || !state.view || state.adminOpen) return;
    const c = conv(convKey(state.view));
    if (c.loaded && c.more && c.msgs.length) loadHistory(c, state.view, true);
  }

  function renderDms() {
    const list = $('dm-list');
    clear(list);
    const dms = [...state.convs.values()]
      .filter((c) => c.key.startsWith('dm:') && (c.msgs.length || c.unread || (state.view && state.view.kind === 'dm' && convKey(state.view) === c.key)))
      .sort((a, b) => (a.last && b.last ? idCmp(b.last, a.last) : a.last ? -1 : b.last ? 1 : 0));
    for (const c of dms) {
      const user = c.key.slice(3);
      const p = state.people.get(user);
      const current = !state.adminOpen && state.view && state.view.kind === 'dm' && state.view.user === user;
      list.append(h('li', { class: `dm-item${current ? ' current' : ''}`, 'data-user': user },
        h('button', {
          type: 'button',
          class: 'dm-open',
          'aria-current': current ? 'page' : null,
          'aria-label': `Private conversation with ${p ? p.alias : user}${shownUnread(c) ? `, ${shownUnread(c)} unread` : ''}`,
          onclick: () => openView({ kind: 'dm', user }),
        },
        h('span', { class: 'dot', 'data-status': p ? p.status : 'offline', 'aria-hidden': 'true' }),
        h('span', { class: 'person-name', text: p ? p.alias : user }),
        badges(c))));
    }
    $('dm-empty').hidden = dms.length > 0;
    updateTitle();
  }

  /** The tab's title and the favicon show how many messages are unread (not counting the
   *  conversation being read). */
  function updateTitle() {
    let n = 0;
    if (state.signedIn) for (const c of state.convs.values()) n += shownUnread(c);
    document.title = n ? `(${n >= 1000 ? '999+' : n}) Salon` : 'Salon';
    drawFavicon(n);
    // On a phone the lists are behind ☰: it carries the count of what is unread there.
    const toggle = $('nav-toggle');
    toggle.setAttribute('aria-label', n ? `Rooms and conversations, ${n} unread` : 'Rooms and conversations');
    if (n) toggle.dataset.unread = n >= 1000 ? '999+' : String(n);
    else delete toggle.dataset.unread;
  }

  // ----- Sending: every message has a key; unacknowledged ones are sent again ----------

  /** Messages written but not yet acknowledged, oldest first. Each carries an idempotency
   *  key: sent again with the same key (after a reconnect, or while the server answers
   *  `unavailable`), it is stored once. Shown as pending meanwhile. */
  const outbox = [];
  const RETRY_MAX_MS = 30000;

  /** 128 random bits in hex. (crypto.randomUUID needs a secure context; this does not.) */
  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function onSend(ev) {
    ev.preventDefault();
    const input = $('composer-input');
    const text = input.value;
    if (!state.view) return;
    const files = readyAttachments(state.view);
    if (files === null) return; // uploads still running: said under the box
    if (!text.trim() && !files.length) return;
    jumpToLatest(conv(convKey(state.view)));
    input.value = '';
    keepDraft();
    autosize();
    closeMentionMenu();
    const r = state.replyTo && state.replyTo.key === convKey(state.view) ? state.replyTo.quote : null;
    cancelReply();
    clearAttachments(state.view);
    queueMessage(state.view, text, r, files);
  }

  /** A message written: pending until acknowledged. `quote`: the message it replies to. */
  function queueMessage(view, text, quote, files = []) {
    $('composer-notice').hidden = true;
    const entry = { key: newKey(), view: { ...view }, text, quote, files, tries: 0, sending: false, timer: null, note: 'Sending…' };
    outbox.push(entry);
    renderPending();
    deliver(entry);
  }

  function dropEntry(entry) {
    clearTimeout(entry.timer);
    const i = outbox.indexOf(entry);
    if (i >= 0) outbox.splice(i, 1);
    renderPending();
  }

  /** The server queues a message's event to its author before the reply to `send`: the
   *  first pending entry of that conversation with that text, being sent, is the one the
   *  event shows. It leaves the pending list now (its reply, when it comes, finds it
   *  gone and adds nothing: the event did). */
  function settleOwn(view, text, attachments) {
    const key = convKey(view);
    const ids = (attachments || []).map((a) => a.id).join(',');
    const entry = outbox.find((o) => o.sending && o.text === text && convKey(o.view) === key
      && (o.files || []).map((a) => a.id).join(',') === ids);
    if (entry) dropEntry(entry);
  }

  /** Sends (or sends again) one pending message with its key. */
  function deliver(entry) {
    if (entry.sending || !outbox.includes(entry)) return;
    clearTimeout(entry.timer);
    entry.timer = null;
    entry.sending = true;
    const { view, text, key, quote, files } = entry;
    const reply = quote ? { reply_to: quote.id } : {};
    if (files && files.length) reply.attachments = files.map((a) => a.id);
    const sent = view.kind === 'room'
      ? request('send', { room: view.name, text, key, ...reply })
      : request('direct', { to: view.user, text, key, ...reply });
    sent.then((acc) => {
      entry.sending = false;
      const wasPending = outbox.includes(entry);
      dropEntry(entry);
      if (!state.me) return; // signed out meanwhile
      if (acc.not_notified && acc.not_notified.length) notNotified(view, acc.not_notified);
      if (!wasPending) return;
      // Add it from the reply: a retry's reply may be all there is (its event went out
      // with the first attempt).
      const c = conv(convKey(view));
      const mine = view.kind === 'room'
        ? { id: acc.id, ts: acc.ts, room: view.name, author: state.me.username, alias: state.me.alias, text }
        : { id: acc.id, ts: acc.ts, from: state.me.username, from_alias: state.me.alias, to: view.user, text };
      if (quote) mine.reply_to = quote;
      if (files && files.length) mine.attachments = files;
      if (addMessages(c, [mine])) replyArrived(c, mine);
      if (isCurrent(c)) renderMessages(true);
      if (view.kind === 'dm') renderDms();
    }, (err) => {
      entry.sending = false;
      if (!outbox.includes(entry)) return;
      if (err.code === 'disconnected') {
        // Sent again with the same key once the session is back (flushOutbox).
        entry.note = 'Not sent yet: waiting for the connection…';
        renderPending();
        return;
      }
      if (err.code === 'unavailable' || err.code === 'rate_limited' || err.code === 'shutting_down') {
        const wait = err.retry_after_ms || Math.min(RETRY_MAX_MS, 1000 * 2 ** entry.tries);
        entry.tries += 1;
        entry.note = 'Not sent yet: the server is busy, trying again…';
        entry.timer = setTimeout(() => deliver(entry), wait);
        renderPending();
        return;
      }
      // Refused for good (too long, not a member…): give the text (and files) back.
      dropEntry(entry);
      const input = $('composer-input');
      if (!input.value && state.view && convKey(state.view) === convKey(view)) {
        input.value = text;
        autosize();
        restoreAttachments(view, files);
        if (quote) {
          state.replyTo = { key: convKey(view), quote };
          renderReplyBar();
        }
      }
      showError(err, 'Message not sent');
    });
  }

  /** After a reconnect: every pending message is sent again, with its key. */
  function flushOutbox() {
    for (const entry of outbox) deliver(entry);
  }

  /** The current conversation's pending messages, under its messages. */
  function renderPending() {
    const list = $('pending-list');
    if (!list) return;
    clear(list);
    if (!state.view || state.adminOpen || !state.me) return;
    const key = convKey(state.view);
    for (const entry of outbox) {
      if (convKey(entry.view) !== key) continue;
      list.append(h('li', { class: 'msg first mine pending', 'data-key': entry.key },
        h('div', { class: 'msg-head' },
          h('span', { class: 'msg-author', title: state.me.username, text: state.me.alias }),
          h('span', { class: 'msg-time msg-pending', text: entry.note })),
        entry.quote ? quoteEl(entry.quote, 'main') : null,
        entry.text ? h('div', { class: 'msg-text', text: entry.text }) : null,
        entry.files && entry.files.length
          ? h('ul', { class: 'attachments' }, entry.files.map((a) => h('li', { class: 'att-file', text: `📎 ${a.name}` })))
          : null));
    }
  }

  /** Mentioned people who cannot read the room were not notified: said discreetly
   *  under the message box. */
  function notNotified(view, aliases) {
    const text = aliases.length === 1
      ? `${aliases[0]} cannot read this room and was not notified.`
      : `${aliases.slice(0, -1).join(', ')} and ${aliases[aliases.length - 1]} cannot read this room and were not notified.`;
    if (state.view && convKey(state.view) === convKey(view)) {
      $('composer-notice-text').textContent = text;
      $('composer-notice').hidden = false;
    } else {
      toast(text);
    }
  }

  function onComposerKey(ev) {
    if (mentionMenuKey(ev)) return;
    if (ev.key === 'Escape' && state.replyTo) {
      ev.preventDefault();
      cancelReply();
      return;
    }
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  }

  function autosize() {
    const input = $('composer-input');
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight + 2, 180)}px`;
    const n = [...input.value].length;
    $('char-count').textContent = n > state.maxChars * 0.8 ? `· ${n} / ${state.maxChars}` : '';
  }


  // ----- Replies, edits, deletions, reactions -----------------------------------------------

  /** What a reply shows of the message it answers (the server sends the same). */
  function quoteOf(m) {
    return {
      id: m.id,
      author: m.author ?? m.from,
      alias: m.alias ?? m.from_alias,
      text: [...m.text].slice(0, 120).join(''),
      deleted: !!m.deleted,
    };
  }

  function startReply(m) {
    if (!state.view) return;
    state.replyTo = { key: convKey(state.view), quote: quoteOf(m) };
    renderReplyBar();
    $('composer-input').focus();
  }

  function cancelReply() {
    state.replyTo = null;
    renderReplyBar();
  }

  function renderReplyBar() {
    const bar = $('reply-bar');
    const r = state.replyTo;
    const show = !!r && !!state.view && r.key === convKey(state.view);
    bar.hidden = !show;
    clear($('reply-bar-text'));
    if (show) {
      $('reply-bar-text').append(
        h('span', { class: 'hint', text: 'Replying to ' }),
        h('strong', { text: r.quote.alias }),
        h('span', { class: 'quote-text', text: ` ${r.quote.deleted ? 'message deleted' : snippet(r.quote.text, 80)}` }),
      );
    }
  }

  /** Shows a message: scrolled to and briefly highlighted; older history is loaded
   *  until it is there (or the beginning is reached). */
  async function jumpTo(id, where) {
    const find = () => (where === 'thread'
      ? $('thread').querySelector(`li.msg[data-id="${id}"]`)
      : $('message-list').querySelector(`li.msg[data-id="${id}"]`));
    let li = find();
    if (!li && where !== 'thread' && state.view) {
      const view = state.view;
      const c = conv(convKey(view));
      for (let pages = 0; !c.ids.has(id) && c.more && c.msgs.length && c.msgs[0].id > id && pages < 40; pages += 1) {
        if (state.view !== view) return;
        if (c.loading) await sleep(100);
        else await loadHistory(c, view, true);
      }
      li = find();
    }
    if (!li && where === 'thread' && state.view) {
      // The original of a thread message is in the conversation itself.
      return jumpTo(id, 'main');
    }
    if (!li) {
      toast('The original message is not in the loaded history (it may have been removed).', { title: 'Not found' });
      return;
    }
    li.scrollIntoView({ block: 'center' });
    li.classList.remove('flash');
    void li.offsetWidth; // restart the animation
    li.classList.add('flash');
    setTimeout(() => li.classList.remove('flash'), 2000);
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function startEdit(m, where) {
    state.editing = { id: m.id, where, draft: m.text };
    refreshMessages([m.id]);
  }

  function stopEdit() {
    const e = state.editing;
    state.editing = null;
    if (e) refreshMessages([e.id]);
  }

  /** The in-place editor of one's own message: Enter saves, Shift+Enter starts a new
   *  line, Escape cancels. */
  function editForm(m, where) {
    const input = h('textarea', { class: 'edit-input', rows: 2, 'aria-label': 'Edit your message' });
    input.value = state.editing.draft;
    const form = h('form', { class: 'msg-edit' },
      input,
      h('div', { class: 'edit-actions' },
        h('button', { type: 'submit', class: 'primary small', text: 'Save' }),
        h('button', { type: 'button', class: 'small', text: 'Cancel', onclick: stopEdit }),
        h('span', { class: 'hint', text: 'Enter saves · Escape cancels' })));
    input.addEventListener('input', () => { if (state.editing) state.editing.draft = input.value; });
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') {
        ev.preventDefault();
        ev.stopPropagation();
        stopEdit();
      } else if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const text = input.value;
      if (text === m.text) return stopEdit();
      if (!text.trim()) {
        toast('A message cannot be empty: delete it instead.', { kind: 'error' });
        return undefined;
      }
      try {
        const r = await request('edit', { id: m.id, text });
        applyEdit(m.id, text, r.edited);
        if (state.editing && state.editing.id === m.id) stopEdit();
      } catch (err) {
        showError(err, 'Could not edit the message');
      }
      return undefined;
    });
    setTimeout(() => {
      input.focus();
      input.setSelectionRange(input.value.length, input.value.length);
    }, 0);
    return form;
  }

  /** Every copy of message `id` that this page holds (the conversations, the thread),
   *  each object once. */
  function copiesOf(id) {
    const out = new Set();
    for (const c of state.convs.values()) {
      const m = c.ids.get(id);
      if (m) out.add(m);
    }
    const t = state.thread;
    if (t) {
      if (t.root.id === id) out.add(t.root);
      const m = t.ids.get(id);
      if (m) out.add(m);
    }
    return [...out];
  }

  /** Messages quoting message `id`, in every conversation and the thread. */
  function quotersOf(id) {
    const out = [];
    const scan = (msgs) => { for (const m of msgs) if (m.reply_to && m.reply_to.id === id) out.push(m); };
    for (const c of state.convs.values()) scan(c.msgs);
    if (state.thread) scan(state.thread.msgs);
    return out;
  }

  function applyEdit(id, text, edited) {
    for (const m of copiesOf(id)) {
      m.text = text;
      m.edited = edited;
    }
    const quoters = quotersOf(id);
    for (const q of quoters) q.reply_to.text = [...text].slice(0, 120).join('');
    refreshMessages([id, ...quoters.map((q) => q.id)]);
  }

  function applyDelete(id) {
    // A deleted message is no longer unread (the server stops counting it too).
    for (const c of state.convs.values()) {
      const m = c.ids.get(id);
      if (m && !m.deleted && id > c.lastRead && state.me && (m.author ?? m.from) !== state.me.username) {
        if (c.unread > 0) c.unread -= 1;
        if (mentionsMe(m) && c.mentions > 0) c.mentions -= 1;
        renderRooms();
        renderDms();
      }
    }
    for (const m of copiesOf(id)) {
      m.deleted = true;
      m.text = '';
      m.reactions = [];
      delete m.attachments;
      delete m.edited;
    }
    const quoters = quotersOf(id);
    for (const q of quoters) {
      q.reply_to.deleted = true;
      q.reply_to.text = '';
    }
    if (state.editing && state.editing.id === id) state.editing = null;
    if (state.replyTo && state.replyTo.quote.id === id) cancelReply();
    refreshMessages([id, ...quoters.map((q) => q.id)]);
  }

  /** Deleting asks first; an administrator deleting someone else's message gives a
   *  reason (kept in the audit log). */
  function askDelete(m) {
    const dialog = $('delete-dialog');
    const mine = !!state.me && (m.author ?? m.from) === state.me.username;
    $('delete-what').textContent = mine
      ? 'Delete your message? Its text is erased for everyone; "message deleted" stays in its place.'
      : `Delete this message by ${m.alias ?? m.from_alias}? Its text is erased for everyone.`;
    $('delete-reason-field').hidden = mine;
    $('delete-reason').value = '';
    $('delete-form').onsubmit = async (ev) => {
      ev.preventDefault();
      const args = { id: m.id };
      const reason = $('delete-reason').value.trim();
      if (!mine && reason) args.reason = reason;
      try {
        await request('delete', args);
        dialog.close();
        applyDelete(m.id);
      } catch (err) {
        showError(err, 'Could not delete the message');
      }
    };
    dialog.showModal();
    (mine ? $('delete-confirm') : $('delete-reason')).focus();
  }

  /** Reactions: one chip per emoji with its count; one's own highlighted; a click
   *  toggles one's own. `users` names at most the first 20 (the count counts them all). */
  function reactionChip(m, r) {
    const mine = isMine(r);
    const names = r.users.map((u) => (state.me && u === state.me.username ? 'you' : aliasOf(u)));
    const more = r.count - r.users.length;
    const who = `${names.join(', ')}${more > 0 ? ` and ${more} more` : ''}`;
    return h('button', {
      type: 'button',
      class: `reaction${mine ? ' mine' : ''}`,
      'data-emoji': r.emoji,
      'data-count': r.count,
      'aria-pressed': String(mine),
      title: `${who} reacted with ${r.emoji}`,
      'aria-label': `${r.emoji} ${r.count}: ${who}`,
      onclick: () => toggleReaction(m, r.emoji),
    }, h('span', { class: 'emoji', text: r.emoji }), h('span', { class: 'count', text: String(r.count) }));
  }

  const isMine = (r) => !!state.me && (!!r.mine || r.users.includes(state.me.username));

  /** Applies one user's reaction change to a message (from an event or one's own
   *  request: applying the same change twice changes nothing). */
  function applyReaction(m, emoji, user, added) {
    if (!m.reactions) m.reactions = [];
    let r = m.reactions.find((x) => x.emoji === emoji);
    const me = !!state.me && user === state.me.username;
    if (added) {
      if (r && (me ? isMine(r) : r.users.includes(user))) return;
      if (!r) m.reactions.push((r = { emoji, count: 0, users: [] }));
      r.count = (r.count ?? r.users.length) + 1;
      if (r.users.length < 20) r.users.push(user);
      if (me) r.mine = true;
    } else {
      if (!r) return;
      const i = r.users.indexOf(user);
      if (me ? !isMine(r) : i < 0 && r.count <= r.users.length) return;
      if (i >= 0) r.users.splice(i, 1);
      r.count = (r.count ?? r.users.length + 1) - 1;
      if (me) r.mine = false;
      if (r.count <= 0) m.reactions.splice(m.reactions.indexOf(r), 1);
    }
  }

  async function toggleReaction(m, emoji) {
    const r = (m.reactions || []).find((x) => x.emoji === emoji);
    const add = !(r && isMine(r));
    try {
      await request(add ? 'react' : 'unreact', { id: m.id, emoji });
      for (const copy of copiesOf(m.id)) applyReaction(copy, emoji, state.me.username, add);
      refreshMessages([m.id]);
    } catch (err) {
      showError(err, add ? 'Could not add the reaction' : 'Could not remove the reaction');
    }
  }

  const EMOJI = [
    ['👍', 'thumbs up'], ['👎', 'thumbs down'], ['😄', 'smile'], ['😂', 'tears of joy'],
    ['🎉', 'party'], ['❤️', 'heart'], ['😮', 'surprised'], ['😢', 'sad'],
    ['🙏', 'thanks'], ['👀', 'eyes'], ['✅', 'done'], ['🚀', 'rocket'],
  ];
  let pickerFor = null; // the message the emoji picker reacts to

  function openPicker(anchor, m) {
    const picker = $('emoji-picker');
    if (!picker.firstChild) {
      for (const [emoji, name] of EMOJI) {
        picker.append(h('button', {
          type: 'button', role: 'menuitem', class: 'emoji-choice', 'data-emoji': emoji, title: name, 'aria-label': `React with ${name}`, text: emoji,
          onclick: () => {
            const target = pickerFor;
            closePicker();
            if (!target) return;
            const r = (target.reactions || []).find((x) => x.emoji === emoji);
            if (r && isMine(r)) return; // already there: picking it again changes nothing
            toggleReaction(target, emoji);
          },
        }));
      }
    }
    pickerFor = m;
    picker.hidden = false;
    const a = anchor.getBoundingClientRect();
    const w = picker.offsetWidth;
    const hgt = picker.offsetHeight;
    picker.style.left = `${Math.max(8, Math.min(window.innerWidth - w - 8, a.right - w))}px`;
    picker.style.top = `${a.top - hgt - 6 > 8 ? a.top - hgt - 6 : a.bottom + 6}px`;
    picker.querySelector('button').focus();
  }

  function closePicker() {
    pickerFor = null;
    $('emoji-picker').hidden = true;
  }

  // ----- Threads: a message and its replies, in a panel --------------------------------------

  async function openThread(m) {
    if (!state.view) return;
    const view = { ...state.view };
    state.thread = { root: m, view, key: convKey(view), msgs: [], ids: new Map(), more: false, loading: false, loaded: false };
    $('layout').dataset.thread = 'open';
    setPane('thread');
    renderThread();
    await loadThread(false);
    $('thread-input').focus();
  }

  function closeThread() {
    state.thread = null;
    $('thread').hidden = true;
    delete $('layout').dataset.thread;
    if ($('layout').dataset.pane === 'thread') setPane('main');
    if (state.editing && state.editing.where === 'thread') state.editing = null;
  }

  async function loadThread(older) {
    const t = state.thread;
    if (!t || t.loading) return;
    t.loading = true;
    const args = { id: t.root.id };
    if (older && t.msgs.length) args.before = t.msgs[0].id;
    try {
      const data = await request('thread', args);
      if (state.thread !== t) return;
      // The root as the server has it now (its count, reactions, edits).
      Object.assign(t.root, data.root);
      for (const m of data.messages || []) {
        if (t.ids.has(m.id)) continue;
        t.ids.set(m.id, m);
        t.msgs.push(m);
      }
      t.msgs.sort((a, b) => idCmp(a.id, b.id));
      if (older || !t.loaded) t.more = !!data.more;
      t.loaded = true;
      renderThread();
      if (!older) $('thread-body').scrollTop = $('thread-body').scrollHeight;
    } catch (err) {
      showError(err, 'Could not load the thread');
    } finally {
      t.loading = false;
    }
  }

  /** A reply arrived live: counted on its original, and listed in the open thread. */
  function replyArrived(c, m) {
    if (!m.reply_to) return;
    const changed = [];
    for (const orig of copiesOf(m.reply_to.id)) {
      if (orig === m) continue;
      orig.replies = (orig.replies || 0) + 1;
      changed.push(orig.id);
    }
    const t = state.thread;
    if (t && t.key === c.key && t.root.id === m.reply_to.id && !t.ids.has(m.id)) {
      t.ids.set(m.id, m);
      t.msgs.push(m);
      t.msgs.sort((a, b) => idCmp(a.id, b.id));
      const body = $('thread-body');
      const atBottom = body.scrollHeight - body.scrollTop - body.clientHeight < 80;
      renderThread();
      if (atBottom) body.scrollTop = body.scrollHeight;
    }
    if (changed.length) refreshMessages([...new Set(changed)]);
  }

  function renderThread() {
    const t = state.thread;
    $('thread').hidden = !t;
    if (!t) return;
    const root = $('thread-root');
    clear(root);
    root.append(messageEl(t.root, false, 'thread'));
    const n = t.root.replies || t.msgs.length;
    $('thread-count').textContent = !t.loaded ? 'Loading…' : n ? `${n} ${n === 1 ? 'reply' : 'replies'}` : 'No replies yet.';
    $('thread-older').hidden = !t.more;
    const list = $('thread-list');
    clear(list);
    let prev = null;
    for (const m of t.msgs) {
      const grouped = !!prev && (prev.author ?? prev.from) === (m.author ?? m.from) && m.ts - prev.ts < 5 * 60 * 1000;
      list.append(messageEl(m, grouped, 'thread'));
      prev = m;
    }
  }

  function onThreadSend(ev) {
    ev.preventDefault();
    const t = state.thread;
    const input = $('thread-input');
    const text = input.value;
    if (!t || !text.trim()) return;
    input.value = '';
    queueMessage(t.view, text, quoteOf(t.root));
  }


  // ----- Read state: kept by the server, for all of a user's devices ------------------------

  /** A read state from the sign-in, a `read` event (another device read, a level was
   *  set) or the reply to `mark_read` / `set_notify`. */
  function applyReadState(rs) {
    let key = null;
    if (rs.room) {
      const r = roomInfo(rs.room);
      key = `room:${r ? r.name : rs.room}`;
    } else if (rs.with) {
      key = `dm:${rs.with}`;
    }
    if (!key) return;
    const c = conv(key);
    c.lastRead = Math.max(c.lastRead, rs.last_read || 0);
    c.unread = rs.unread || 0;
    c.mentions = rs.mentions || 0;
    if (rs.notify) c.notify = rs.notify;
  }

  let markTimer = null;
  /** Marks the open conversation read up to the latest message visible, shortly after the
   *  view settles (opened, scrolled, a message arrived, the tab shown again). */
  function scheduleMarkRead() {
    clearTimeout(markTimer);
    markTimer = setTimeout(markRead, 300);
  }

  function markRead() {
    if (!state.view || state.adminOpen || document.hidden || !state.signedIn || !conn.open) return;
    const view = state.view;
    const c = conv(convKey(view));
    if (!c.loaded) return;
    const id = lastVisibleId();
    if (!id || id <= c.lastRead) return;
    c.lastRead = id;
    const place = view.kind === 'room' ? { room: view.name } : { with: view.user };
    request('mark_read', { ...place, id })
      .then((rs) => {
        applyReadState(rs);
        renderRooms();
        renderDms();
      })
      .catch(() => { /* the next view or scroll marks it again */ });
  }

  /** The id of the last message whose top is inside the visible part of the list. */
  function lastVisibleId() {
    const box = $('messages').getBoundingClientRect();
    const items = $('message-list').querySelectorAll('li.msg[data-id]');
    for (let i = items.length - 1; i >= 0; i -= 1) {
      const r = items[i].getBoundingClientRect();
      if (r.top < box.bottom - 4 && r.bottom > box.top) return Number(items[i].dataset.id);
    }
    return null;
  }

  /** Unread counts shown for a conversation: none for the one being read. */
  const shownUnread = (c) => (isCurrent(c) ? 0 : c.unread);
  const shownMentions = (c) => (isCurrent(c) ? 0 : c.mentions);

  function badges(c) {
    const n = shownUnread(c);
    const at = shownMentions(c);
    return [
      at ? h('span', { class: 'badge mention', 'data-mentions': at, title: `${at} mention${at > 1 ? 's' : ''}`, text: '@' }) : null,
      n ? h('span', { class: 'badge', 'data-unread': n, text: n >= 1000 ? '999+' : String(n) }) : null,
    ];
  }

  // ----- Notifications: desktop notifications, the title and the favicon ------------------

  const canNotify = () => 'Notification' in window;

  /** The control that asks for permission: shown while the browser has not been asked. */
  function renderNotifyButton() {
    $('notif-btn').hidden = !canNotify() || Notification.permission !== 'default';
  }

  async function askNotifyPermission() {
    try {
      const answer = await Notification.requestPermission();
      if (answer === 'denied') toast('Desktop notifications are blocked for this site in the browser settings.', { kind: 'warn' });
      else if (answer === 'granted') toast('Desktop notifications are on.', { ms: 2500 });
    } catch {
      /* an old browser without the promise form */
    }
    renderNotifyButton();
  }

  /** A desktop notification for a private message, or a room message the room's level
   *  lets through (all; mentions only: those mentioning the user or @room), unless the
   *  user is looking at that conversation. */
  function maybeNotify(c, m) {
    if (!canNotify() || Notification.permission !== 'granted' || !state.me) return;
    if (isCurrent(c) && document.hasFocus()) return;
    const alias = m.alias ?? m.from_alias;
    let title;
    if (m.room) {
      const level = c.notify || 'all';
      const mention = mentionsMe(m);
      if (level === 'none' || (level === 'mentions' && !mention)) return;
      title = mention ? `${alias} mentioned you in ${c.key.slice(5)}` : `${alias} in ${c.key.slice(5)}`;
    } else {
      title = `${alias} (private message)`;
    }
    const view = m.room ? { kind: 'room', name: c.key.slice(5) } : { kind: 'dm', user: c.key.slice(3) };
    try {
      const n = new Notification(title, { body: snippet(m.text, 200), tag: c.key, icon: '/icon.svg' });
      n.onclick = () => {
        window.focus();
        openView(view);
        n.close();
      };
    } catch {
      /* a browser that only notifies from a service worker */
    }
  }

  async function onNotifyLevel() {
    const view = state.view;
    const select = $('notify-select');
    if (!view || view.kind !== 'room') return;
    try {
      const rs = await request('set_notify', { room: view.name, level: select.value });
      applyReadState(rs);
    } catch (err) {
      showError(err, 'Could not change the notifications of this room');
    }
    renderHeader();
  }

  /** The unread count on the favicon: the icon drawn on a canvas with a badge. */
  const favicon = { count: 0, image: null, url: null };
  function drawFavicon(n) {
    if (n === favicon.count) return;
    favicon.count = n;
    const link = $('favicon');
    const set = (href, type) => {
      link.type = type;
      link.href = href;
      link.dataset.count = String(favicon.count);
      // The browser may still be fetching the previous icon: let it go a little later.
      const old = favicon.url;
      if (old && old !== href) setTimeout(() => URL.revokeObjectURL(old), 10000);
      favicon.url = href.startsWith('blob:') ? href : null;
    };
    if (!n) {
      set('/icon.svg', 'image/svg+xml');
      return;
    }
    const paint = () => {
      const count = favicon.count;
      if (!count) return;
      const canvas = h('canvas', { width: 64, height: 64 });
      const g = canvas.getContext('2d');
      g.drawImage(favicon.image, 0, 0, 64, 64);
      g.fillStyle = '#d93025';
      g.beginPath();
      g.arc(42, 22, 22, 0, 2 * Math.PI);
      g.fill();
      g.fillStyle = '#ffffff';
      g.font = `bold ${count > 99 ? 22 : 30}px sans-serif`;
      g.textAlign = 'center';
      g.textBaseline = 'middle';
      g.fillText(count > 99 ? '99+' : String(count), 42, 24);
      canvas.toBlob((blob) => {
        if (blob && favicon.count === count) set(URL.createObjectURL(blob), 'image/png');
      }, 'image/png');
    };
    if (favicon.image && favicon.image.complete) paint();
    else if (!favicon.image) {
      favicon.image = new Image();
      favicon.image.addEventListener('load', paint);
      favicon.image.src = '/icon.svg';
    }
  }

  // ----- Mentions: @alias completion from the room's members -------------------------------

  /** The members of a room (for completion and for naming mentions), fetched when the
   *  room is opened, then kept by `room_member` events. */
  function loadMembers(name) {
    request('members', { room: name })
      .then((data) => {
        state.members.set(name.toLowerCase(), new Map((data.users || []).map((u) => [u.username, u.alias])));
        for (const u of data.users || []) if (!state.people.has(u.username)) state.people.set(u.username, u);
        // Someone already typing "@…" gets the completion now.
        if (document.activeElement === $('composer-input')) updateMentionMenu();
      })
      .catch(() => { /* completion offers nobody; sending still works */ });
  }

  function memberAlias(room, user) {
    const members = room ? state.members.get(room.toLowerCase()) : null;
    return (members && members.get(user)) || aliasOf(user);
  }

  const mention = { open: false, items: [], active: 0, start: 0 };

  /** The `@word` being typed just before the caret, if any. */
  function mentionQuery() {
    const input = $('composer-input');
    if (input.selectionStart !== input.selectionEnd) return null;
    const before = input.value.slice(0, input.selectionStart);
    const m = /(^|[\s(])@([^\s@]{0,40})$/.exec(before);
    return m ? { start: before.length - m[2].length - 1, query: m[2].toLowerCase() } : null;
  }

  function updateMentionMenu() {
    const view = state.view;
    const q = view && view.kind === 'room' ? mentionQuery() : null;
    const members = q ? state.members.get(view.name.toLowerCase()) : null;
    if (!q || !members) return closeMentionMenu();
    const items = [];
    for (const [username, alias] of members) {
      if (state.me && username === state.me.username) continue;
      if (alias.toLowerCase().startsWith(q.query) || username.toLowerCase().startsWith(q.query)
        || alias.toLowerCase().split(/\s+/).some((w) => w.startsWith(q.query))) {
        // The server reads a mention as `@` and a name without spaces (letters, digits,
        // . _ - '): the alias when it is one, else the username.
        const plain = /^[\p{L}\p{N}._'-]+$/u.test(alias);
        items.push({ insert: plain ? alias : username, label: alias, hint: username });
      }
    }
    items.sort((a, b) => a.label.localeCompare(b.label));
    if ('room'.startsWith(q.query)) items.push({ insert: 'room', label: 'room', hint: 'everyone in this room' });
    if (!items.length) return closeMentionMenu();
    mention.open = true;
    mention.items = items.slice(0, 8);
    mention.active = Math.min(mention.active, mention.items.length - 1);
    mention.start = q.start;
    renderMentionMenu();
    return undefined;
  }

  function renderMentionMenu() {
    const menu = $('mention-menu');
    const input = $('composer-input');
    clear(menu);
    mention.items.forEach((it, i) => {
      menu.append(h('li', {
        role: 'option',
        id: `mention-${i}`,
        class: 'mention-option',
        'data-insert': it.insert,
        'aria-selected': String(i === mention.active),
        onmousedown: (ev) => {
          ev.preventDefault(); // keep the focus in the message box
          chooseMention(i);
        },
      }, h('span', { class: 'mention-label', text: `@${it.label}` }), h('span', { class: 'hint', text: ` ${it.hint}` })));
    });
    menu.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    input.setAttribute('aria-activedescendant', `mention-${mention.active}`);
  }

  function closeMentionMenu() {
    mention.open = false;
    mention.active = 0;
    $('mention-menu').hidden = true;
    $('composer-input').setAttribute('aria-expanded', 'false');
    $('composer-input').removeAttribute('aria-activedescendant');
  }

  function chooseMention(i) {
    const it = mention.items[i];
    const input = $('composer-input');
    if (!it) return;
    const caret = input.selectionStart;
    const text = `@${it.insert} `;
    input.value = input.value.slice(0, mention.start) + text + input.value.slice(caret);
    const at = mention.start + text.length;
    input.setSelectionRange(at, at);
    closeMentionMenu();
    autosize();
    input.focus();
  }

  /** Keys of the open completion menu; true when the key was used. */
  function mentionMenuKey(ev) {
    if (!mention.open) return false;
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      const n = mention.items.length;
      mention.active = (mention.active + (ev.key === 'ArrowDown' ? 1 : n - 1)) % n;
      renderMentionMenu();
    } else if ((ev.key === 'Enter' && !ev.shiftKey) || ev.key === 'Tab') {
      chooseMention(mention.active);
    } else if (ev.key === 'Escape') {
      closeMentionMenu();
    } else {
      return false;
    }
    ev.preventDefault();
    return true;
  }

  // ----- People ---------------------------------------------------------------------------

  function renderPeople() {
    const list = $('people-list');
    clear(list);
    const q = $('people-filter').value.trim().toLowerCase();
    const people = [...state.people.values()]
      .filter((p) => !q || p.alias.toLowerCase().includes(q) || p.username.toLowerCase().includes(q))
      .sort((a, b) => (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9) || a.alias.localeCompare(b.alias));
    for (const p of people) {
      const me = state.me && p.username === state.me.username;
      list.append(h('li', { class: 'person', 'data-user': p.username, 'data-status': p.status },
        h('button', {
          type: 'button',
          class: 'person-open',
          disabled: me,
          title: me ? 'You' : `Write to ${p.alias} (${p.username})`,
          'aria-label': me ? `${p.alias} (you), ${STATUS_LABEL[p.status] || p.status}` : `Write to ${p.alias}, ${STATUS_LABEL[p.status] || p.status}`,
          onclick: () => openView({ kind: 'dm', user: p.username }),
        },
        h('span', { class: 'dot', 'data-status': p.status, 'aria-hidden': 'true' }),
        h('span', { class: 'person-name', text: me ? `${p.alias} (you)` : p.alias }),
        h('span', { class: 'person-status', text: STATUS_LABEL[p.status] || p.status }))));
    }
  }

  async function onStatusChange() {
    const select = $('status-select');
    const status = select.value;
    try {
      const data = await request('set_status', { status });
      state.me.status = data.status;
    } catch (err) {
      select.value = state.me ? state.me.status : 'online';
      showError(err, 'Could not change your status');
    }
  }

  // ----- Events ---------------------------------------------------------------------------

  function onEvent(e) {
    if (!state.signedIn) return;
    switch (e.event) {
      case 'message': {
        const view = { kind: 'room', name: e.room };
        const r = roomInfo(e.room);
        if (r) view.name = r.name;
        const c = conv(convKey(view));
        typingDone(c.key, e.author);
        const mine = !!state.me && e.author === state.me.username;
        if (mine) settleOwn(view, e.text, e.attachments);
        if (!addMessages(c, [e])) return;
        replyArrived(c, e);
        if (isCurrent(c)) renderMessages(false);
        else if (!mine) {
          // One's own messages are never unread.
          c.unread += 1;
          if (mentionsMe(e)) c.mentions += 1;
          renderRooms();
        }
        if (!mine) maybeNotify(c, e);
        return;
      }
      case 'direct': {
        acknowledge(e.id);
        const mine = state.me && e.from === state.me.username;
        const other = mine ? e.to : e.from;
        if (!state.people.has(other) && !mine) {
          state.people.set(other, { username: other, alias: e.from_alias, status: 'offline' });
        }
        const c = conv(`dm:${other}`);
        typingDone(c.key, e.from);
        if (mine) settleOwn({ kind: 'dm', user: other }, e.text, e.attachments);
        // The first `offline_directs` messages after signing in are the backlog received
        // while offline: the sign-in's read state already counts them, and they are not
        // news to notify.
        const counted = !mine && state.backlog > 0;
        if (counted) state.backlog -= 1;
        if (!addMessages(c, [e])) return;
        replyArrived(c, e);
        if (isCurrent(c)) renderMessages(false);
        else if (!mine && !counted && e.id > c.lastRead) c.unread += 1;
        renderDms();
        if (!mine && !counted) maybeNotify(c, e);
        return;
      }
      case 'edited':
        applyEdit(e.id, e.text, e.edited);
        return;
      case 'deleted':
        applyDelete(e.id);
        return;
      case 'reaction': {
        if (!state.people.has(e.user)) state.people.set(e.user, { username: e.user, alias: e.alias, status: 'offline' });
        const copies = copiesOf(e.id);
        for (const m of copies) applyReaction(m, e.emoji, e.user, e.added);
        if (copies.length) refreshMessages([e.id]);
        return;
      }
      case 'read':
        applyReadState(e);
        renderRooms();
        renderDms();
        if (state.view && !state.adminOpen) renderHeader();
        return;
      case 'room_member': {
        const r = roomInfo(e.room);
        const name = r ? r.name : e.room;
        const c = conv(`room:${name}`);
        const me = !!state.me && e.user === state.me.username;
        const who = me ? 'You' : e.alias;
        const n = { after: c.last ?? -Infinity, ts: Date.now(), text: `${who} ${e.joined ? 'joined' : 'left'} the room.` };
        c.notices.push(n);
        const members = state.members.get(name.toLowerCase());
        if (members) {
          if (e.joined) members.set(e.user, e.alias);
          else members.delete(e.user);
        }
        if (isCurrent(c) && shown.key === c.key) {
          $('message-list').append(noticeEl(n));
          const box = $('messages');
          if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
        }
        return;
      }
      case 'typing':
        onTyping(e);
        return;
      case 'presence': {
        if (e.refresh) {
          // Too many changes at once to list (a wave of logins): re-read everyone, at
          // most once a second.
          if (!presenceRefresh) presenceRefresh = setTimeout(() => { presenceRefresh = null; loadPeople(); }, 1000);
          return;
        }
        // Changes come gathered: every user whose status changed, each once.
        for (const u of e.users || []) {
          state.people.set(u.username, { username: u.username, alias: u.alias, status: u.status });
          if (state.me && u.username === state.me.username && u.status !== 'offline') {
            state.me.status = u.status;
            $('status-select').value = u.status;
          }
        }
        renderPeople();
        renderDms();
        renderHeader();
        if (state.adminOpen) loadSessions();
        return;
      }
      case 'membership': {
        const before = roomInfo(e.room.name);
        setRoom(e.room);
        const r = e.room;
        const own = Date.now() - (ownActions.get(r.name.toLowerCase()) || 0) < 5000;
        const changed = (!before || before.state !== r.state) && !own;
        // The server's reason says it best ("your request to join X was accepted: …").
        const say = (text, kind) => toast(e.reason ? sentence(e.reason) : text, { kind, title: r.name });
        if (r.state === 'member' && (changed || e.reason)) {
          say(`You are now a member of ${r.name}.`, 'info');
        } else if (r.state === 'can_request' && ((before && before.state === 'pending' && !own) || e.reason)) {
          say(`Your request to join ${r.name} was declined.`, 'warn');
        } else if (before && before.state === 'member' && r.state !== 'member' && (changed || e.reason)) {
          say(`You are no longer a member of ${r.name}.`, 'warn');
        }
        if (r.state !== 'member' && state.view && state.view.kind === 'room' && state.view.name.toLowerCase() === r.name.toLowerCase()) {
          openDefault();
        }
        renderRooms();
        if (state.view && state.view.kind === 'room' && state.view.name === r.name) renderHeader();
        return;
      }
      case 'join_request': {
        if (!state.me || !state.me.is_admin) return;
        if (!state.requests.some((q) => q.user === e.user && q.room === e.room)) {
          state.requests.push({ user: e.user, alias: e.alias, room: e.room, requested_at: e.requested_at });
          if (state.everSignedIn && Date.now() - e.requested_at < 60000) {
            toast(`${e.alias} (${e.user}) asks to join ${e.room}.`, { title: 'Join request' });
          }
        }
        renderRequests();
        return;
      }
      case 'account_request': {
        if (!state.me || !state.me.is_admin) return;
        if (!state.accounts.some((a) => a.username === e.username)) {
          state.accounts.push(e);
          if (state.everSignedIn && Date.now() - e.requested_at < 60000) {
            toast(`${e.alias} (${e.username}) registered and waits for approval.`, { title: 'New account' });
          }
        }
        renderRequests();
        return;
      }
      case 'account_request_decided': {
        if (!state.me || !state.me.is_admin) return;
        state.accounts = state.accounts.filter((a) => a.username !== e.user);
        renderRequests();
        return;
      }
      case 'join_request_decided': {
        // Decided here or by another administrator: it is no longer pending.
        if (!state.me || !state.me.is_admin) return;
        state.requests = state.requests.filter((q) => !(q.user === e.user && q.room === e.room));
        renderRequests();
        return;
      }
      case 'notice':
        toast(e.text, { kind: 'notice', title: `Notice from ${e.from_alias || e.from} · ${fmtTime(e.ts)}` });
        return;
      case 'shutdown': {
        const b = $('shutdown-banner');
        b.textContent = e.seconds > 0
          ? `The server stops in ${e.seconds} s: ${e.message}`
          : `The server is stopping now: ${e.message}`;
        b.hidden = false;
        return;
      }
      default:
        return; // unknown events are ignored
    }
  }

  function isCurrent(c) {
    return !state.adminOpen && state.view && convKey(state.view) === c.key && !document.hidden;
  }

  // Back to the tab: what is visible is read now.
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.signedIn && state.view && !state.adminOpen) {
      renderMessages(false);
      renderRooms();
      renderDms();
    }
  });

  // ----- Private channels -----------------------------------------------------------------

  function openChannelDialog() {
    const form = $('channel-form');
    clearFieldErrors(form);
    $('channel-name').value = '';
    $('channel-filter').value = '';
    renderChannelMembers();
    $('channel-dialog').showModal();
    $('channel-name').focus();
  }

  function renderChannelMembers() {
    const list = $('channel-members');
    const checked = new Set([...list.querySelectorAll('input:checked')].map((i) => i.value));
    clear(list);
    const q = $('channel-filter').value.trim().toLowerCase();
    const people = [...state.people.values()]
      .filter((p) => !state.me || p.username !== state.me.username)
      .sort((a, b) => a.alias.localeCompare(b.alias));
    for (const p of people) {
      const visible = !q || p.alias.toLowerCase().includes(q) || p.username.toLowerCase().includes(q) || checked.has(p.username);
      const box = h('input', { type: 'checkbox', value: p.username, 'data-user': p.username });
      box.checked = checked.has(p.username);
      list.append(h('li', { hidden: !visible }, h('label', {}, box, h('span', { text: `${p.alias} (${p.username})` }))));
    }
  }

  async function onCreateChannel(ev) {
    ev.preventDefault();
    const form = $('channel-form');
    clearFieldErrors(form);
    const name = $('channel-name').value.trim();
    const members = [...$('channel-members').querySelectorAll('input:checked')].map((i) => i.value);
    try {
      const data = await request('create_channel', { name, members });
      setRoom(data.room);
      $('channel-dialog').close();
      toast(`Private channel ${data.room.name} created.`);
      openView({ kind: 'room', name: data.room.name });
    } catch (err) {
      showFormError(form, err, (f) => (f === 'name' ? $('channel-name') : null));
    }
  }

  // ----- Administration -------------------------------------------------------------------

  function openAdmin() {
    state.adminOpen = true;
    setPane('main');
    showView();
    loadRequests();
    loadSessions();
    $('admin-title').focus();
  }

  function loadRequests() {
    request('requests')
      .then((data) => {
        state.requests = data.requests || [];
        renderRequests();
      })
      .catch((err) => showError(err, 'Could not load join requests'));
    request('account_requests')
      .then((data) => {
        state.accounts = data.accounts || [];
        renderRequests();
      })
      .catch((err) => showError(err, 'Could not load the accounts waiting for approval'));
  }

  /** Accounts waiting for approval, with Approve and Reject (and an optional reason). */
  function renderAccounts() {
    const list = $('acct-list');
    clear(list);
    const accounts = state.accounts || [];
    $('acct-empty').hidden = accounts.length > 0;
    $('acct-mode').textContent = `Registration: ${state.registration || 'open'}`;
    for (const a of accounts) {
      const reason = h('input', { 'aria-label': `Reason for refusing ${a.username} (optional)`, placeholder: 'reason (optional)' });
      const decide = (cmd) => async (ev) => {
        const button = ev.currentTarget;
        button.disabled = true;
        const args = { user: a.username };
        if (cmd === 'reject_account' && reason.value.trim()) args.reason = reason.value.trim();
        try {
          await request(cmd, args);
          state.accounts = state.accounts.filter((x) => x.username !== a.username);
          toast(`${cmd === 'approve_account' ? 'Approved' : 'Refused'}: ${a.alias} (${a.username}).`);
          renderRequests();
        } catch (err) {
          button.disabled = false;
          showError(err, 'Could not decide on the account');
          if (err.code === 'invalid_request') loadRequests();
        }
      };
      list.append(h('li', { class: 'admin-row', 'data-account': a.username },
        h('div', { class: 'admin-who' },
          h('strong', { text: `${a.alias} (${a.username})` }),
          h('span', { class: 'hint', text: `${a.first_name} ${a.last_name} · registered ${fmtFull(a.requested_at)}` })),
        h('div', { class: 'admin-actions' },
          reason,
          h('button', { type: 'button', class: 'primary', 'data-op': 'approve', text: 'Approve', onclick: decide('approve_account') }),
          h('button', { type: 'button', 'data-op': 'refuse', text: 'Refuse', onclick: decide('reject_account') }))));
    }
  }

  async function onInvite(ev) {
    ev.preventDefault();
    const hours = Number($('invite-hours').value) || 72;
    try {
      const inv = await request('create_invite', { hours });
      const link = `${location.origin}/#invite=${inv.code}`;
      $('invite-result').textContent = `Invitation (shown once, for one person, until ${fmtFull(inv.expires_at)}): ${link}`;
    } catch (err) {
      showError(err, 'Could not create an invitation');
    }
  }

  async function onAddUser(ev) {
    ev.preventDefault();
    const args = {
      username: $('adduser-username').value.trim(),
      alias: $('adduser-alias').value.trim(),
      first_name: $('adduser-first').value.trim(),
      last_name: $('adduser-last').value.trim(),
    };
    if ($('adduser-admin').checked) args.admin = true;
    try {
      const made = await request('create_account', args);
      $('adduser-result').textContent = `Account ${made.account.username} created. Its password (shown once): ${made.password}`;
      for (const id of ['adduser-username', 'adduser-alias', 'adduser-first', 'adduser-last']) $(id).value = '';
    } catch (err) {
      showError(err, 'Could not create the account');
    }
  }

  function loadSessions(force = false) {
    request('connected')
      .then((data) => {
        state.sessions = data.sessions || [];
        renderSessions(force);
      })
      .catch((err) => showError(err, 'Could not load connected users'));
    loadSanctions();
  }

  function loadSanctions() {
    request('sanctions')
      .then((data) => {
        state.sanctions = data.sanctions || [];
        renderSanctions();
      })
      .catch((err) => showError(err, 'Could not load kicks and bans'));
  }

  function renderSanctions() {
    const list = $('sanction-list');
    clear(list);
    const sanctions = state.sanctions || [];
    for (const s of sanctions) {
      const ban = s.kind === 'ban';
      const what = ban ? 'banned' : `kicked until ${fmtFull(s.until)}`;
      const lift = h('button', {
        type: 'button',
        'data-op': ban ? 'unban' : 'unkick',
        'aria-label': `${ban ? 'Unban' : 'End the kick of'} ${s.user}`,
        text: ban ? 'Unban' : 'End kick',
      });
      lift.addEventListener('click', () => liftSanction(ban ? 'unban' : 'unkick', s.user));
      list.append(h('li', { class: 'admin-row', 'data-user': s.user, 'data-kind': s.kind },
        h('div', { class: 'admin-who' },
          h('strong', { text: s.user }),
          h('span', { class: 'hint', text: `${what} · ${s.reason} · by ${s.by}` })),
        h('div', { class: 'admin-actions' }, lift)));
    }
    $('sanction-empty').hidden = sanctions.length > 0;
  }

  function renderAdmin() {
    renderRequests();
    renderSessions();
  }

  function renderRequests() {
    const n = state.requests.length + (state.accounts || []).length;
    $('admin-badge').hidden = n === 0;
    $('admin-badge').textContent = String(n);
    $('admin-btn').setAttribute('aria-label', n ? `Administration, ${n} pending requests` : 'Administration');
    if (!state.adminOpen) return;
    renderAccounts();
    const list = $('req-list');
    clear(list);
    $('req-empty').hidden = state.requests.length > 0;
    for (const q of state.requests) {
      const reason = h('input', { 'aria-label': `Reason for ${q.alias} and ${q.room} (optional)`, placeholder: 'reason (optional)' });
      const decide = (cmd) => async (ev) => {
        const button = ev.currentTarget;
        button.disabled = true;
        const args = { user: q.user, room: q.room };
        if (reason.value.trim()) args.reason = reason.value.trim();
        try {
          await request(cmd, args);
          state.requests = state.requests.filter((x) => !(x.user === q.user && x.room === q.room));
          toast(`${cmd === 'accept' ? 'Accepted' : 'Rejected'}: ${q.alias} in ${q.room}.`);
          renderRequests();
        } catch (err) {
          button.disabled = false;
          showError(err, `Could not ${cmd} the request`);
          if (err.code === 'invalid_request') loadRequests();
        }
      };
      list.append(h('li', { class: 'admin-row', 'data-user': q.user, 'data-room': q.room },
        h('div', { class: 'admin-who' },
          h('strong', { text: `${q.alias} → ${q.room}` }),
          h('span', { class: 'hint', text: `${q.user} · asked ${fmtFull(q.requested_at)}` })),
        h('div', { class: 'admin-actions' },
          reason,
          h('button', { type: 'button', class: 'primary', 'data-op': 'accept', text: 'Accept', onclick: decide('accept') }),
          h('button', { type: 'button', 'data-op': 'reject', text: 'Reject', onclick: decide('reject') }))));
    }
  }

  /** A button that asks for a second click before acting. */
  function confirmClick(button, label, act) {
    let armed = false;
    let timer = null;
    const original = button.textContent;
    button.addEventListener('click', () => {
      if (!armed) {
        armed = true;
        button.textContent = label;
        timer = setTimeout(() => {
          armed = false;
          button.textContent = original;
        }, 5000);
        return;
      }
      clearTimeout(timer);
      armed = false;
      button.textContent = original;
      act();
    });
  }

  // What an administrator types in a user's row (kick duration, reason) survives the list
  // being redrawn by presence changes and connections: drafts by username. While focus is
  // inside the list the redraw waits until it leaves, so a "Confirm ban" armed there
  // stays armed; after an action the list is redrawn at once.
  const sessionDrafts = new Map(); // username -> { seconds, reason }
  let sessionsStale = false;

  function renderSessions(force = false) {
    if (!state.adminOpen) return;
    const list = $('conn-list');
    if (!force && list.contains(document.activeElement)) {
      sessionsStale = true;
      return;
    }
    sessionsStale = false;
    clear(list);
    const seen = new Set();
    for (const s of state.sessions) {
      const key = s.username;
      const sessions = state.sessions.filter((x) => x.username === key);
      if (seen.has(key)) continue;
      seen.add(key);
      const me = state.me && key === state.me.username;
      const duration = h('select', { 'aria-label': `Kick duration for ${s.alias}`, 'data-field': 'seconds' },
        h('option', { value: '60', text: '1 minute' }),
        h('option', { value: '300', text: '5 minutes', selected: true }),
        h('option', { value: '3600', text: '1 hour' }),
        h('option', { value: '86400', text: '1 day' }));
      const draft = sessionDrafts.get(key) || {};
      duration.value = draft.seconds || '300';
      const reason = h('input', { 'aria-label': `Reason for sanctioning ${s.alias}`, placeholder: 'reason', 'data-field': 'reason' });
      reason.value = draft.reason || '';
      const keep = () => sessionDrafts.set(key, { seconds: duration.value, reason: reason.value });
      duration.addEventListener('change', keep);
      reason.addEventListener('input', keep);
      const done = () => {
        sessionDrafts.delete(key);
        sessionsStale = true;
        loadSessions(true);
      };
      const kick = h('button', { type: 'button', 'data-op': 'kick', text: 'Kick', disabled: me });
      const ban = h('button', { type: 'button', class: 'danger', 'data-op': 'ban', text: 'Ban…', disabled: me });
      kick.addEventListener('click', async () => {
        const args = { user: key, seconds: Number(duration.value) };
        if (reason.value.trim()) args.reason = reason.value.trim();
        try {
          const data = await request('kick', args);
          toast(`${s.alias} is kicked until ${fmtFull(data.until)}.`);
          done();
        } catch (err) {
          showError(err, `Could not kick ${s.alias}`);
        }
      });
      confirmClick(ban, 'Confirm ban', async () => {
        const args = { user: key };
        if (reason.value.trim()) args.reason = reason.value.trim();
        try {
          await request('ban', args);
          toast(`${s.alias} is banned.`);
          done();
        } catch (err) {
          showError(err, `Could not ban ${s.alias}`);
        }
      });
      const where = sessions.map((x) => `${x.transport} ${x.address} since ${fmtTime(x.since)}`).join(' · ');
      list.append(h('li', { class: 'admin-row', 'data-user': key },
        h('div', { class: 'admin-who' },
          h('strong', {}, h('span', { class: 'dot', 'data-status': s.status, 'aria-hidden': 'true', style: null }), ` ${s.alias}${me ? ' (you)' : ''}`),
          h('span', { class: 'hint', text: `${key} · ${STATUS_LABEL[s.status] || s.status} · ${sessions.length} session${sessions.length > 1 ? 's' : ''}: ${where}` })),
        me ? null : h('div', { class: 'admin-actions' }, duration, reason, kick, ban)));
    }
    if (!state.sessions.length) list.append(h('li', { class: 'hint', text: 'Nobody is connected.' }));
  }

  async function liftSanction(cmd, who) {
    const user = who || $('unban-user').value.trim();
    if (!user) {
      toast('Enter a username first.', { kind: 'error' });
      $('unban-user').focus();
      return;
    }
    try {
      await request(cmd, { user });
      toast(cmd === 'unban' ? `${user} is no longer banned.` : `${user} may sign in again.`);
      if (!who) $('unban-user').value = '';
      loadSanctions();
    } catch (err) {
      showError(err, `Could not ${cmd === 'unban' ? 'unban' : 'end the kick of'} ${user}`);
    }
  }

  async function onBroadcast(ev) {
    ev.preventDefault();
    const text = $('broadcast-text').value.trim();
    if (!text) {
      toast('Write the notice first.', { kind: 'error' });
      return;
    }
    try {
      await request('broadcast', { text });
      $('broadcast-text').value = '';
      toast('Notice sent to every connected user.');
    } catch (err) {
      showError(err, 'Could not broadcast');
    }
  }

  let shutdownArmed = null;
  async function onShutdown(ev) {
    ev.preventDefault();
    const button = $('shutdown-btn');
    if (!shutdownArmed) {
      button.textContent = 'Click again to shut down';
      shutdownArmed = setTimeout(() => {
        shutdownArmed = null;
        button.textContent = 'Shut down…';
      }, 5000);
      return;
    }
    clearTimeout(shutdownArmed);
    shutdownArmed = null;
    button.textContent = 'Shut down…';
    const seconds = Number($('shutdown-seconds').value);
    const args = {};
    if (Number.isFinite(seconds) && seconds >= 0) args.seconds = Math.floor(seconds);
    const message = $('shutdown-message').value.trim();
    if (message) args.message = message;
    try {
      const data = await request('shutdown', args);
      toast(`The server stops in ${fmtDuration(data.seconds)}.`, { kind: 'warn' });
    } catch (err) {
      showError(err, 'Could not shut down');
    }
  }

  // ----- Files: uploads, attachments, previews and downloads (issue 14) -------------------
  //
  // Uploads go to POST /api/files with the session token in the Authorization header
  // (never a cookie, never the token in a URL), by XMLHttpRequest for its upload progress
  // and abort. Files are read back the same way: fetch() with the header into a blob: URL
  // (the page's CSP allows img-src blob:). Previews kept as blob URLs are bounded
  // (PREVIEWS_KEPT) and revoked when dropped or on sign-out.

  const PREVIEWS_KEPT = 120;
  /** Uploads of the composer: {local, key (conversation), name, size, loaded, xhr, file, error}. */
  const uploads = [];
  let uploadSeq = 0;
  /** File id -> Promise of a blob: URL of its preview, least recently used first. */
  const previews = new Map();

  function fmtSize(n) {
    if (n < 1000) return `${n} B`;
    const units = ['kB', 'MB', 'GB'];
    let v = n;
    let u = -1;
    while (v >= 1000 && u < units.length - 1) {
      v /= 1000;
      u += 1;
    }
    return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
  }

  /** The bytes of a file (or its preview) as a Blob, read with the session token. */
  async function fetchFile(id, preview) {
    const token = loadToken();
    const res = await fetch(`/api/files/${encodeURIComponent(id)}${preview ? '/preview' : ''}`, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      cache: 'no-store',
      credentials: 'omit',
    });
    if (!res.ok) {
      let message = `The file cannot be read (${res.status}).`;
      try {
        const body = await res.json();
        if (body && body.message) message = body.message;
      } catch (_) { /* not JSON */ }
      const err = new Error(message);
      err.status = res.status;
      throw err;
    }
    return res.blob();
  }

  /** A preview's blob: URL, fetched once and kept while among the PREVIEWS_KEPT latest. */
  function previewUrl(id) {
    let url = previews.get(id);
    if (url) {
      previews.delete(id);
      previews.set(id, url); // most recently used last
      return url;
    }
    url = fetchFile(id, true).then((blob) => URL.createObjectURL(blob));
    url.catch(() => previews.delete(id));
    previews.set(id, url);
    while (previews.size > PREVIEWS_KEPT) {
      const [oldest, old] = previews.entries().next().value;
      previews.delete(oldest);
      old.then((u) => URL.revokeObjectURL(u), () => {});
    }
    return url;
  }

  function dropPreviews() {
    for (const url of previews.values()) url.then((u) => URL.revokeObjectURL(u), () => {});
    previews.clear();
  }

  /** A message's files: images as previews (a click shows the full size), others as
   *  downloads with their name, size and type. */
  function attachmentsEl(m) {
    const files = m.attachments || [];
    if (!files.length) return null;
    return h('ul', { class: 'attachments', 'aria-label': 'Attached files' }, files.map((a) => {
      if (a.preview) {
        const img = h('img', { class: 'att-thumb', alt: a.name, width: thumbSize(a).w, height: thumbSize(a).h });
        previewUrl(a.id).then((u) => { img.src = u; }, () => { img.alt = `${a.name} (preview unavailable)`; });
        return h('li', { class: 'att' },
          h('button', { type: 'button', class: 'att-image', 'data-file': a.id, title: `${a.name} · ${fmtSize(a.size)} · show full size`, onclick: () => openImage(a) }, img));
      }
      return h('li', { class: 'att' },
        h('a', { class: 'att-file', href: '#', 'data-file': a.id, title: `Download ${a.name}`, onclick: (ev) => { ev.preventDefault(); downloadFile(a); } },
          h('span', { class: 'att-icon', 'aria-hidden': 'true', text: '📄' }),
          h('span', { class: 'att-name', text: a.name }),
          h('span', { class: 'att-meta', text: `${fmtSize(a.size)} · ${a.mime.split(';')[0]}` })));
    }));
  }

  /** The preview's size on screen (fits 320×320 like the server's), so the page does
   *  not jump when it loads. */
  function thumbSize(a) {
    const w = a.width || 320;
    const hgt = a.height || 320;
    const k = Math.min(1, 320 / w, 320 / hgt);
    return { w: Math.max(1, Math.round(w * k)), h: Math.max(1, Math.round(hgt * k)) };
  }

  /** Saves a file: its bytes into a blob: URL, and a link with `download` clicked. */
  async function downloadFile(a) {
    try {
      const blob = await fetchFile(a.id, false);
      const url = URL.createObjectURL(blob);
      const link = h('a', { href: url, download: a.name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (err) {
      toast(err.message, { kind: 'error' });
    }
  }

  /** The full-size image in a dialog. */
  async function openImage(a) {
    const dialog = $('image-dialog');
    const img = $('image-full');
    $('image-title').textContent = a.name;
    $('image-meta').textContent = `${a.width}×${a.height} · ${fmtSize(a.size)}`;
    img.alt = a.name;
    img.removeAttribute('src');
    $('image-download').onclick = () => downloadFile(a);
    dialog.showModal();
    try {
      const blob = await fetchFile(a.id, false);
      if (!dialog.open) return;
      img.src = URL.createObjectURL(blob);
    } catch (err) {
      toast(err.message, { kind: 'error' });
      dialog.close();
    }
  }

  function closeImage() {
    const img = $('image-full');
    if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
    img.removeAttribute('src');
  }

  /** Starts uploading files into the composer of the open conversation. */
  function attachFiles(list) {
    if (!state.view || !state.me) return;
    const key = convKey(state.view);
    for (const f of Array.from(list || [])) {
      const name = f.name || `pasted-${new Date().toISOString().replace(/[:.]/g, '-')}.${(f.type.split('/')[1] || 'bin').replace(/[^a-z0-9]/g, '')}`;
      const up = { local: ++uploadSeq, key, name, size: f.size, loaded: 0, xhr: null, file: null, error: null };
      uploads.push(up);
      startUpload(up, f);
    }
    renderAttachments();
  }

  function startUpload(up, blob) {
    const xhr = new XMLHttpRequest();
    up.xhr = xhr;
    xhr.open('POST', `/api/files?name=${encodeURIComponent(up.name)}`);
    xhr.setRequestHeader('Authorization', `Bearer ${loadToken() || ''}`);
    xhr.responseType = 'json';
    xhr.upload.onprogress = (ev) => {
      up.loaded = ev.loaded;
      updateProgress(up);
    };
    xhr.onload = () => {
      up.xhr = null;
      if (xhr.status === 201 && xhr.response && xhr.response.id) {
        up.file = xhr.response;
        up.loaded = up.size;
      } else {
        up.error = (xhr.response && xhr.response.message) || `Upload refused (${xhr.status}).`;
        toast(`${up.name}: ${up.error}`, { kind: 'error' });
      }
      renderAttachments();
    };
    xhr.onerror = () => {
      up.xhr = null;
      up.error = 'The upload failed (connection lost).';
      renderAttachments();
    };
    xhr.send(blob);
  }

  /** Cancels an upload in progress, or takes a finished one off the message. */
  function removeUpload(up) {
    if (up.xhr) up.xhr.abort();
    const i = uploads.indexOf(up);
    if (i >= 0) uploads.splice(i, 1);
    renderAttachments();
    $('composer-input').focus();
  }

  /** The files ready to go with a message of `view`; null (and a notice) while some are
   *  still uploading. */
  function readyAttachments(view) {
    const key = convKey(view);
    const mine = uploads.filter((u) => u.key === key && !u.error);
    if (mine.some((u) => !u.file)) {
      $('composer-notice-text').textContent = 'Wait for the uploads to finish (or cancel them) before sending.';
      $('composer-notice').hidden = false;
      return null;
    }
    return mine.map((u) => u.file);
  }

  function clearAttachments(view) {
    const key = convKey(view);
    for (let i = uploads.length - 1; i >= 0; i--) if (uploads[i].key === key) uploads.splice(i, 1);
    renderAttachments();
  }

  /** A refused message's files come back to its composer. */
  function restoreAttachments(view, files) {
    const key = convKey(view);
    for (const f of files || []) {
      uploads.push({ local: ++uploadSeq, key, name: f.name, size: f.size, loaded: f.size, xhr: null, file: f, error: null });
    }
    renderAttachments();
  }

  function updateProgress(up) {
    const bar = document.querySelector(`#attach-list [data-upload="${up.local}"] progress`);
    if (bar) {
      bar.max = up.size || 1;
      bar.value = up.loaded;
    }
  }

  /** The files waiting under the message box of the open conversation. */
  function renderAttachments() {
    const list = $('attach-list');
    clear(list);
    const key = state.view ? convKey(state.view) : null;
    const mine = uploads.filter((u) => u.key === key);
    list.hidden = !mine.length;
    for (const up of mine) {
      const status = up.error ? up.error : up.file ? fmtSize(up.file.size) : 'uploading…';
      list.append(h('li', { class: `upload${up.error ? ' failed' : ''}${up.file ? ' done' : ''}`, 'data-upload': up.local },
        h('span', { class: 'upload-name', text: up.name }),
        up.file || up.error ? null : h('progress', { max: up.size || 1, value: up.loaded, 'aria-label': `Uploading ${up.name}` }),
        h('span', { class: 'upload-status', text: status }),
        h('button', {
          type: 'button',
          class: 'ghost small upload-cancel',
          'aria-label': up.file || up.error ? `Remove ${up.name}` : `Cancel the upload of ${up.name}`,
          text: '×',
          onclick: () => removeUpload(up),
        })));
    }
  }

  function onPaste(ev) {
    const files = ev.clipboardData ? Array.from(ev.clipboardData.files || []) : [];
    if (!files.length) return;
    ev.preventDefault();
    attachFiles(files);
  }

  function hasFiles(ev) {
    return !!ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes('Files');
  }

  function wireFiles() {
    $('attach-btn').addEventListener('click', () => $('attach-input').click());
    $('attach-input').addEventListener('change', (ev) => {
      attachFiles(ev.target.files);
      ev.target.value = '';
    });
    $('composer-input').addEventListener('paste', onPaste);
    const zone = $('chat');
    zone.addEventListener('dragover', (ev) => {
      if (!hasFiles(ev) || !state.view) return;
      ev.preventDefault();
      ev.dataTransfer.dropEffect = 'copy';
      zone.classList.add('dropping');
    });
    zone.addEventListener('dragleave', (ev) => {
      if (!zone.contains(ev.relatedTarget)) zone.classList.remove('dropping');
    });
    zone.addEventListener('drop', (ev) => {
      zone.classList.remove('dropping');
      if (!hasFiles(ev) || !state.view) return;
      ev.preventDefault();
      attachFiles(ev.dataTransfer.files);
    });
    $('image-close').addEventListener('click', () => $('image-dialog').close());
    $('image-dialog').addEventListener('close', closeImage);
  }

  /** Sign-out: uploads are aborted and previews released. */
  function leaveFiles() {
    for (const up of uploads.splice(0)) if (up.xhr) up.xhr.abort();
    renderAttachments();
    dropPreviews();
  }

  // ----- Search (issue 14): a panel of results; a result opens its conversation there -------
  //
  // Requests: at most one in flight. Every change of the query or a filter bumps
  // `search.gen` and (re)starts a 250 ms debounce; a reply whose generation is old is
  // dropped, and a search wanted while one was in flight is sent when it answers.
  //
  // Opening a result loads a *window* around the message (`history` with `before` = id + 1,
  // and with `after` = id) in place of the conversation's messages. While the window does
  // not reach the newest message (`c.newer`), messages past its end are held back by
  // `addMessages` instead of being appended after a gap, and a bar offers to jump to the
  // latest. Scrolling down loads the following pages (`after`); once one says nothing
  // newer follows, the held messages are merged and the view is the live one again.
  // Leaving the conversation, sending in it, or "Jump to the latest" drops the window.
  //
  // Hooks in the rest of the file (one line each): `addMessages` (holdBack), `showView`
  // (leaveWindow; no "new messages" line at a result), `loadHistory` (a window is not
  // reloaded from the latest page), `renderMessages` (windowScroll), `onScroll`
  // (windowOnScroll), `onSend` (jumpToLatest), `leaveApp` (resetSearch), `init` (initSearch).

  const SEARCH_DEBOUNCE_MS = 250;
  const SEARCH_PAGE = 20; // results per page (the server allows 1 to 50)
  const CONTEXT_PAGE = 25; // messages loaded on each side of a result
  const HELD_MAX = 200; // live messages kept while a window is open (more are refetched)

  const search = {
    gen: 0, // bumped by every change of the query or the filters
    busy: false, // a request is in flight
    again: false, // a search was wanted while one was in flight
    timer: null, // the debounce, or the wait after `rate_limited`
    next: null, // the cursor of the next page
    count: 0, // results shown
    here: null, // the conversation "this conversation" means (the one open when opened)
    returnFocus: null, // focused before the panel opened: focused again when it closes
    opening: 0, // counts the results opened: only the last one clicked is shown
  };

  const narrowScreen = () => window.matchMedia('(max-width: 760px)').matches;
  const shownNow = (c) => !state.adminOpen && !!state.view && convKey(state.view) === c.key;
  const placeArgs = (view) => (view.kind === 'room' ? { room: view.name } : { with: view.user });

  function openSearch() {
    if (!state.signedIn) return;
    const panel = $('search-panel');
    if (panel.hidden) {
      const active = document.activeElement;
      search.returnFocus = active && active !== document.body ? active : $('search-btn');
      panel.hidden = false;
      $('search-btn').setAttribute('aria-expanded', 'true');
      const before = search.here ? convKey(search.here) : null;
      renderSearchScope();
      // Results for "this conversation" were for the one open before.
      if ($('search-scope').value === 'here' && before !== convKey(search.here)) searchChanged();
      const people = $('search-people');
      clear(people);
      for (const p of state.people.values()) people.append(h('option', { value: p.username, label: p.alias }));
    }
    $('search-input').focus();
    $('search-input').select();
  }

  function closeSearch(restoreFocus = true) {
    const panel = $('search-panel');
    if (panel.hidden) return;
    panel.hidden = true;
    $('search-btn').setAttribute('aria-expanded', 'false');
    const back = search.returnFocus;
    search.returnFocus = null;
    if (!restoreFocus) return;
    if (back && back.isConnected && !back.closest('[hidden]')) back.focus();
    else $('search-btn').focus();
  }

  /** Signed out: nothing of the previous user's searches stays. */
  function resetSearch() {
    closeSearch(false);
    search.gen += 1;
    clearTimeout(search.timer);
    search.timer = null;
    search.next = null;
    search.here = null;
    for (const id of ['search-input', 'search-author', 'search-since', 'search-until']) $(id).value = '';
    $('search-scope').value = 'all';
    $('search-order').value = 'newest';
    showResults([], false);
    searchStatus('');
    $('jump-latest').hidden = true;
  }

  /** "This conversation" is the one open when the panel opened. */
  function renderSearchScope() {
    search.here = state.view && !state.adminOpen ? { ...state.view } : null;
    const option = $('search-scope').querySelector('option[value="here"]');
    option.disabled = !search.here;
    if (!search.here) {
      option.textContent = 'this conversation';
      if ($('search-scope').value === 'here') $('search-scope').value = 'all';
    } else {
      option.textContent = search.here.kind === 'room' ? `#${search.here.name}` : `Private with ${aliasOf(search.here.user)}`;
    }
  }

  /** Midnight (local time) of an `<input type="date">` value, plus `days`. */
  function dayStart(value, days) {
    const d = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || '');
    return d ? new Date(Number(d[1]), Number(d[2]) - 1, Number(d[3]) + days).getTime() : null;
  }

  function searchArgs() {
    const args = { query: $('search-input').value.trim(), limit: SEARCH_PAGE };
    if ($('search-scope').value === 'here' && search.here) Object.assign(args, placeArgs(search.here));
    const author = $('search-author').value.trim();
    if (author) args.author = author;
    const since = dayStart($('search-since').value, 0);
    const until = dayStart($('search-until').value, 1); // the whole "to" day
    if (since !== null) args.since = since;
    if (until !== null) args.until = until;
    if ($('search-order').value === 'relevance') args.order = 'relevance';
    return args;
  }

  function searchChanged() {
    search.gen += 1;
    clearTimeout(search.timer);
    search.timer = setTimeout(() => runSearch(false), SEARCH_DEBOUNCE_MS);
  }

  function searchStatus(text, error) {
    const el = $('search-status');
    el.textContent = text;
    el.classList.toggle('error', !!error);
  }

  /** Sends the search (or, `more`, the next page) unless one is in flight. */
  function runSearch(more) {
    clearTimeout(search.timer);
    search.timer = null;
    if (search.busy) {
      if (!more) search.again = true;
      return;
    }
    const args = searchArgs();
    if (!args.query) {
      showResults([], false);
      searchStatus('');
      $('search-empty').hidden = true;
      return;
    }
    if (more) {
      if (!search.next) return;
      args.cursor = search.next;
    }
    const gen = search.gen;
    search.busy = true;
    $('search-more').disabled = true;
    $('search-results').setAttribute('aria-busy', 'true');
    if (!more) searchStatus('Searching…');
    request('search', args).then((data) => {
      if (!settled(gen)) return;
      const firstNew = search.count;
      const fromMore = document.activeElement === $('search-more');
      showResults(data.hits || [], more);
      // "More results" may hide itself: focus goes to the first new result.
      if (more && fromMore && data.hits && data.hits.length) $('search-results').querySelectorAll('.search-hit')[firstNew].focus();
      search.next = data.next || null;
      $('search-more').hidden = !search.next;
      $('search-empty').hidden = search.count > 0;
      searchStatus(search.count === 0 ? ''
        : `${search.count}${search.next ? '+' : ''} result${search.count === 1 ? '' : 's'}`);
    }, (err) => {
      if (!settled(gen)) return;
      if (err.code === 'rate_limited') {
        const wait = err.retry_after_ms || 1000;
        searchStatus(`Too many searches: trying again in ${Math.ceil(wait / 1000)} s.`, true);
        search.timer = setTimeout(() => runSearch(more), wait);
        return;
      }
      searchStatus(err.message || 'The search failed.', true);
      if (!more) {
        showResults([], false);
        $('search-empty').hidden = true;
      }
    });
  }

  /** A reply came: true if it is still wanted; else the next search goes. */
  function settled(gen) {
    search.busy = false;
    $('search-more').disabled = false;
    $('search-results').removeAttribute('aria-busy');
    if (search.again) {
      search.again = false;
      runSearch(false);
      return false;
    }
    return gen === search.gen;
  }

  function showResults(hits, append) {
    const list = $('search-results');
    if (!append) {
      clear(list);
      search.count = 0;
      search.next = null;
      $('search-more').hidden = true;
    }
    for (const hit of hits) list.append(hitEl(hit));
    search.count += hits.length;
  }

  /** The conversation of a result. */
  function hitView(hit) {
    if (hit.room) {
      const r = roomInfo(hit.room);
      return { kind: 'room', name: r ? r.name : hit.room };
    }
    const mine = !!state.me && hit.from === state.me.username;
    return { kind: 'dm', user: mine ? hit.to : hit.from };
  }

  /** A result: where, who, when, and the snippet with the matched words in `<mark>`. */
  function hitEl(hit) {
    const view = hitView(hit);
    const snippetEl = h('span', { class: 'search-snippet' });
    for (const f of hit.snippet || []) snippetEl.append(f.hit ? h('mark', { text: f.text }) : document.createTextNode(f.text));
    return h('li', { class: 'search-item' },
      h('button', { type: 'button', class: 'search-hit', 'data-id': hit.id, onclick: () => openHit(hit) },
        h('span', { class: 'search-hit-head' },
          h('span', { class: 'search-place', text: view.kind === 'room' ? `#${view.name}` : `Private with ${aliasOf(view.user)}` }),
          h('span', { class: 'search-author', title: hit.author, text: hit.alias }),
          h('time', { datetime: new Date(hit.ts).toISOString(), text: fmtFull(hit.ts) }),
          hit.edited ? h('span', { class: 'msg-edited', text: '(edited)' }) : null),
        snippetEl));
  }

  /** Opens a result's conversation at the message, with context on both sides. */
  async function openHit(hit) {
    const view = hitView(hit);
    const c = conv(convKey(view));
    const button = document.activeElement;
    const opening = ++search.opening;
    for (let i = 0; c.loading && i < 50; i += 1) await sleep(100); // a page on its way lands first
    if (opening !== search.opening) return;
    if (!(c.loaded && c.ids.has(hit.id))) {
      let pages;
      try {
        pages = await Promise.all([
          request('history', { ...placeArgs(view), before: hit.id + 1, limit: CONTEXT_PAGE }),
          request('history', { ...placeArgs(view), after: hit.id, limit: CONTEXT_PAGE }),
        ]);
      } catch (err) {
        showError(err, 'Could not open the message');
        return;
      }
      if (opening !== search.opening || !state.signedIn) return; // another result was clicked
      const [older, newer] = pages;
      const last = c.last;
      c.windowGen = (c.windowGen || 0) + 1;
      c.msgs = [];
      c.ids = new Map();
      c.held = [];
      c.newer = false;
      addMessages(c, [...(older.messages || []), ...(newer.messages || [])]);
      c.more = !!older.more;
      c.newer = !!newer.more;
      c.windowEnd = c.msgs.length ? c.msgs[c.msgs.length - 1].id : hit.id;
      if (c.newer && last && (!c.last || last > c.last)) c.last = last;
      c.loaded = true;
      c.dirty = true;
      // Membership notices are placed after a message id: those before the window go.
      if (c.msgs.length) c.notices = c.notices.filter((n) => n.after >= c.msgs[0].id);
    }
    c.at = hit.id;
    if (narrowScreen()) closeSearch(false);
    if (shownNow(c)) {
      setPane('main');
      showView();
    } else {
      openView(view);
    }
    // Keyboard users stay in the results (desktop) or go to the message (phone).
    const li = $('message-list').querySelector(`li.msg[data-id="${hit.id}"]`);
    if (!$('search-panel').hidden && button && button.isConnected) button.focus();
    else if (li) li.focus({ preventScroll: true });
  }

  /** From `addMessages`: a message past the end of a window is held back. */
  function holdBack(c, m) {
    // Compared with the end recorded, not with `c.msgs`, unsorted while messages are added.
    if (!c.newer || m.id <= c.windowEnd) return false;
    if (!c.held.some((x) => x.id === m.id)) c.held.push(m);
    if (c.held.length > HELD_MAX) c.held.shift();
    if (!c.last || m.id > c.last) c.last = m.id;
    if (shownNow(c)) renderJumpBar(c);
    return true;
  }

  function renderJumpBar(c) {
    $('jump-latest').hidden = !c.newer;
    const n = c.held ? c.held.length : 0;
    $('jump-latest-text').textContent = n
      ? `${n} new message${n === 1 ? '' : 's'} below.`
      : 'You are viewing older messages.';
  }

  /** From `renderMessages`: scrolls to the result opened, or leaves a window where it is
   *  (never "to the bottom", which is not the live end); `keep` (older messages added
   *  above) is left to it. True if it decided. */
  function windowScroll(c, keep) {
    renderJumpBar(c);
    if (c.at) {
      const li = $('message-list').querySelector(`li.msg[data-id="${c.at}"]`);
      c.at = null;
      if (li) {
        li.scrollIntoView({ block: 'center' });
        li.classList.remove('flash');
        void li.offsetWidth; // restart the animation
        li.classList.add('flash');
        setTimeout(() => li.classList.remove('flash'), 2000);
      }
      return true;
    }
    return !!c.newer && !keep;
  }

  /** Drops a conversation's window: it shows its latest messages when next rendered. */
  function dropWindow(c) {
    if (!c || !c.newer) return false;
    c.windowGen = (c.windowGen || 0) + 1;
    c.msgs = [];
    c.ids = new Map();
    c.held = [];
    c.newer = false;
    c.loaded = false;
    c.more = true;
    c.dirty = true;
    c.at = null;
    return true;
  }

  /** From `showView`: the conversation shown before is left. */
  function leaveWindow(key) {
    dropWindow(key ? state.convs.get(key) : null);
    $('jump-latest').hidden = true;
  }

  /** Back to the live end of the conversation (a page on its way lands first). */
  function jumpToLatest(c) {
    if (!c.newer) return;
    if (c.loading) {
      setTimeout(() => jumpToLatest(c), 100);
      return;
    }
    dropWindow(c);
    if (shownNow(c)) showView();
  }

  /** From `onScroll`: near the bottom of a window, the next page. */
  function windowOnScroll() {
    if (!state.view || state.adminOpen) return;
    const c = conv(convKey(state.view));
    const box = $('messages');
    if (c.newer && box.scrollHeight - box.scrollTop - box.clientHeight < 300) loadNewer(c, state.view);
  }

  async function loadNewer(c, view) {
    if (c.loadingNewer || !c.newer || !c.msgs.length) return;
    c.loadingNewer = true;
    const gen = c.windowGen;
    try {
      // No `limit`: the server's default page, as for older pages.
      const data = await request('history', { ...placeArgs(view), after: c.msgs[c.msgs.length - 1].id });
      if (c.windowGen !== gen || !c.newer) return;
      const last = c.last;
      c.newer = false;
      addMessages(c, data.messages || []);
      c.newer = !!data.more;
      c.windowEnd = c.msgs[c.msgs.length - 1].id;
      if (c.newer) {
        if (last && (!c.last || last > c.last)) c.last = last;
      } else {
        // The live end: what arrived meanwhile and is not in the page (fresher) joins.
        addMessages(c, c.held.filter((m) => !c.ids.has(m.id)));
        c.held = [];
      }
      if (shownNow(c)) {
        const box = $('messages');
        const top = box.scrollTop;
        renderMessages(false);
        box.scrollTop = top;
        setTimeout(windowOnScroll, 0); // a short page may not fill the view
      }
    } catch (err) {
      showError(err, 'Could not load newer messages');
    } finally {
      c.loadingNewer = false;
    }
  }

  /** Up and down arrows move between results; Home and End go to the first and last. */
  function onResultsKey(ev) {
    const hits = [...$('search-results').querySelectorAll('.search-hit')];
    const i = hits.indexOf(document.activeElement);
    let j = null;
    if (ev.key === 'ArrowDown') j = i < 0 ? 0 : Math.min(i + 1, hits.length - 1);
    else if (ev.key === 'ArrowUp') j = i <= 0 ? null : i - 1;
    else if (ev.key === 'Home') j = 0;
    else if (ev.key === 'End') j = hits.length - 1;
    else return;
    ev.preventDefault();
    if (ev.key === 'ArrowUp' && i === 0) $('search-input').focus();
    else if (j !== null && hits[j]) hits[j].focus();
  }

  function initSearch() {
    $('search-btn').addEventListener('click', () => ($('search-panel').hidden ? openSearch() : closeSearch()));
    $('search-close').addEventListener('click', () => closeSearch());
    $('search-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      search.gen += 1;
      runSearch(false);
    });
    for (const id of ['search-input', 'search-author']) $(id).addEventListener('input', searchChanged);
    for (const id of ['search-scope', 'search-since', 'search-until', 'search-order']) $(id).addEventListener('change', searchChanged);
    $('search-input').addEventListener('keydown', (ev) => {
      if (ev.key === 'ArrowDown') {
        const first = $('search-results').querySelector('.search-hit');
        if (first) {
          ev.preventDefault();
          first.focus();
        }
      }
    });
    $('search-results').addEventListener('keydown', onResultsKey);
    $('search-more').addEventListener('click', () => runSearch(true));
    $('search-panel').addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') {
        ev.preventDefault(); // a search field would clear itself
        ev.stopPropagation();
        closeSearch();
      }
    });
    $('jump-latest-btn').addEventListener('click', () => {
      if (state.view) jumpToLatest(conv(convKey(state.view)));
      $('composer-input').focus();
    });
    // Ctrl+K (⌘K) anywhere; "/" outside of text fields.
    document.addEventListener('keydown', (ev) => {
      if (!state.signedIn || ev.defaultPrevented) return;
      if (ev.key === 'Escape' && !$('search-panel').hidden && document.activeElement === document.body) {
        closeSearch(); // focus was lost (a button that hid itself)
        return;
      }
      const typing = ev.target.closest && ev.target.closest('input, textarea, select, [contenteditable="true"]');
      if ((ev.key === 'k' || ev.key === 'K') && (ev.ctrlKey || ev.metaKey) && !ev.altKey && !ev.shiftKey) {
        ev.preventDefault();
        openSearch();
      } else if (ev.key === '/' && !typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey && !document.querySelector('dialog[open]')) {
        ev.preventDefault();
        openSearch();
      }
    });
  }

  // ----- Layout (phone-sized windows show one pane at a time) ------------------------------

  function setPane(pane) {
    $('layout').dataset.pane = pane;
    $('nav-toggle').setAttribute('aria-expanded', String(pane === 'nav'));
    $('people-toggle').setAttribute('aria-expanded', String(pane === 'people'));
  }

  function togglePane(pane) {
    setPane($('layout').dataset.pane === pane ? 'main' : pane);
  }

  // ----- Wiring ---------------------------------------------------------------------------

  function logout() {
    const token = loadToken();
    dropToken();
    const done = () => {
      leaveApp();
      showAuth('You are signed out.');
    };
    if (!token || !conn.open) {
      done();
      return;
    }
    request('logout').then(done, (err) => {
      done();
      if (err.code !== 'disconnected') showError(err, 'Sign out');
    });
  }

  function init() {
    $('tab-signin').addEventListener('click', () => selectTab('signin'));
    $('tab-register').addEventListener('click', () => selectTab('register'));
    for (const tab of [$('tab-signin'), $('tab-register')]) {
      tab.addEventListener('keydown', (ev) => {
        if (ev.key === 'ArrowRight' || ev.key === 'ArrowLeft') {
          const next = tab.id === 'tab-signin' ? 'register' : 'signin';
          selectTab(next);
          $(`tab-${next}`).focus();
        }
      });
    }
    $('signin-form').addEventListener('submit', onSignIn);
    $('register-form').addEventListener('submit', onRegister);
    for (const input of document.querySelectorAll('#auth-screen input')) {
      input.addEventListener('input', () => {
        input.removeAttribute('aria-invalid');
        const err = document.getElementById(`${input.id}-error`);
        if (err) err.textContent = '';
      });
    }

    $('composer').addEventListener('submit', onSend);
    $('composer-input').addEventListener('keydown', onComposerKey);
    $('composer-input').addEventListener('input', autosize);
    $('composer-input').addEventListener('input', keepDraft);
    $('composer-input').addEventListener('input', sayTyping);
    $('composer-input').addEventListener('input', updateMentionMenu);
    $('composer-input').addEventListener('blur', () => setTimeout(closeMentionMenu, 150));
    $('reply-cancel').addEventListener('click', cancelReply);
    wireFiles();
    $('composer-notice-close').addEventListener('click', () => { $('composer-notice').hidden = true; });
    $('notify-select').addEventListener('change', onNotifyLevel);
    $('notif-btn').addEventListener('click', askNotifyPermission);
    $('thread-close').addEventListener('click', closeThread);
    $('thread-older').addEventListener('click', () => loadThread(true));
    $('thread-composer').addEventListener('submit', onThreadSend);
    $('thread-input').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        $('thread-composer').requestSubmit();
      } else if (ev.key === 'Escape') {
        closeThread();
      }
    });
    $('delete-cancel').addEventListener('click', () => $('delete-dialog').close());
    document.addEventListener('click', (ev) => {
      if (!$('emoji-picker').hidden && !ev.target.closest('#emoji-picker, [data-op="react"]')) closePicker();
    });
    $('messages').addEventListener('scroll', onScroll);
    $('load-older').addEventListener('click', () => {
      if (state.view) loadHistory(conv(convKey(state.view)), state.view, true);
    });
    $('status-select').addEventListener('change', onStatusChange);
    $('people-filter').addEventListener('input', renderPeople);
    $('logout-btn').addEventListener('click', logout);
    $('nav-toggle').addEventListener('click', () => togglePane('nav'));
    $('people-toggle').addEventListener('click', () => togglePane('people'));
    $('conn-retry').addEventListener('click', () => {
      conn.retry = 0;
      connect();
    });

    $('new-channel-btn').addEventListener('click', openChannelDialog);
    $('channel-form').addEventListener('submit', onCreateChannel);
    $('channel-cancel').addEventListener('click', () => $('channel-dialog').close());
    $('channel-filter').addEventListener('input', renderChannelMembers);

    $('admin-btn').addEventListener('click', openAdmin);
    $('admin-close').addEventListener('click', () => {
      state.adminOpen = false;
      showView();
    });
    $('admin-title').tabIndex = -1;
    $('req-refresh').addEventListener('click', loadRequests);
    $('conn-refresh').addEventListener('click', () => loadSessions());
    $('unban-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      liftSanction('unban');
    });
    $('unkick-btn').addEventListener('click', () => liftSanction('unkick'));
    $('broadcast-form').addEventListener('submit', onBroadcast);
    $('invite-form').addEventListener('submit', onInvite);
    // An invitation link opened in a tab already showing the page.
    window.addEventListener('hashchange', () => applyRegistration(state.registration));
    $('adduser-form').addEventListener('submit', onAddUser);
    $('shutdown-form').addEventListener('submit', onShutdown);
    $('conn-list').addEventListener('focusout', (ev) => {
      if (sessionsStale && !$('conn-list').contains(ev.relatedTarget)) setTimeout(() => renderSessions(), 0);
    });

    window.addEventListener('online', () => {
      if (!conn.ws) {
        conn.retry = 0;
        connect();
      }
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !$('emoji-picker').hidden) {
        closePicker();
        return;
      }
      if (ev.key === 'Escape' && $('layout').dataset.pane !== 'main') setPane('main');
    });
    window.addEventListener('focus', scheduleMarkRead);
    initSearch();

    setScreen('loading');
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
