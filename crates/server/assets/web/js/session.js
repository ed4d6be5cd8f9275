// Signed in: entering the app after sign-in, loading people and conversations.

import { $, clear, h } from './dom.js';
import { addMessages, conv, roomInfo, state } from './state.js';
import { request } from './net.js';
import { dropToasts, showError, toast } from './toast.js';
import { leaveApp, saveToken, selectTab, setScreen, VIEW_KEY } from './auth.js';
import { renderRooms } from './rooms.js';
import { renderDms, renderHeader, showView } from './conversation.js';
import { flushOutbox } from './compose.js';
import { applyReadState } from './readstate.js';
import { renderNotifyButton } from './notify.js';
import { renderPeople } from './people.js';
import { loadRequests, loadSessions } from './admin.js';

// ----- Signed in ------------------------------------------------------------------------

export function enterApp(data) {
  const again = state.everSignedIn && state.me && state.me.username === data.account.username;
  if (!again) leaveApp();
  state.me = data.account;
  // The largest file the server stores (absent from older servers: it then says).
  state.uploadMax = data.upload_max_bytes || null;
  state.signedIn = true;
  state.everSignedIn = true;
  dropToasts('sanction'); // a new session starts with no stale kick or ban notice
  state.rooms = data.rooms || [];
  saveToken(data.token);
  setScreen('app');
  selectTab('signin'); // what the next visit of the sign-in screen shows
  for (const input of $('register-form').querySelectorAll('input')) input.value = '';
  // The alias (with an "admin" badge) fits the bar; the full identity is in the title and,
  // for screen readers, in hidden text (issue 15, item 13). The badge is appended only for
  // an administrator: Element.append writes a null as the text "null".
  const me = $('me');
  clear(me);
  me.append(h('span', { class: 'me-name', text: state.me.alias }),
    h('span', { class: 'visually-hidden', text: ` (${state.me.username})${state.me.is_admin ? ', administrator' : ''}` }));
  if (state.me.is_admin) me.append(h('span', { class: 'admin-tag', 'aria-hidden': 'true', text: 'admin' }));
  me.title = `${state.me.alias} (${state.me.username}) · ${state.me.first_name} ${state.me.last_name}${state.me.is_admin ? ' · administrator' : ''}`;
  $('status-select').value = state.me.status === 'offline' ? 'online' : state.me.status;
  $('admin-btn').hidden = !state.me.is_admin;
  if (!state.me.is_admin) state.adminOpen = false;

  // Whatever was loaded before a reconnect may have missed messages: reload on view.
  // The read state is the server's, for every device: it replaces the counts.
  for (const c of state.convs.values()) {
    c.loaded = false;
    c.unread = 0;
    c.mentions = 0;
  }
  for (const rs of data.read_state || []) applyReadState(rs);
  state.backlog = data.offline_directs || 0;
  renderNotifyButton();

  if (!state.view || (state.view.kind === 'room' && !isMember(state.view.name))) {
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(VIEW_KEY) || 'null'); } catch { saved = null; }
    if (saved && saved.kind === 'room' && isMember(saved.name)) state.view = { kind: 'room', name: saved.name };
    else if (saved && saved.kind === 'dm' && typeof saved.user === 'string') state.view = { kind: 'dm', user: saved.user };
    else {
      const first = state.rooms.find((r) => r.state === 'member');
      state.view = first ? { kind: 'room', name: first.name } : null;
    }
  }
  renderRooms();
  renderDms();
  showView();
  loadPeople();
  loadConversations();
  if (state.me.is_admin) {
    state.requests = [];
  state.accounts = [];
    loadRequests();
    if (state.adminOpen) loadSessions();
  }
  if (again) toast('Reconnected.', { ms: 2500 });
  flushOutbox();
}

const isMember = (name) => {
  const r = roomInfo(name);
  return !!r && r.state === 'member';
};

export function loadPeople() {
  request('who')
    .then((data) => {
      state.people.clear();
      for (const u of data.users || []) state.people.set(u.username, u);
      state.presenceStale = false; // statuses known again
      renderPeople();
      renderDms();
      renderHeader();
    })
    .catch((err) => showError(err, 'Could not load people'));
}

/** Earlier private conversations, each with its last message, for the sidebar. */
function loadConversations() {
  request('conversations')
    .then((data) => {
      for (const c of data.conversations || []) addMessages(conv(`dm:${c.with}`), [c.last]);
      renderDms();
    })
    .catch((err) => showError(err, 'Could not load your conversations'));
}
