// Read state: kept by the server, for all of a user's devices; marking read, unread
// badges.

import { $, h } from './dom.js';
import { conv, convKey, roomInfo, state } from './state.js';
import { conn, request } from './net.js';
import { renderRooms } from './rooms.js';
import { renderDms } from './conversation.js';
import { isCurrent } from './events.js';

// ----- Read state: kept by the server, for all of a user's devices ------------------------

/** A read state from the sign-in, a `read` event (another device read, a level was
 *  set) or the reply to `mark_read` / `set_notify`. */
export function applyReadState(rs) {
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
export function scheduleMarkRead() {
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
  // Items are in order down the page: a binary search for the last one starting above
  // the bottom edge (thousands of messages loaded; issue 15, item 8).
  let lo = 0;
  let hi = items.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (items[mid].getBoundingClientRect().top < box.bottom - 4) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  for (let i = found; i >= 0 && i > found - 50; i -= 1) {
    const r = items[i].getBoundingClientRect();
    if (r.bottom > box.top) return Number(items[i].dataset.id);
  }
  return null;
}

/** Unread counts shown for a conversation: none for the one being read. */
export const shownUnread = (c) => (isCurrent(c) ? 0 : c.unread);
const shownMentions = (c) => (isCurrent(c) ? 0 : c.mentions);

export function badges(c) {
  const n = shownUnread(c);
  const at = shownMentions(c);
  return [
    at ? h('span', { class: 'badge mention', 'data-mentions': at, title: `${at} mention${at > 1 ? 's' : ''}`, text: '@' }) : null,
    n ? h('span', { class: 'badge', 'data-unread': n, text: n >= 1000 ? '999+' : String(n) }) : null,
  ];
}
