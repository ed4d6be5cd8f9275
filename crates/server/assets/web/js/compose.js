// Composing and sending: every message has a key; unacknowledged ones are sent again
// (the outbox); the composer's keys and size; @mention completion from the room's
// members.

import { $, clear, h, icon } from './dom.js';
import { addMessages, aliasOf, conv, convKey, state } from './state.js';
import { request } from './net.js';
import { showError, toast } from './toast.js';
import { keepDraft } from './drafts.js';
import { quoteEl, renderDms, renderMessages } from './conversation.js';
import { cancelReply, renderReplyBar } from './messaging.js';
import { replyArrived } from './thread.js';
import { isCurrent } from './events.js';
import { clearAttachments, readyAttachments, restoreAttachments } from './files.js';
import { jumpToLatest } from './search.js';

// ----- Sending: every message has a key; unacknowledged ones are sent again ----------

/** Messages written but not yet acknowledged, oldest first. Each carries an idempotency
 *  key: sent again with the same key (after a reconnect, or while the server answers
 *  `unavailable`), it is stored once. Shown as pending meanwhile. */
export const outbox = [];
const RETRY_MAX_MS = 30000;

/** 128 random bits in hex. (crypto.randomUUID needs a secure context; this does not.) */
function newKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function onSend(ev) {
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
export function queueMessage(view, text, quote, files = []) {
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
export function settleOwn(view, text, attachments) {
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
export function flushOutbox() {
  for (const entry of outbox) deliver(entry);
}

/** The current conversation's pending messages, under its messages. */
export function renderPending() {
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
        ? h('ul', { class: 'attachments' }, entry.files.map((a) => h('li', { class: 'att-file' }, icon('clip'), ` ${a.name}`)))
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

export function onComposerKey(ev) {
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

export function autosize() {
  const input = $('composer-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight + 2, 180)}px`;
  const n = [...input.value].length;
  $('char-count').textContent = n > state.maxChars * 0.8 ? `· ${n} / ${state.maxChars}` : '';
}

// ----- Mentions: @alias completion from the room's members -------------------------------

/** The members of a room (for completion and for naming mentions), fetched when the
 *  room is opened, then kept by `room_member` events. */
export function loadMembers(name) {
  request('members', { room: name })
    .then((data) => {
      state.members.set(name.toLowerCase(), new Map((data.users || []).map((u) => [u.username, u.alias])));
      for (const u of data.users || []) if (!state.people.has(u.username)) state.people.set(u.username, u);
      // Someone already typing "@…" gets the completion now.
      if (document.activeElement === $('composer-input')) updateMentionMenu();
    })
    .catch(() => { /* completion offers nobody; sending still works */ });
}

export function memberAlias(room, user) {
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

export function updateMentionMenu() {
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

export function closeMentionMenu() {
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
