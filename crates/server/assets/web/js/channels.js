// Private channels: the dialog that creates one.

import { $, clear, h } from './dom.js';
import { state } from './state.js';
import { request } from './net.js';
import { toast } from './toast.js';
import { clearFieldErrors, showFormError } from './auth.js';
import { setRoom } from './rooms.js';
import { openView } from './conversation.js';

// ----- Private channels -----------------------------------------------------------------

export function openChannelDialog() {
  const form = $('channel-form');
  clearFieldErrors(form);
  $('channel-name').value = '';
  $('channel-filter').value = '';
  renderChannelMembers();
  $('channel-dialog').showModal();
  $('channel-name').focus();
}

export function renderChannelMembers() {
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

export async function onCreateChannel(ev) {
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
