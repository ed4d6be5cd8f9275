// Threads: a message and its replies, in a panel.

import { $, clear } from './dom.js';
import { convKey, idCmp, state } from './state.js';
import { request } from './net.js';
import { showError } from './toast.js';
import { messageEl, refreshMessages } from './conversation.js';
import { queueMessage } from './compose.js';
import { copiesOf, quoteOf } from './messaging.js';
import { setPane } from './layout.js';

// ----- Threads: a message and its replies, in a panel --------------------------------------

export async function openThread(m) {
  if (!state.view) return;
  const view = { ...state.view };
  state.thread = { root: m, view, key: convKey(view), msgs: [], ids: new Map(), more: false, loading: false, loaded: false };
  $('layout').dataset.thread = 'open';
  setPane('thread');
  renderThread();
  await loadThread(false);
  $('thread-input').focus();
}

export function closeThread() {
  state.thread = null;
  $('thread').hidden = true;
  delete $('layout').dataset.thread;
  if ($('layout').dataset.pane === 'thread') setPane('main');
  if (state.editing && state.editing.where === 'thread') state.editing = null;
}

export async function loadThread(older) {
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
export function replyArrived(c, m) {
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

export function renderThread() {
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

export function onThreadSend(ev) {
  ev.preventDefault();
  const t = state.thread;
  const input = $('thread-input');
  const text = input.value;
  if (!t || !text.trim()) return;
  input.value = '';
  queueMessage(t.view, text, quoteOf(t.root));
}
