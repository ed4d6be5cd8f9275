// Notifications: desktop notifications, the notification level, the favicon badge.

import { $, h } from './dom.js';
import { mentionsMe, snippet } from './markdown.js';
import { state } from './state.js';
import { request } from './net.js';
import { showError, toast } from './toast.js';
import { openView, renderHeader } from './conversation.js';
import { applyReadState } from './readstate.js';
import { isCurrent } from './events.js';

// ----- Notifications: desktop notifications, the title and the favicon ------------------

const canNotify = () => 'Notification' in window;

/** The control that asks for permission: shown while the browser has not been asked. */
export function renderNotifyButton() {
  $('notif-btn').hidden = !canNotify() || Notification.permission !== 'default';
}

export async function askNotifyPermission() {
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
export function maybeNotify(c, m) {
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

export async function onNotifyLevel() {
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
export function drawFavicon(n) {
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
