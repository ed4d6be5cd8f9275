// Administration: join requests, accounts, invitations, connected sessions, kicks
// and bans, broadcast and shutdown.

import { $, clear, h } from './dom.js';
import { fmtDuration, fmtFull, fmtTime, STATUS_LABEL } from './format.js';
import { state } from './state.js';
import { request } from './net.js';
import { showError, toast } from './toast.js';
import { showView } from './conversation.js';
import { setPane } from './layout.js';

// ----- Administration -------------------------------------------------------------------

export function openAdmin() {
  state.adminOpen = true;
  setPane('main');
  showView();
  loadRequests();
  loadSessions();
  $('admin-title').focus();
}

export function loadRequests() {
  request('requests')
    .then((data) => {
      state.requests = data.requests || [];
      renderRequests();
    })
    .catch((err) => showError(err, 'Could not load join requests'));
  request('account_requests')
    .then((data) => {
      state.accounts = data.accounts || [];
      renderRequests();
    })
    .catch((err) => showError(err, 'Could not load the accounts waiting for approval'));
}

/** Accounts waiting for approval, with Approve and Reject (and an optional reason). */
function renderAccounts() {
  const list = $('acct-list');
  clear(list);
  const accounts = state.accounts || [];
  $('acct-empty').hidden = accounts.length > 0;
  $('acct-mode').textContent = `Registration: ${state.registration || 'open'}`;
  for (const a of accounts) {
    const reason = h('input', { 'aria-label': `Reason for refusing ${a.username} (optional)`, placeholder: 'reason (optional)' });
    const decide = (cmd) => async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      const args = { user: a.username };
      if (cmd === 'reject_account' && reason.value.trim()) args.reason = reason.value.trim();
      try {
        await request(cmd, args);
        state.accounts = state.accounts.filter((x) => x.username !== a.username);
        toast(`${cmd === 'approve_account' ? 'Approved' : 'Refused'}: ${a.alias} (${a.username}).`);
        renderRequests();
      } catch (err) {
        button.disabled = false;
        showError(err, 'Could not decide on the account');
        if (err.code === 'invalid_request') loadRequests();
      }
    };
    list.append(h('li', { class: 'admin-row', 'data-account': a.username },
      h('div', { class: 'admin-who' },
        h('strong', { text: `${a.alias} (${a.username})` }),
        h('span', { class: 'hint', text: `${a.first_name} ${a.last_name} · registered ${fmtFull(a.requested_at)}` })),
      h('div', { class: 'admin-actions' },
        reason,
        h('button', { type: 'button', class: 'primary', 'data-op': 'approve', text: 'Approve', onclick: decide('approve_account') }),
        h('button', { type: 'button', 'data-op': 'refuse', text: 'Refuse', onclick: decide('reject_account') }))));
  }
}

export async function onInvite(ev) {
  ev.preventDefault();
  const hours = Number($('invite-hours').value) || 72;
  try {
    const inv = await request('create_invite', { hours });
    const link = `${location.origin}/#invite=${inv.code}`;
    $('invite-result').textContent = `Invitation (shown once, for one person, until ${fmtFull(inv.expires_at)}): ${link}`;
  } catch (err) {
    showError(err, 'Could not create an invitation');
  }
}

export async function onAddUser(ev) {
  ev.preventDefault();
  const args = {
    username: $('adduser-username').value.trim(),
    alias: $('adduser-alias').value.trim(),
    first_name: $('adduser-first').value.trim(),
    last_name: $('adduser-last').value.trim(),
  };
  if ($('adduser-admin').checked) args.admin = true;
  try {
    const made = await request('create_account', args);
    $('adduser-result').textContent = `Account ${made.account.username} created. Its password (shown once): ${made.password}`;
    for (const id of ['adduser-username', 'adduser-alias', 'adduser-first', 'adduser-last']) $(id).value = '';
  } catch (err) {
    showError(err, 'Could not create the account');
  }
}

export function loadSessions(force = false) {
  request('connected')
    .then((data) => {
      state.sessions = data.sessions || [];
      renderSessions(force);
    })
    .catch((err) => showError(err, 'Could not load connected users'));
  loadSanctions();
}

function loadSanctions() {
  request('sanctions')
    .then((data) => {
      state.sanctions = data.sanctions || [];
      renderSanctions();
    })
    .catch((err) => showError(err, 'Could not load kicks and bans'));
}

function renderSanctions() {
  const list = $('sanction-list');
  clear(list);
  const sanctions = state.sanctions || [];
  for (const s of sanctions) {
    const ban = s.kind === 'ban';
    const what = ban ? 'banned' : `kicked until ${fmtFull(s.until)}`;
    const lift = h('button', {
      type: 'button',
      'data-op': ban ? 'unban' : 'unkick',
      'aria-label': `${ban ? 'Unban' : 'End the kick of'} ${s.user}`,
      text: ban ? 'Unban' : 'End kick',
    });
    lift.addEventListener('click', () => liftSanction(ban ? 'unban' : 'unkick', s.user));
    list.append(h('li', { class: 'admin-row', 'data-user': s.user, 'data-kind': s.kind },
      h('div', { class: 'admin-who' },
        h('strong', { text: s.user }),
        h('span', { class: 'hint', text: `${what} · ${s.reason} · by ${s.by}` })),
      h('div', { class: 'admin-actions' }, lift)));
  }
  $('sanction-empty').hidden = sanctions.length > 0;
}

export function renderAdmin() {
  renderRequests();
  renderSessions();
}

export function renderRequests() {
  const n = state.requests.length + (state.accounts || []).length;
  $('admin-badge').hidden = n === 0;
  $('admin-badge').textContent = String(n);
  $('admin-btn').setAttribute('aria-label', n ? `Administration, ${n} pending requests` : 'Administration');
  if (!state.adminOpen) return;
  renderAccounts();
  const list = $('req-list');
  clear(list);
  $('req-empty').hidden = state.requests.length > 0;
  for (const q of state.requests) {
    const reason = h('input', { 'aria-label': `Reason for ${q.alias} and ${q.room} (optional)`, placeholder: 'reason (optional)' });
    const decide = (cmd) => async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      const args = { user: q.user, room: q.room };
      if (reason.value.trim()) args.reason = reason.value.trim();
      try {
        await request(cmd, args);
        state.requests = state.requests.filter((x) => !(x.user === q.user && x.room === q.room));
        toast(`${cmd === 'accept' ? 'Accepted' : 'Rejected'}: ${q.alias} in ${q.room}.`);
        renderRequests();
      } catch (err) {
        button.disabled = false;
        showError(err, `Could not ${cmd} the request`);
        if (err.code === 'invalid_request') loadRequests();
      }
    };
    list.append(h('li', { class: 'admin-row', 'data-user': q.user, 'data-room': q.room },
      h('div', { class: 'admin-who' },
        h('strong', { text: `${q.alias} → ${q.room}` }),
        h('span', { class: 'hint', text: `${q.user} · asked ${fmtFull(q.requested_at)}` })),
      h('div', { class: 'admin-actions' },
        reason,
        h('button', { type: 'button', class: 'primary', 'data-op': 'accept', text: 'Accept', onclick: decide('accept') }),
        h('button', { type: 'button', 'data-op': 'reject', text: 'Reject', onclick: decide('reject') }))));
  }
}

/** A button that asks for a second click before acting. */
function confirmClick(button, label, act) {
  let armed = false;
  let timer = null;
  const original = button.textContent;
  button.addEventListener('click', () => {
    if (!armed) {
      armed = true;
      button.textContent = label;
      timer = setTimeout(() => {
        armed = false;
        button.textContent = original;
      }, 5000);
      return;
    }
    clearTimeout(timer);
    armed = false;
    button.textContent = original;
    act();
  });
}

// What an administrator types in a user's row (kick duration, reason) survives the list
// being redrawn by presence changes and connections: drafts by username. While focus is
// inside the list the redraw waits until it leaves, so a "Confirm ban" armed there
// stays armed; after an action the list is redrawn at once.
const sessionDrafts = new Map(); // username -> { seconds, reason }
export let sessionsStale = false;

export function renderSessions(force = false) {
  if (!state.adminOpen) return;
  const list = $('conn-list');
  if (!force && list.contains(document.activeElement)) {
    sessionsStale = true;
    return;
  }
  sessionsStale = false;
  clear(list);
  const seen = new Set();
  for (const s of state.sessions) {
    const key = s.username;
    const sessions = state.sessions.filter((x) => x.username === key);
    if (seen.has(key)) continue;
    seen.add(key);
    const me = state.me && key === state.me.username;
    const duration = h('select', { 'aria-label': `Kick duration for ${s.alias}`, 'data-field': 'seconds' },
      h('option', { value: '60', text: '1 minute' }),
      h('option', { value: '300', text: '5 minutes', selected: true }),
      h('option', { value: '3600', text: '1 hour' }),
      h('option', { value: '86400', text: '1 day' }));
    const draft = sessionDrafts.get(key) || {};
    duration.value = draft.seconds || '300';
    const reason = h('input', { 'aria-label': `Reason for sanctioning ${s.alias}`, placeholder: 'reason', 'data-field': 'reason' });
    reason.value = draft.reason || '';
    const keep = () => sessionDrafts.set(key, { seconds: duration.value, reason: reason.value });
    duration.addEventListener('change', keep);
    reason.addEventListener('input', keep);
    const done = () => {
      sessionDrafts.delete(key);
      sessionsStale = true;
      loadSessions(true);
    };
    const kick = h('button', { type: 'button', 'data-op': 'kick', text: 'Kick', disabled: me });
    const ban = h('button', { type: 'button', class: 'danger', 'data-op': 'ban', text: 'Ban…', disabled: me });
    kick.addEventListener('click', async () => {
      const args = { user: key, seconds: Number(duration.value) };
      if (reason.value.trim()) args.reason = reason.value.trim();
      try {
        const data = await request('kick', args);
        toast(`${s.alias} is kicked until ${fmtFull(data.until)}.`);
        done();
      } catch (err) {
        showError(err, `Could not kick ${s.alias}`);
      }
    });
    confirmClick(ban, 'Confirm ban', async () => {
      const args = { user: key };
      if (reason.value.trim()) args.reason = reason.value.trim();
      try {
        await request('ban', args);
        toast(`${s.alias} is banned.`);
        done();
      } catch (err) {
        showError(err, `Could not ban ${s.alias}`);
      }
    });
    const where = sessions.map((x) => `${x.transport} ${x.address} since ${fmtTime(x.since)}`).join(' · ');
    list.append(h('li', { class: 'admin-row', 'data-user': key },
      h('div', { class: 'admin-who' },
        h('strong', {}, h('span', { class: 'dot', 'data-status': s.status, 'aria-hidden': 'true', style: null }), ` ${s.alias}${me ? ' (you)' : ''}`),
        h('span', { class: 'hint', text: `${key} · ${STATUS_LABEL[s.status] || s.status} · ${sessions.length} session${sessions.length > 1 ? 's' : ''}: ${where}` })),
      me ? null : h('div', { class: 'admin-actions' }, duration, reason, kick, ban)));
  }
  if (!state.sessions.length) list.append(h('li', { class: 'hint', text: 'Nobody is connected.' }));
}

export async function liftSanction(cmd, who) {
  const user = who || $('unban-user').value.trim();
  if (!user) {
    toast('Enter a username first.', { kind: 'error' });
    $('unban-user').focus();
    return;
  }
  try {
    await request(cmd, { user });
    toast(cmd === 'unban' ? `${user} is no longer banned.` : `${user} may sign in again.`);
    if (!who) $('unban-user').value = '';
    loadSanctions();
  } catch (err) {
    showError(err, `Could not ${cmd === 'unban' ? 'unban' : 'end the kick of'} ${user}`);
  }
}

export async function onBroadcast(ev) {
  ev.preventDefault();
  const text = $('broadcast-text').value.trim();
  if (!text) {
    toast('Write the notice first.', { kind: 'error' });
    return;
  }
  try {
    await request('broadcast', { text });
    $('broadcast-text').value = '';
    toast('Notice sent to every connected user.');
  } catch (err) {
    showError(err, 'Could not broadcast');
  }
}

let shutdownArmed = null;
export async function onShutdown(ev) {
  ev.preventDefault();
  const button = $('shutdown-btn');
  if (!shutdownArmed) {
    button.textContent = 'Click again to shut down';
    shutdownArmed = setTimeout(() => {
      shutdownArmed = null;
      button.textContent = 'Shut down…';
    }, 5000);
    return;
  }
  clearTimeout(shutdownArmed);
  shutdownArmed = null;
  button.textContent = 'Shut down…';
  const seconds = Number($('shutdown-seconds').value);
  const args = {};
  if (Number.isFinite(seconds) && seconds >= 0) args.seconds = Math.floor(seconds);
  const message = $('shutdown-message').value.trim();
  if (message) args.message = message;
  try {
    const data = await request('shutdown', args);
    toast(`The server stops in ${fmtDuration(data.seconds)}.`, { kind: 'warn' });
  } catch (err) {
    showError(err, 'Could not shut down');
  }
}
