// People: the people list and one's own status.

import { $, clear, h } from './dom.js';
import { STATUS_LABEL, STATUS_ORDER } from './format.js';
import { state } from './state.js';
import { request } from './net.js';
import { showError } from './toast.js';
import { openView } from './conversation.js';

// ----- People ---------------------------------------------------------------------------

export function renderPeople() {
  const list = $('people-list');
  clear(list);
  const q = $('people-filter').value.trim().toLowerCase();
  const people = [...state.people.values()]
    .filter((p) => !q || p.alias.toLowerCase().includes(q) || p.username.toLowerCase().includes(q))
    .sort((a, b) => (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9) || a.alias.localeCompare(b.alias));
  for (const p of people) {
    const me = state.me && p.username === state.me.username;
    // While disconnected nobody's status is known (item 11): grey, "status unknown".
    const status = statusOf(p);
    list.append(h('li', { class: 'person', 'data-user': p.username, 'data-status': status },
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
      h('span', { class: 'person-name', text: me ? `${p.alias} (you)` : p.alias }),
      ' ', h('span', { class: 'person-status', text: status === 'unknown' ? 'offline?' : STATUS_LABEL[status] || status }))));
  }
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
