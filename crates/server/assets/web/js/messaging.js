// Replies, edits, deletions and reactions (with the emoji picker); jumping to a
// quoted message.

import { $, clear, h } from './dom.js';
import { mentionsMe, snippet } from './markdown.js';
import { aliasOf, conv, convKey, state } from './state.js';
import { request } from './net.js';
import { showError, toast } from './toast.js';
import { renderRooms } from './rooms.js';
import { loadHistory, messageLi, refreshMessages, renderDms } from './conversation.js';

// ----- Replies, edits, deletions, reactions -----------------------------------------------

/** What a reply shows of the message it answers (the server sends the same). */
export function quoteOf(m) {
  return {
    id: m.id,
    author: m.author ?? m.from,
    alias: m.alias ?? m.from_alias,
    text: [...m.text].slice(0, 120).join(''),
    deleted: !!m.deleted,
  };
}

export function startReply(m) {
  if (!state.view) return;
  state.replyTo = { key: convKey(state.view), quote: quoteOf(m) };
  renderReplyBar();
  $('composer-input').focus();
}

export function cancelReply() {
  state.replyTo = null;
  renderReplyBar();
}

export function renderReplyBar() {
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
export async function jumpTo(id, where) {
  // In the main list, one in the loaded history but outside the window drawn is drawn.
  const find = () => (where === 'thread'
    ? $('thread').querySelector(`li.msg[data-id="${id}"]`)
    : messageLi(id));
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

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function startEdit(m, where) {
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
export function editForm(m, where) {
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
export function copiesOf(id) {
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

export function applyEdit(id, text, edited) {
  const copies = copiesOf(id);
  // An older edit told late (a cluster node catching up) does not undo a newer one
  // (each edit is stamped later than the last), nor does any edit undo a deletion.
  if (copies.some((m) => m.deleted || (m.edited && edited && edited <= m.edited))) return;
  for (const m of copies) {
    m.text = text;
    m.edited = edited;
  }
  const quoters = quotersOf(id);
  for (const q of quoters) q.reply_to.text = [...text].slice(0, 120).join('');
  refreshMessages([id, ...quoters.map((q) => q.id)]);
}

export function applyDelete(id) {
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
export function askDelete(m) {
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
export function reactionChip(m, r) {
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
export function applyReaction(m, emoji, user, added) {
  if (m.deleted) return; // a deleted message has no reactions
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

export function openPicker(anchor, m) {
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

export function closePicker() {
  pickerFor = null;
  $('emoji-picker').hidden = true;
}
