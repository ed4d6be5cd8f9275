// Conversations: opening a view, its header, loading history, rendering messages
// (day separators, the "new messages" line, quotes, actions), scrolling, the list of
// private conversations and the page title.

import { $, clear, h, icon } from './dom.js';
import { dayKey, fmtDay, fmtFull, fmtTime, POLICY_LABEL, STATUS_LABEL } from './format.js';
import { formatAhead, formatted, formattedTogether, mentionsMe, snippet, withAhead } from './markdown.js';
import { addMessages, conv, convKey, idCmp, roomInfo, state } from './state.js';
import { request } from './net.js';
import { showError } from './toast.js';
import { VIEW_KEY } from './auth.js';
import { switchDraft } from './drafts.js';
import { renderTyping } from './typing.js';
import { renderRooms } from './rooms.js';
import { closeMentionMenu, loadMembers, renderPending } from './compose.js';
import {
  askDelete, editForm, jumpTo, openPicker, reactionChip, renderReplyBar, startEdit, startReply,
} from './messaging.js';
import { closeThread, openThread, renderThread } from './thread.js';
import { badges, scheduleMarkRead, shownUnread } from './readstate.js';
import { drawFavicon } from './notify.js';
import { renderAdmin } from './admin.js';
import { attachmentsEl, renderAttachments } from './files.js';
import { leaveWindow, windowOnScroll, windowScroll } from './search.js';
import { setPane } from './layout.js';
import { statusOf } from './people.js';

// ----- Conversations --------------------------------------------------------------------

export function openView(view) {
  if (state.thread && state.thread.key !== convKey(view)) closeThread();
  state.view = view;
  state.adminOpen = false;
  try { sessionStorage.setItem(VIEW_KEY, JSON.stringify(view)); } catch { /* ignore */ }
  setPane('main');
  showView();
  $('composer-input').focus();
}

export function showView() {
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
    showEmptyList();
    renderPending();
    shown.key = null;
    $('composer').hidden = true;
    return;
  }
  $('composer').hidden = false;
  const c = conv(convKey(view));
  if (shown.key !== c.key) {
    leaveWindow(shown.key);
    trimKept(shown.key ? state.convs.get(shown.key) : null);
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

export function renderHeader() {
  const view = state.view;
  if (!view || state.adminOpen) return;
  if (view.kind === 'room') {
    const r = roomInfo(view.name);
    $('chat-title').replaceChildren(r && r.policy === 'private' ? icon('lock') : '#', ` ${view.name}`);
    $('chat-sub').textContent = r ? POLICY_LABEL[r.policy] || r.policy : '';
    $('composer-input').placeholder = `Message ${view.name}`;
    $('notify-field').hidden = false;
    $('notify-select').value = conv(convKey(view)).notify || 'all';
  } else {
    const p = state.people.get(view.user);
    $('notify-field').hidden = true;
    $('chat-title').textContent = p ? p.alias : view.user;
    $('chat-sub').textContent = p ? `Private conversation with ${p.username} · ${STATUS_LABEL[statusOf(p)] || p.status}` : `Private conversation with ${view.user}`;
    $('composer-input').placeholder = `Message ${p ? p.alias : view.user}`;
  }
}

export async function loadHistory(c, view, older) {
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
    if (older && msgs.length > 1) {
      // An older page: its texts formatted in this task, drawn in the next (the reader
      // is looking at what is already drawn; issue 15, item 8).
      formatAhead(msgs.filter((m) => !m.deleted && m.text).map((m) => m.text));
      await new Promise((resolve) => { setTimeout(resolve, 0); });
    }
    let more = false;
    withAhead(() => {
      addMessages(c, msgs);
      if (older || !c.loaded) c.more = !!data.more;
      c.loaded = true;
      if (older) c.sepPages = (c.sepPages || 0) + 1;
      more = needsOlder(c);
      if (state.view && convKey(state.view) === c.key) renderMessages(!older, older);
    });
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
export const shown = { key: null, count: 0, lastId: null };

/** What goes before message `i` of the conversation (the notices before it if it is
 *  the first one drawn, a day separator if needed, the "new messages" line if it goes
 *  here), and whether the message is grouped with the one before (its header hidden).
 *  `top`: message `i` is the first one the list draws (its window starts there): a day
 *  separator and its header are shown whatever came before it. */
function headItems(c, i, sepId, top) {
  const msgs = c.msgs;
  const m = msgs[i];
  let prev = top ? null : msgs[i - 1];
  const items = [];
  if (top) items.push(...noticeItems(c, i > 0 ? msgs[i - 1].id : -Infinity, m.id));
  if (!prev || dayKey(prev.ts) !== dayKey(m.ts)) {
    // Plain list items (a role other than listitem is not allowed directly in the <ol>).
    items.push(h('li', { class: 'day-sep', text: fmtDay(m.ts) }));
    prev = null;
  }
  if (m.id === sepId) {
    items.push(h('li', { class: 'new-sep', id: 'new-sep' }, h('span', { text: 'New messages' })));
    prev = null;
  }
  const grouped = !!prev && (prev.author ?? prev.from) === (m.author ?? m.from) && m.ts - prev.ts < 5 * 60 * 1000;
  return { items, grouped };
}

/** The list items of message `i` of the conversation: what goes before it (headItems),
 *  the message, then the membership notices that came after it. */
function messageItems(c, i, sepId, top) {
  const msgs = c.msgs;
  const m = msgs[i];
  const { items, grouped } = headItems(c, i, sepId, top);
  items.push(messageEl(m, grouped, 'main'));
  items.push(...noticeItems(c, m.id, i + 1 < msgs.length ? msgs[i + 1].id : Infinity));
  return items;
}

/** The membership notices that came after message `from` and before message `to`. */
function noticeItems(c, from, to) {
  return c.notices.filter((n) => n.after >= from && n.after < to).map(noticeEl);
}

export const noticeEl = (n) => h('li', { class: 'msg system member-notice', role: 'note', title: fmtFull(n.ts) }, n.text);

/** The message the "new messages" line goes before: the first after the read marker
 *  (not one's own) when the conversation was opened. */
function sepIdOf(c) {
  if (c.sepAfter === null || !state.me) return null;
  const first = c.msgs.find((m) => m.id > c.sepAfter && (m.author ?? m.from) !== state.me.username);
  return first ? first.id : null;
}

/** One message: author and time, the quoted message it replies to, its text (or a
 *  tombstone, or the editor), "(edited)", reactions, its reply count, and its actions. */
export function messageEl(m, grouped, where) {
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
export function quoteEl(q, where) {
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
  const button = (op, label, glyph, act) => h('button', {
    type: 'button', class: 'msg-action', 'data-op': op, 'aria-label': label, title: label, onclick: act,
  }, icon(glyph));
  return h('div', { class: 'msg-actions', role: 'toolbar', 'aria-label': 'Message actions' },
    button('react', 'Add a reaction', 'smile', (ev) => openPicker(ev.currentTarget, m)),
    button('reply', 'Reply', 'reply', () => (where === 'thread' ? $('thread-input').focus() : startReply(m))),
    mine ? button('edit', 'Edit', 'pencil', () => startEdit(m, where)) : null,
    mine || admin ? button('delete', 'Delete', 'trash', () => askDelete(m)) : null);
}

/** Message `i`, already drawn as `li`, gets a new past: what stood before it is removed,
 *  its header is shown or hidden as it is now grouped or not, and the items that go
 *  before it (notices, day separator, "new messages" line) are returned to insert.
 *  `top`: it is now the first message drawn. */
function headBefore(c, i, sepId, li, top) {
  if (li.previousSibling) {
    const cut = document.createRange();
    cut.setStartBefore(li.parentNode.firstChild);
    cut.setEndBefore(li);
    cut.deleteContents();
  }
  const { items, grouped } = headItems(c, i, sepId, top);
  li.classList.toggle('first', !grouped);
  const head = li.querySelector(':scope > .msg-head');
  if (head) head.className = grouped ? 'msg-head visually-hidden' : 'msg-head';
  return items;
}

/** Messages a conversation keeps when it is left: the newest ones. */
const KEPT_WHEN_LEFT = 200;

/** A conversation left with more than KEPT_WHEN_LEFT messages loaded keeps only its
 *  newest ones, in its data and in its kept list (the older nodes are removed, none is
 *  drawn again): it reopens at its end anyway, and showing a kept list again costs the
 *  browser in proportion to its nodes, so a room switch stays fast however far back the
 *  reader paged (issue 15, item 8). Paging back fetches the older pages again. A search
 *  window has already been dropped (`leaveWindow`); a page on its way keeps it all. A list
 *  whose window does not reach the newest message is emptied, and drawn at its end when
 *  next shown. */
function trimKept(c) {
  if (!c || c.loading || c.newer || c.msgs.length <= KEPT_WHEN_LEFT) return;
  const list = c.list;
  const cut = c.msgs.length - KEPT_WHEN_LEFT; // messages dropped from the data
  const r = list ? shownRange(c, list, list.shown.sepId) : null;
  const from = r && r.valid && r.end ? Math.max(r.a, cut) : -1; // the first message kept drawn
  const firstLi = from >= 0 ? list.querySelector(`li.msg[data-id="${c.msgs[from].id}"]`) : null;
  for (const m of c.msgs.splice(0, cut)) c.ids.delete(m.id);
  c.more = true;
  if (!firstLi) {
    // Drawn again from the data when next shown (at its end): the nodes drawn now go
    // while the list is out of view, not when it is shown again.
    c.dirty = true;
    if (list) {
      list.replaceChildren();
      list.shown = { count: 0, firstId: null, lastId: null, sepId: null, end: true };
    }
    return;
  }
  firstLi.before(...headBefore(c, from - cut, list.shown.sepId, firstLi, true));
  list.shown = { ...list.shown, count: c.msgs.length - (from - cut), firstId: c.msgs[from - cut].id };
}

/** Each conversation keeps its own rendered list (`c.list`, an <ol>) in the page: the one
 *  shown is #message-list, the others are kept with `content-visibility: hidden` (class
 *  `kept`: not drawn, not in the accessibility tree, and their layout is kept by the
 *  browser), so a room switch draws nothing again (issue 15, item 8). `list.shown` says
 *  what a list draws (its window, see WINDOW_MAX): {count, firstId, lastId, sepId, end}. */
function listOf(c) {
  if (!c.list || c.list.key !== c.key) {
    c.list = h('ol', { class: 'message-list kept' });
    c.list.key = c.key;
    c.list.shown = { count: 0, firstId: null, lastId: null, sepId: null, end: true };
  }
  return c.list;
}

/** Shows `list` as #message-list, keeping the one shown before (a conversation's) out of
 *  view; lists of conversations that are gone (signed out) are removed. */
function showList(list) {
  const current = $('message-list');
  if (current === list) return;
  current.removeAttribute('id');
  const oldSep = current.querySelector('#new-sep');
  if (oldSep) oldSep.removeAttribute('id');
  current.classList.add('kept');
  if (!list.isConnected) $('pending-list').before(list);
  for (const el of $('messages').querySelectorAll(':scope > ol.kept')) {
    const c = el.key ? state.convs.get(el.key) : null;
    if (!c || c.list !== el) el.remove();
  }
  list.classList.remove('kept');
  list.id = 'message-list';
  const sep = list.querySelector('.new-sep');
  if (sep) sep.id = 'new-sep';
}

/** An empty list in the page (no conversation shown). */
function showEmptyList() {
  if ($('message-list').key) showList(h('ol', { class: 'message-list' }));
}

// ----- The window of messages drawn ------------------------------------------------------
//
// A conversation keeps its messages as data (`c.msgs`, in id order); its list draws a
// contiguous run of at most WINDOW_MAX of them, its *window* (`list.shown`; `end` when it
// reaches the newest message), so the browser's work per frame (styles, layout, the
// `content-visibility` checks, hit tests) stays bounded however far back one pages
// (issue 15, item 8: no long task over 50 ms per page at 5,000 messages). Only what
// changes is touched: a page loaded above is drawn and as many messages are removed at
// the bottom; scrolling near an end of the window draws WINDOW_STEP messages from the
// data there and removes as many at the other end; new messages are appended while the
// window reaches the newest one (else "Jump to the latest" is offered, and sending,
// reopening or that button bring the window back to the end). The reading position is
// kept on the message at the top of the view. A message asked for (a search result, the
// original of a reply) that is in the data but not drawn moves the window around it.

/** Messages drawn at most in a conversation's list. */
const WINDOW_MAX = 300;
/** Messages drawn from the data at a time when the reader scrolls near an end of the
 *  window (as many are removed at the other end). */
const WINDOW_STEP = 50;
/** Messages drawn when a window is drawn anew (opened at the end after it had left it,
 *  or around a message asked for): more than a screenful; scrolling draws the rest. */
const WINDOW_OPEN = 60;
/** How near (px) an end of the window the reader gets before more is drawn there. */
const WINDOW_NEAR = 400;

/** The index of message `id` in the conversation's data, or -1. */
function indexOfId(c, id) {
  const msgs = c.msgs;
  let lo = 0;
  let hi = msgs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const d = idCmp(msgs[mid].id, id);
    if (d === 0) return mid;
    if (d < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** Where the list's window is in the data now: messages a to b - 1, `end` if it reached
 *  the newest message when drawn, `valid` if the nodes drawn are still right (else the
 *  window is drawn again); null if nothing is drawn or its ends are no longer in the data. */
function shownRange(c, list, sepId) {
  const was = list.shown;
  if (!was.count) return null;
  const a = indexOfId(c, was.firstId);
  const last = indexOfId(c, was.lastId);
  if (a < 0 || last < a) return null;
  return { a, b: last + 1, end: was.end, valid: !c.dirty && was.sepId === sepId && last + 1 - a === was.count };
}

/** True if the list of the conversation does not draw its newest messages. */
export const detached = (c) => !!c.list && c.list.shown.count > 0 && !c.list.shown.end;

/** How many messages arrived since the reader's window left the newest ones (0 when it
 *  has them, or never had them: opened around a message). */
export function newBelow(c) {
  if (!detached(c) || c.list.shown.newest == null) return 0;
  const i = indexOfId(c, c.list.shown.newest);
  return i < 0 ? 0 : c.msgs.length - 1 - i;
}

/** The messages [lo, hi) the window should draw: around the message asked for; the
 *  newest ones for a fresh list or `toBottom`; a page loaded above (`keep`); moved by
 *  WINDOW_STEP (`move`: 'up' or 'down'); else where it is, following the newest
 *  messages if it reached them. */
function wantedRange(c, r, { toBottom, keep, move, around }) {
  const n = c.msgs.length;
  const at = around ?? c.at;
  const i = at ? indexOfId(c, at) : -1;
  if (i >= 0 && !(r && i >= r.a && i < r.b)) {
    const lo = Math.max(0, Math.min(i - WINDOW_OPEN / 2, n - WINDOW_OPEN));
    return [lo, Math.min(n, lo + WINDOW_OPEN)];
  }
  if (!r || (toBottom && !keep && !r.end)) return [Math.max(0, n - WINDOW_OPEN), n];
  if (move === 'up') {
    const lo = Math.max(0, r.a - WINDOW_STEP);
    return [lo, Math.min(r.b, lo + WINDOW_MAX)];
  }
  if (move === 'down') {
    const hi = Math.min(n, r.b + WINDOW_STEP);
    return [Math.max(r.a, hi - WINDOW_MAX), hi];
  }
  if (keep) return [0, Math.min(r.b, WINDOW_MAX)];
  if (r.end) return [Math.max(r.a, n - WINDOW_MAX), n];
  return [r.a, r.b];
}

/** Brings `list` to draw messages [lo, hi) of the conversation, touching only what
 *  changed when the window drawn (`r`) overlaps it: messages cut at the bottom or the
 *  top, older ones added before the first drawn (whose day separator and header are
 *  fixed at the boundary), newer ones after the last. Anything else (a changed message,
 *  the "new messages" line moved, a jump) draws the window again. */
function drawWindow(c, list, sepId, lo, hi, r) {
  const msgs = c.msgs;
  const liAt = (i) => list.querySelector(`li.msg[data-id="${msgs[i].id}"]`);
  const incremental = !!r && r.valid && lo < hi && lo < r.b && hi > r.a;
  // The texts of the messages drawn now, formatted in one pass (formattedTogether).
  const texts = [];
  const textsOf = (from, to) => {
    for (let i = from; i < to; i += 1) if (!msgs[i].deleted && msgs[i].text) texts.push(msgs[i].text);
  };
  if (incremental) {
    textsOf(lo, r.a);
    textsOf(r.b, hi);
  } else {
    textsOf(lo, hi);
  }
  formattedTogether(texts, () => drawItems(c, list, sepId, lo, hi, incremental ? r : null, liAt));
  c.dirty = false;
  list.shown = {
    count: hi - lo,
    firstId: hi > lo ? msgs[lo].id : null,
    lastId: hi > lo ? msgs[hi - 1].id : null,
    sepId,
    end: hi === msgs.length,
    // The newest message when the window last reached the end: those after it arrived
    // while the reader was further back (newBelow).
    newest: hi === msgs.length ? (hi > 0 ? msgs[hi - 1].id : null) : list.shown.newest,
  };
}

/** drawWindow's changes to the list: with `r`, the window drawn (overlapping), only what
 *  changed; without, everything again. */
function drawItems(c, list, sepId, lo, hi, r, liAt) {
  const msgs = c.msgs;
  if (r) {
    if (hi < r.b) {
      // Cut at the bottom: what follows message hi - 1 goes; its notices come back.
      const last = liAt(hi - 1);
      const cut = document.createRange();
      cut.setStartAfter(last);
      cut.setEndAfter(list.lastChild);
      cut.deleteContents();
      last.after(...noticeItems(c, msgs[hi - 1].id, msgs[hi].id));
    }
    if (lo > r.a) {
      const first = liAt(lo);
      first.before(...headBefore(c, lo, sepId, first, true));
    }
    if (lo < r.a) {
      const first = liAt(r.a);
      const frag = document.createDocumentFragment();
      for (let i = lo; i < r.a; i += 1) frag.append(...messageItems(c, i, sepId, i === lo));
      frag.append(...headBefore(c, r.a, sepId, first, false));
      list.insertBefore(frag, first);
    }
    if (hi > r.b) {
      const frag = document.createDocumentFragment();
      for (let i = r.b; i < hi; i += 1) frag.append(...messageItems(c, i, sepId, false));
      list.append(frag);
    }
  } else {
    const frag = document.createDocumentFragment();
    if (!msgs.length) frag.append(...noticeItems(c, -Infinity, Infinity));
    for (let i = lo; i < hi; i += 1) frag.append(...messageItems(c, i, sepId, i === lo));
    list.replaceChildren(frag);
  }
}

/** The first message at least partly in view and where its top is (the reading
 *  position to keep when the list changes above it). */
function readingAnchor(box, list) {
  const top = box.getBoundingClientRect().top;
  const items = list.querySelectorAll(':scope > li.msg[data-id]'); // not notices (drawn again)
  let lo = 0;
  let hi = items.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (items[mid].getBoundingClientRect().bottom > top) {
      found = mid;
      hi = mid - 1;
    } else {
      lo = mid + 1;
    }
  }
  return found < 0 ? null : { li: items[found], top: items[found].getBoundingClientRect().top };
}

/** Renders the current conversation. `toBottom`: scroll to the newest message (the
 *  window is brought to the end); `keep`: keep the visible messages in place (older
 *  ones were added above). The first render with messages of a conversation opened with
 *  unread messages scrolls to the "new messages" line instead. */
export function renderMessages(toBottom, keep) {
  drawView({ toBottom, keep });
}

/** From search's `loadNewer`: messages after a search result's window were added. */
export function renderNewer() {
  drawView({ move: 'newer' });
}

/** renderMessages, and `move`: the window moves ('up', 'down', 'newer': see
 *  wantedRange) with the reading position kept; `around`: a message id to draw. */
function drawView({ toBottom = false, keep = false, move = null, around = null }) {
  if (!state.view) return;
  renderTyping();
  const box = $('messages');
  const c = conv(convKey(state.view));
  const list = listOf(c);
  const switched = $('message-list') !== list;
  const atBottom = !switched && box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const anchor = switched ? null : readingAnchor(box, list);
  const sepId = sepIdOf(c);
  const r = shownRange(c, list, sepId);
  const [lo, hi] = wantedRange(c, r, { toBottom, keep, move, around });
  drawWindow(c, list, sepId, lo, hi, r);
  showList(list);
  renderPending();
  shown.key = c.key;
  shown.count = c.msgs.length;
  shown.lastId = c.msgs.length ? c.msgs[c.msgs.length - 1].id : null;
  $('load-older').hidden = !(c.loaded && (c.more || lo > 0) && c.msgs.length);
  $('history-start').hidden = !(c.loaded && !c.more && lo === 0);
  const sep = c.toSep && c.loaded ? list.querySelector('.new-sep') : null;
  if (c.loaded && c.msgs.length && !needsOlder(c)) c.toSep = false;
  const kept = !!anchor && anchor.li.isConnected;
  const stay = () => { box.scrollTop += anchor.li.getBoundingClientRect().top - anchor.top; };
  if (windowScroll(c, keep || !!move || !!around)) { /* at a search result, or its window left where it is */ }
  else if (sep) box.scrollTop = sep.offsetTop - 8; // .messages is the offset parent
  else if ((keep || move || around) && kept) stay();
  else if (toBottom || (atBottom && list.shown.end)) box.scrollTop = box.scrollHeight;
  else if (kept) stay();
  scheduleMarkRead();
}

/** The list item of message `id` in the conversation shown; one in its data but not
 *  drawn is drawn first (the window moves around it). Null if it is not in the data. */
export function messageLi(id) {
  const find = () => $('message-list').querySelector(`li.msg[data-id="${id}"]`);
  const li = find();
  if (li || !state.view || state.adminOpen || !conv(convKey(state.view)).ids.has(id)) return li;
  drawView({ around: id });
  return find();
}

/** Draws again the messages with these ids where they are shown (main list, thread),
 *  and in the lists kept for the conversations not shown. */
export function refreshMessages(ids) {
  for (const c of state.convs.values()) {
    if (!c.list || !c.list.shown.count) continue;
    for (const id of ids) {
      const m = c.ids.get(id);
      const li = m && c.list.querySelector(`li.msg[data-id="${id}"]`);
      if (li) li.replaceWith(messageEl(m, !li.classList.contains('first'), 'main'));
    }
  }
  if (state.thread && ids.some((id) => state.thread.ids.has(id) || state.thread.root.id === id)) renderThread();
}

/** Opening at the "new messages" line: up to 4 more pages are loaded to reach it. */
function needsOlder(c) {
  return c.toSep && c.more && c.msgs.length > 0 && c.msgs[0].id > c.sepAfter && (c.sepPages || 0) < 4;
}

/** When focus last moved onto something inside the message list (Tab, a click): the
 *  browser scrolls it into view, which is not the reader asking for older messages
 *  (issue 15, item 6: tabbing through "Load earlier messages" must not load a page). */
let focusMovedAt = 0;
let focusMoved = false; // until the next frame, whose scroll events come first
export function onFocusIn(ev) {
  if (ev.target === $('messages')) return;
  focusMovedAt = performance.now();
  focusMoved = true;
  requestAnimationFrame(() => { focusMoved = false; });
}

/** Scrolled: near the top, the window draws older messages from the data, or, at the
 *  first one loaded, the next older page is fetched; near the bottom of a window that
 *  does not reach the newest message, newer ones are drawn from the data. */
export function onScroll() {
  const box = $('messages');
  scheduleMarkRead();
  windowOnScroll();
  const byFocus = focusMoved || performance.now() - focusMovedAt < 400;
  if (!state.view || state.adminOpen || byFocus) return;
  const c = conv(convKey(state.view));
  if (!c.list || $('message-list') !== c.list) return;
  const r = shownRange(c, c.list, c.list.shown.sepId);
  if (r && r.a > 0 && box.scrollTop < WINDOW_NEAR) drawView({ move: 'up' });
  else if (box.scrollTop <= 40 && c.loaded && c.more && c.msgs.length) loadHistory(c, state.view, true);
  else if (r && !r.end && box.scrollHeight - box.scrollTop - box.clientHeight < WINDOW_NEAR) drawView({ move: 'down' });
}

/** "Load earlier messages": older messages from the data if the window does not start
 *  at the first one loaded, else the next older page. */
export function loadOlder() {
  if (!state.view || state.adminOpen) return;
  const c = conv(convKey(state.view));
  const r = c.list && $('message-list') === c.list ? shownRange(c, c.list, c.list.shown.sepId) : null;
  if (r && r.a > 0) drawView({ move: 'up' });
  else loadHistory(c, state.view, true);
}

export function renderDms() {
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
        'aria-label': `${p ? p.alias : user}${shownUnread(c) ? `, ${shownUnread(c)} unread` : ''}, private conversation`,
        onclick: () => openView({ kind: 'dm', user }),
      },
      h('span', { class: 'dot', 'data-status': statusOf(p), 'aria-hidden': 'true' }),
      h('span', { class: 'person-name', text: p ? p.alias : user }),
      ' ', badges(c))));
  }
  $('dm-empty').hidden = dms.length > 0;
  updateTitle();
}

/** The tab's title and the favicon show how many messages are unread (not counting the
 *  conversation being read). */
export function updateTitle() {
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
