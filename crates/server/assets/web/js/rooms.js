// Rooms: the room list, joining and leaving, the room opened by default.

import { $, clear, h, icon } from './dom.js';
import { POLICY_LABEL, STATE_LABEL } from './format.js';
import { state } from './state.js';
import { request } from './net.js';
import { showError, toast } from './toast.js';
import { openView, showView, updateTitle } from './conversation.js';
import { badges, shownUnread } from './readstate.js';
import { keptTexts } from './drafts.js';

// ----- Rooms ----------------------------------------------------------------------------

export function renderRooms() {
  const list = $('room-list');
  clear(list);
  for (const r of state.rooms) {
    if (r.state === 'none') continue;
    const member = r.state === 'member';
    const c = state.convs.get(`room:${r.name}`);
    const unread = member && c ? shownUnread(c) : 0;
    const current = !state.adminOpen && state.view && state.view.kind === 'room' && state.view.name === r.name;
    let action = null;
    if (r.state === 'can_join') action = ['join', 'Join', `Join ${r.name}`];
    else if (r.state === 'can_request') action = ['request', 'Request to join', `Request to join ${r.name}`];
    else if (r.state === 'pending') action = ['withdraw', 'Withdraw', `Withdraw the request to join ${r.name}`];
    else if (member && r.policy !== 'everyone') action = ['leave', 'Leave', `Leave ${r.name}`];
    // The accessible name starts with what the button shows (name, unread count).
    const label = `${r.name}${unread ? `, ${unread} unread` : ''}, ${POLICY_LABEL[r.policy] || r.policy}, ${STATE_LABEL[r.state] || r.state}`;
    const li = h('li', {
      class: `room-item${member ? '' : ' not-member'}${current ? ' current' : ''}`,
      'data-room': r.name,
      'data-state': r.state,
      'data-policy': r.policy,
    },
    h('button', {
      type: 'button',
      class: 'room-open',
      disabled: !member,
      'aria-current': current ? 'page' : null,
      'aria-label': label,
      title: member ? `Open ${r.name}` : `${r.name}: ${STATE_LABEL[r.state] || r.state}`,
      onclick: () => openView({ kind: 'room', name: r.name }),
    },
    h('span', { class: 'room-name' },
      h('span', { class: 'label' }, r.policy === 'private' ? icon('lock') : '#', ` ${r.name}`),
      member && c ? [' ', ...badges(c)] : null)),
    h('span', { class: 'room-meta', 'aria-hidden': 'true' },
      h('span', { class: 'tag policy', text: POLICY_LABEL[r.policy] || r.policy }),
      h('span', { class: `tag state-${r.state}`, 'data-state': r.state, text: STATE_LABEL[r.state] || r.state })));
    const confirming = action && action[0] === 'leave' && confirmLeave === r.name;
    if (action && !confirming) {
      li.append(h('button', {
        type: 'button',
        class: 'room-action',
        'data-action': action[0],
        'aria-label': action[2],
        text: action[1],
        onclick: (ev) => {
          if (action[0] === 'leave' && LEAVE_WARNING[r.policy]) {
            // Rejoining is not one click away: ask first (item 12).
            confirmLeave = r.name;
            renderRooms();
            const yes = $('room-list').querySelector('.room-confirm [data-action="leave-confirm"]');
            if (yes) yes.focus();
          } else {
            roomAction(r.name, action[0], ev.currentTarget);
          }
        },
      }));
    }
    if (confirming) li.append(leaveConfirm(r));
    const lower = r.name.toLowerCase();
    if (r.state !== 'can_request') declined.delete(lower);
    else if (declined.has(lower)) {
      li.append(h('div', { class: 'room-declined', 'data-declined': 'true' },
        h('span', { text: declined.get(lower) }),
        h('button', {
          type: 'button',
          class: 'link-btn',
          'aria-label': `Dismiss the notice about ${r.name}`,
          text: 'Dismiss',
          onclick: () => {
            declined.delete(lower);
            renderRooms();
          },
        })));
    }
    list.append(li);
  }
  updateTitle();
}

export function setRoom(info) {
  const i = state.rooms.findIndex((r) => r.name.toLowerCase() === info.name.toLowerCase());
  if (i >= 0) state.rooms[i] = info;
  else state.rooms.push(info);
}

export const ownActions = new Map(); // lower-case room name -> time of our own join/leave

// A declined join request stays said in its room's row until dismissed or asked again
// (item 13): lower-case room name -> the sentence. Kept, like drafts, in the storage that
// holds the session token, for the same user only, so a reload keeps it (the server
// tells a decision once); signing out forgets it.
export const declined = keptTexts('salon.declined', 50, 'rooms'); // rooms with a notice kept

// Leaving a room one cannot simply rejoin asks first (item 12): the room being confirmed.
let confirmLeave = null;
const LEAVE_WARNING = {
  request: 'Rejoining will need an administrator\'s approval again.',
  private: 'You will need to be added again by a member to come back.',
};

function leaveConfirm(r) {
  const cancel = () => {
    confirmLeave = null;
    renderRooms();
    const again = $('room-list').querySelector(`li[data-room="${CSS.escape(r.name)}"] .room-action`);
    if (again) again.focus();
  };
  return h('div', {
    class: 'room-confirm',
    role: 'group',
    'aria-label': `Leave ${r.name}?`,
    onkeydown: (ev) => { if (ev.key === 'Escape') { ev.stopPropagation(); cancel(); } },
  },
  h('span', { class: 'room-confirm-text', text: `Leave ${r.name}? ${LEAVE_WARNING[r.policy]}` }),
  h('button', {
    type: 'button',
    class: 'danger',
    'data-action': 'leave-confirm',
    text: 'Yes, leave',
    'aria-label': `Yes, leave ${r.name}`,
    onclick: (ev) => {
      confirmLeave = null;
      roomAction(r.name, 'leave', ev.currentTarget);
    },
  }),
  h('button', { type: 'button', 'data-action': 'leave-cancel', text: 'Cancel', onclick: cancel }));
}

async function roomAction(name, action, button) {
  button.disabled = true;
  ownActions.set(name.toLowerCase(), Date.now());
  if (action === 'request') declined.delete(name.toLowerCase());
  try {
    const data = await request(action === 'join' || action === 'request' ? 'join' : 'leave', { room: name });
    setRoom(data.room);
    if (action === 'join') {
      toast(`You joined ${data.room.name}.`);
      openView({ kind: 'room', name: data.room.name });
    } else if (action === 'request') {
      toast(`Your request to join ${data.room.name} was sent to the administrators.`);
    } else if (action === 'withdraw') {
      toast(`Request to join ${data.room.name} withdrawn.`);
    } else {
      toast(`You left ${data.room.name}.`);
      state.convs.delete(`room:${data.room.name}`);
      if (state.view && state.view.kind === 'room' && state.view.name === data.room.name) {
        openDefault();
      }
    }
    renderRooms();
  } catch (err) {
    button.disabled = false;
    showError(err, `Could not ${action === 'request' ? 'request to join' : action} ${name}`);
  }
}

export function openDefault() {
  const first = state.rooms.find((r) => r.state === 'member');
  if (first) openView({ kind: 'room', name: first.name });
  else {
    state.view = null;
    showView();
  }
}
