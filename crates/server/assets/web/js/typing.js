// Typing indicators: shown for the time the server says, renewed while typing.

import { $ } from './dom.js';
import { convKey, roomInfo, state } from './state.js';
import { conn, request } from './net.js';

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
export function onTyping(e) {
  if (state.me && e.user === state.me.username) return;
  const key = typingKey(e);
  let who = state.typing.get(key);
  if (!who) state.typing.set(key, (who = new Map()));
  who.set(e.user, { alias: e.alias, until: Date.now() + e.expires_ms });
  renderTyping();
  setTimeout(renderTyping, e.expires_ms + 50);
}

/** A message from `user` ends their indicator there. */
export function typingDone(key, user) {
  const who = state.typing.get(key);
  if (who && who.delete(user)) renderTyping();
}

export function renderTyping() {
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
export function sayTyping() {
  const view = state.view;
  if (!view || !state.signedIn || !conn.open || !$('composer-input').value.trim()) return;
  const key = convKey(view);
  const now = Date.now();
  if (now - (typingSent.get(key) || 0) < 3000) return;
  typingSent.set(key, now);
  request('typing', view.kind === 'room' ? { room: view.name } : { with: view.user })
    .catch(() => { /* an indicator only: a refusal changes nothing for the user */ });
}
