// People: the people list and one's own status.

import { $, h } from './dom.js';
import { STATUS_LABEL, STATUS_ORDER } from './format.js';
import { state } from './state.js';
import { request } from './net.js';
import { showError } from './toast.js';
import { openView } from './conversation.js';

// ----- People ---------------------------------------------------------------------------

/** People rows by username, each with what it was drawn from (keyed rows: a presence
 *  change redraws only the rows that changed; issue 15, item 8). */
const rows = new Map(); // username -> {li, alias, status, me}
const collator = new Intl.Collator(undefined, { sensitivity: 'base' });
let scheduled = 0;

/** Draws the People list on the next frame: the presence events of a wave of logins
 *  arriving within one frame cost one update. */
export function schedulePeople() {
  if (!scheduled) scheduled = requestAnimationFrame(() => { scheduled = 0; renderPeople(); });
}

function personRow(p, me, status) {
  return h('li', { class: 'person', 'data-user': p.username, 'data-status': status },
    h('button', {
      type: 'button',
      class: 'person-open',
      disabled: me,
      title: me ? 'You' : `Write to ${p.alias} (${p.username})`,
      // The accessible name starts with what the button shows (alias, status).
      'aria-label': me ? `${p.alias} (you), ${STATUS_LABEL[status] || status}` : `${p.alias}, ${STATUS_LABEL[status] || status}: write to them`,
      onclick: () => openView({ kind: 'dm', user: p.username }),
    },
    h('span', { class: 'dot', 'data-status': status, 'aria-hidden': 'true' }),
    h('span', { class: 'person-name', text: p.alias }),
    // One's own row: "(you)" never cut off, and no status text (the top bar's status
    // menu shows it; the dot and the name for screen readers keep it): a long alias
    // such as "Administrator" fits (item 13).
    me ? [' ', h('span', { class: 'person-you', text: '(you)' })]
      : [' ', h('span', { class: 'person-status', text: status === 'unknown' ? 'offline?' : STATUS_LABEL[status] || status })]));
}

export function renderPeople() {
  if (scheduled) {
    cancelAnimationFrame(scheduled);
    scheduled = 0;
  }
  const list = $('people-list');
  const q = $('people-filter').value.trim().toLowerCase();
  const people = [...state.people.values()]
    .filter((p) => !q || p.alias.toLowerCase().includes(q) || p.username.toLowerCase().includes(q))
    .sort((a, b) => (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9) || collator.compare(a.alias, b.alias));
  // A row is drawn again only if what it shows changed; rows are moved, not rebuilt,
  // and only those out of place are moved.
  const wanted = new Set();
  let cursor = list.firstChild;
  for (const p of people) {
    const me = !!state.me && p.username === state.me.username;
    // While disconnected nobody's status is known (item 11): grey, "status unknown".
    const status = statusOf(p);
    let row = rows.get(p.username);
    if (row && !row.li.isConnected && row.li.parentNode !== list) row = null;
    if (!row || row.alias !== p.alias || row.status !== status || row.me !== me) {
      const li = personRow(p, me, status);
      if (row) {
        if (cursor === row.li) cursor = li;
        row.li.replaceWith(li);
      }
      row = { li, alias: p.alias, status, me };
      rows.set(p.username, row);
    }
    wanted.add(row.li);
    if (row.li === cursor) cursor = cursor.nextSibling;
    else list.insertBefore(row.li, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    if (!wanted.has(cursor)) cursor.remove();
    cursor = next;
  }
  for (const [user, row] of rows) if (!row.li.isConnected) rows.delete(user);
}

/** A person's status as shown: 'unknown' while the connection is down. */
export const statusOf = (p) => (state.presenceStale ? 'unknown' : p ? p.status : 'offline');

export async function onStatusChange() {
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
