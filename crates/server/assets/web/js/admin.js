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
  if (adminTab === 'users') loadUsers();
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

/** Accounts waiting for approval, with Approve and Reject (and an optional reason). Rows
 *  are keyed by username: one arriving or leaving leaves the others (and what was typed
 *  in them) alone. */
function renderAccounts() {
  const accounts = state.accounts || [];
  $('acct-empty').hidden = accounts.length > 0;
  $('acct-mode').textContent = `Registration: ${state.registration || 'open'}`;
  syncList($('acct-list'), accounts, (a) => a.username, accountRow);
}

function accountRow(a) {
  const who = `${a.alias} (${a.username})`;
  return decisionRow({
    attrs: { 'data-account': a.username },
    title: who,
    hint: `${a.first_name} ${a.last_name} · registered ${fmtFull(a.requested_at)}`,
    reasonLabel: `Reason for refusing ${a.username} (optional)`,
    yes: { cmd: 'approve_account', op: 'approve', text: 'Approve', done: `Approved: ${who}.`, args: () => ({ user: a.username }) },
    no: { cmd: 'reject_account', op: 'refuse', text: 'Refuse', done: `Refused: ${who}.`, args: (reason) => ({ user: a.username, ...(reason && { reason }) }) },
    failure: () => 'Could not decide on the account',
    decided: () => { state.accounts = state.accounts.filter((x) => x.username !== a.username); },
  });
}

/** A row of what an administrator decides on (an account waiting for approval, a join
 *  request): who and what, an optional reason, and the two choices (`yes`, `no`: the
 *  command, its button and the toast once done, and its arguments given the reason).
 *  `decided` drops it from the state; a refusal saying it was decided already reloads
 *  the lists. */
function decisionRow({ attrs, title, hint, reasonLabel, yes, no, failure, decided }) {
  const reason = h('input', { 'aria-label': reasonLabel, placeholder: 'reason (optional)' });
  const decide = (choice) => async (ev) => {
    const button = ev.currentTarget;
    button.disabled = true;
    try {
      await request(choice.cmd, choice.args(reason.value.trim()));
      decided();
      toast(choice.done);
      renderRequests();
    } catch (err) {
      button.disabled = false;
      showError(err, failure(choice));
      if (err.code === 'invalid_request') loadRequests();
    }
  };
  return h('li', { class: 'admin-row', ...attrs },
    h('div', { class: 'admin-who' },
      h('strong', { text: title }),
      h('span', { class: 'hint', text: hint })),
    h('div', { class: 'admin-actions' },
      reason,
      h('button', { type: 'button', class: 'primary', 'data-op': yes.op, text: yes.text, onclick: decide(yes) }),
      h('button', { type: 'button', 'data-op': no.op, text: no.text, onclick: decide(no) })));
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
  renderUsers();
}

export function renderRequests() {
  const n = state.requests.length + (state.accounts || []).length;
  // The button's name is its text ("Administration", "Admin" on a phone), then ", N
  // pending requests": it contains what is shown, as speech input needs (axe
  // label-content-name-mismatch).
  $('admin-pending').hidden = n === 0;
  $('admin-badge').textContent = String(n);
  tabCount('req', state.requests.length);
  tabCount('acct', (state.accounts || []).length);
  if (!state.adminOpen) return;
  renderAccounts();
  $('req-empty').hidden = state.requests.length > 0;
  // Keyed by user and room: a request arriving or decided leaves the other rows, and
  // the reasons typed in them, as they are (issue 15, item 3).
  syncList($('req-list'), state.requests, (q) => `${q.user}\n${q.room}`, requestRow);
}

function requestRow(q) {
  const args = (reason) => ({ user: q.user, room: q.room, ...(reason && { reason }) });
  return decisionRow({
    attrs: { 'data-user': q.user, 'data-room': q.room },
    title: `${q.alias} → ${q.room}`,
    hint: `${q.user} · asked ${fmtFull(q.requested_at)}`,
    reasonLabel: `Reason for ${q.alias} and ${q.room} (optional)`,
    yes: { cmd: 'accept', op: 'accept', text: 'Accept', done: `Accepted: ${q.alias} in ${q.room}.`, args },
    no: { cmd: 'reject', op: 'reject', text: 'Reject', done: `Rejected: ${q.alias} in ${q.room}.`, args },
    failure: (choice) => `Could not ${choice.cmd} the request`,
    decided: () => { state.requests = state.requests.filter((x) => !(x.user === q.user && x.room === q.room)); },
  });
}

function tabCount(tab, n) {
  const badge = $(`admin-tab-${tab}-count`);
  badge.hidden = n === 0;
  badge.textContent = n ? String(n) : '';
}

/** Makes `list` show one row per item, in order, keyed by `keyOf`: a row already shown
 *  for a key is kept as it is (with what was typed in it, and focus) and passed the new
 *  item through `update`; new keys get a row from `make`; rows of keys gone are removed. */
function syncList(list, items, keyOf, make, update) {
  const old = new Map();
  for (const li of [...list.children]) {
    if (li.dataset.key !== undefined) old.set(li.dataset.key, li);
    else li.remove();
  }
  let prev = null;
  for (const item of items) {
    const key = keyOf(item);
    let li = old.get(key);
    if (li) {
      old.delete(key);
      if (update) update(li, item);
    } else {
      li = make(item);
      li.dataset.key = key;
    }
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== li) list.insertBefore(li, want);
    prev = li;
  }
  for (const li of old.values()) li.remove();
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

/** The kick durations offered in a row. */
function durationSelect(alias, value) {
  const select = h('select', { 'aria-label': `Kick duration for ${alias}`, 'data-field': 'seconds' },
    h('option', { value: '60', text: '1 minute' }),
    h('option', { value: '300', text: '5 minutes' }),
    h('option', { value: '3600', text: '1 hour' }),
    h('option', { value: '86400', text: '1 day' }));
  select.value = value || '300';
  return select;
}

/** A status dot that says its status to screen readers too (issue 15, item 13). */
function statusDot(status) {
  const label = STATUS_LABEL[status] || status;
  return h('span', { class: 'dot', 'data-status': status, role: 'img', 'aria-label': label, title: label });
}

/** Kick asks first (issue 15, item 12): an inline confirmation in the row says who, for
 *  how long and why; what it shows is what is applied, even if the fields change after.
 *  `act` returns true once done. */
function askKick(row, kickButton, alias, seconds, durationText, reason, act) {
  row.querySelector('.kick-confirm')?.remove();
  const text = `Kick ${alias} for ${durationText}, ${reason ? `reason: “${reason}”` : 'no reason given'}?`;
  const yes = h('button', { type: 'button', class: 'danger', 'data-op': 'confirm-kick', text: 'Confirm kick' });
  const no = h('button', { type: 'button', 'data-op': 'cancel-kick', text: 'Cancel' });
  const box = h('div', { class: 'kick-confirm', role: 'group', 'aria-label': `Confirm the kick of ${alias}` },
    h('span', { text }), yes, no);
  const cancel = () => {
    box.remove();
    kickButton.focus();
  };
  no.addEventListener('click', cancel);
  box.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.stopPropagation();
      cancel();
    }
  });
  yes.addEventListener('click', async () => {
    yes.disabled = true;
    const args = { user: row.dataset.user, seconds };
    if (reason) args.reason = reason;
    if (await act(args)) box.remove();
    else yes.disabled = false;
  });
  row.append(box);
  yes.focus();
}

// ----- Users: every account, searched and paged (issue 15, item 9) -----------------------

const users = { query: '', items: [], next: null, total: 0, seq: 0, loaded: false };
const userDrafts = new Map(); // username -> { seconds, reason }: survives searches too
let searchTimer = null;

export function loadUsers(more = false) {
  users.seq += 1;
  const seq = users.seq;
  const args = { limit: 50 };
  if (users.query) args.query = users.query;
  if (more && users.next) args.cursor = users.next;
  $('users-list').setAttribute('aria-busy', 'true');
  request('accounts', args)
    .then((data) => {
      if (seq !== users.seq) return; // a newer search answered or will
      users.loaded = true;
      users.items = more ? users.items.concat(data.accounts || []) : data.accounts || [];
      users.next = data.next ?? null;
      users.total = data.total ?? users.items.length;
      renderUsers();
    })
    .catch((err) => showError(err, 'Could not load the accounts'))
    .finally(() => {
      if (seq === users.seq) $('users-list').removeAttribute('aria-busy');
    });
}

/** One account again, after an action on it: its row is updated in place. */
async function reloadUser(username) {
  try {
    const data = await request('accounts', { query: username, limit: 100 });
    const fresh = (data.accounts || []).find((a) => a.username === username);
    if (!fresh) return;
    users.items = users.items.map((a) => (a.username === username ? fresh : a));
    renderUsers();
  } catch (err) {
    showError(err, `Could not reload ${username}`);
  }
}

/** Presence changed while the panel is open: Connected is read again only while shown
 *  (a wave of logins would otherwise send a request per change), Users rows take the
 *  new statuses in place. */
export function onAdminPresence() {
  if (adminTab === 'conn' || adminTab === 'sanctions') loadSessions();
  renderUsers();
}

export function renderUsers() {
  if (!state.adminOpen || !users.loaded) return;
  syncList($('users-list'), users.items, (a) => a.username, userRow, updateUserRow);
  const shown = users.items.length;
  $('users-count').textContent = users.total === 0
    ? (users.query ? 'No account matches.' : 'No account.')
    : `${shown < users.total ? `${shown} of ` : ''}${users.total} account${users.total > 1 ? 's' : ''}`;
  $('users-more').hidden = !users.next;
}

function userRow(a) {
  const key = a.username;
  const me = state.me && key === state.me.username;
  const draft = userDrafts.get(key) || {};
  const duration = durationSelect(a.alias, draft.seconds);
  const reason = h('input', { 'aria-label': `Reason for sanctioning ${a.alias}`, placeholder: 'reason', 'data-field': 'reason' });
  reason.value = draft.reason || '';
  const keep = () => userDrafts.set(key, { seconds: duration.value, reason: reason.value });
  duration.addEventListener('change', keep);
  reason.addEventListener('input', keep);
  const who = h('div', { class: 'admin-who' });
  const lift = h('span', { class: 'admin-lift' });
  const kick = h('button', { type: 'button', 'data-op': 'kick', text: 'Kick', disabled: me });
  const ban = h('button', { type: 'button', class: 'danger', 'data-op': 'ban', text: 'Ban…', disabled: me });
  const row = h('li', { class: 'admin-row', 'data-user': key }, who,
    h('div', { class: 'admin-actions' }, me ? null : [duration, reason, kick, ban], lift));
  const done = () => {
    userDrafts.delete(key);
    duration.value = '300';
    reason.value = '';
    reloadUser(key);
    loadSessions(true);
  };
  kick.addEventListener('click', () => {
    askKick(row, kick, row.account.alias, Number(duration.value), duration.selectedOptions[0].textContent,
      reason.value.trim(), async (args) => {
        try {
          const data = await request('kick', args);
          toast(`${row.account.alias} is kicked until ${fmtFull(data.until)}.`);
          done();
          return true;
        } catch (err) {
          showError(err, `Could not kick ${row.account.alias}`);
          return false;
        }
      });
  });
  confirmClick(ban, 'Confirm ban', async () => {
    const args = { user: key };
    if (reason.value.trim()) args.reason = reason.value.trim();
    try {
      await request('ban', args);
      toast(`${row.account.alias} is banned.`);
      done();
    } catch (err) {
      showError(err, `Could not ban ${row.account.alias}`);
    }
  });
  row.parts = { who, lift };
  updateUserRow(row, a);
  return row;
}

/** Redraws what a row shows of its account (name, status, sessions, sanctions), never
 *  its fields; the status is the live one when presence told it since. */
function updateUserRow(row, a) {
  row.account = a;
  const me = state.me && a.username === state.me.username;
  const live = state.people.get(a.username);
  const status = (live && live.status) || a.status;
  const sanctions = a.sanctions || [];
  const sig = JSON.stringify([a.alias, a.first_name, a.last_name, a.is_admin, a.pending_approval, status, a.sessions, sanctions]);
  if (row.dataset.sig === sig) return;
  row.dataset.sig = sig;
  row.dataset.status = status;
  const { who, lift } = row.parts;
  clear(who);
  who.append(
    h('strong', {}, statusDot(status), ` ${a.alias}${me ? ' (you)' : ''} `,
      a.is_admin ? h('span', { class: 'admin-tag', text: 'admin' }) : null,
      a.pending_approval ? h('span', { class: 'admin-tag', text: 'awaiting approval' }) : null),
    h('span', { class: 'hint', text: `${a.username} · ${a.first_name} ${a.last_name} · ${STATUS_LABEL[status] || status} · ${a.sessions} session${a.sessions === 1 ? '' : 's'}` }),
    ...sanctions.map((x) => h('span', {
      class: 'hint admin-sanction',
      'data-kind': x.kind,
      text: `${x.kind === 'ban' ? 'Banned' : `Kicked until ${fmtFull(x.until)}`}${x.reason ? ` · ${x.reason}` : ''} · by ${x.by}`,
    })));
  const sanctionSig = JSON.stringify(sanctions.map((x) => x.kind));
  if (lift.dataset.sig === sanctionSig) return;
  lift.dataset.sig = sanctionSig;
  clear(lift);
  for (const x of sanctions) {
    const ban = x.kind === 'ban';
    const cmd = ban ? 'unban' : 'unkick';
    lift.append(h('button', {
      type: 'button',
      'data-op': cmd,
      'aria-label': `${ban ? 'Unban' : 'End the kick of'} ${a.alias}`,
      text: ban ? 'Unban' : 'End kick',
      onclick: () => liftSanction(cmd, a.username),
    }));
  }
}

function onUsersSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    const q = $('users-search').value.trim();
    if (q === users.query && users.loaded) return;
    users.query = q;
    loadUsers();
  }, 250);
}

// ----- Tabs: one card at a time (issue 15, item 9) ---------------------------------------

const TABS = ['req', 'acct', 'users', 'conn', 'sanctions', 'bc', 'sd'];
let adminTab = 'req';

export function selectAdminTab(name, focus = false) {
  adminTab = name;
  for (const t of TABS) {
    const on = t === name;
    $(`admin-tab-${t}`).setAttribute('aria-selected', String(on));
    $(`admin-card-${t}`).hidden = !on;
  }
  $('admin-body').scrollTop = 0;
  if (name === 'users' && !users.loaded) loadUsers();
  if (name === 'conn' || name === 'sanctions') loadSessions();
  if (focus) $(`admin-tab-${name}`).focus();
}

/** Wires the panel's own controls (once, at start). */
export function initAdmin() {
  for (const t of TABS) {
    $(`admin-tab-${t}`).addEventListener('click', () => selectAdminTab(t));
    $(`admin-tab-${t}`).addEventListener('keydown', (ev) => {
      const i = TABS.indexOf(t);
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[ev.key];
      if (to === undefined) return;
      ev.preventDefault();
      selectAdminTab(TABS[(to + TABS.length) % TABS.length], true);
    });
  }
  $('users-search').addEventListener('input', onUsersSearch);
  $('users-more').addEventListener('click', () => loadUsers(true));
  $('conn-filter').addEventListener('input', () => renderSessions(true));
  $('sanction-refresh').addEventListener('click', loadSanctions);
}

// ----- Connected sessions -----------------------------------------------------------------

// What an administrator types in a user's row (kick duration, reason) survives the list
// being redrawn by presence changes and connections: drafts by username. While focus is
// inside the list the redraw waits until it leaves, so a "Confirm ban" armed there
// stays armed; after an action the list is redrawn at once. The list shows at most
// CONN_SHOWN users, the filter finds the others.
const CONN_SHOWN = 30;
const sessionDrafts = new Map(); // username -> { seconds, reason }
export let sessionsStale = false;

const fold = (s) => s.normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase();

export function renderSessions(force = false) {
  if (!state.adminOpen) return;
  const list = $('conn-list');
  if (!force && list.contains(document.activeElement)) {
    sessionsStale = true;
    return;
  }
  sessionsStale = false;
  clear(list);
  const byUser = new Map();
  for (const s of state.sessions) {
    if (!byUser.has(s.username)) byUser.set(s.username, []);
    byUser.get(s.username).push(s);
  }
  const words = fold($('conn-filter').value).split(/\s+/).filter(Boolean);
  const matching = [...byUser.values()].filter(([s]) => {
    const names = fold(`${s.username} ${s.alias}`);
    return words.every((w) => names.includes(w));
  });
  const total = byUser.size;
  $('conn-count').textContent = matching.length > CONN_SHOWN
    ? `${total} connected; showing ${CONN_SHOWN} of the ${matching.length}${words.length ? ' matching' : ''}: filter to find the others.`
    : `${total} connected${words.length ? `, ${matching.length} matching` : ''}.`;
  for (const sessions of matching.slice(0, CONN_SHOWN)) {
    const s = sessions[0];
    const key = s.username;
    const me = state.me && key === state.me.username;
    const draft = sessionDrafts.get(key) || {};
    const duration = durationSelect(s.alias, draft.seconds);
    const reason = h('input', { 'aria-label': `Reason for sanctioning ${s.alias}`, placeholder: 'reason', 'data-field': 'reason' });
    reason.value = draft.reason || '';
    const keep = () => sessionDrafts.set(key, { seconds: duration.value, reason: reason.value });
    duration.addEventListener('change', keep);
    reason.addEventListener('input', keep);
    const done = () => {
      sessionDrafts.delete(key);
      sessionsStale = true;
      loadSessions(true);
      if (users.loaded) reloadUser(key);
    };
    const kick = h('button', { type: 'button', 'data-op': 'kick', text: 'Kick', disabled: me });
    const ban = h('button', { type: 'button', class: 'danger', 'data-op': 'ban', text: 'Ban…', disabled: me });
    const row = h('li', { class: 'admin-row', 'data-user': key });
    kick.addEventListener('click', () => {
      askKick(row, kick, s.alias, Number(duration.value), duration.selectedOptions[0].textContent,
        reason.value.trim(), async (args) => {
          try {
            const data = await request('kick', args);
            toast(`${s.alias} is kicked until ${fmtFull(data.until)}.`);
            done();
            return true;
          } catch (err) {
            showError(err, `Could not kick ${s.alias}`);
            return false;
          }
        });
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
    // In a cluster each session says which node holds it (`node`, absent on one node).
    const where = sessions
      .map((x) => `${x.transport} ${x.address}${x.node ? ` on node ${x.node}` : ''} since ${fmtTime(x.since)}`)
      .join(' · ');
    row.append(
      h('div', { class: 'admin-who' },
        h('strong', {}, statusDot(s.status), ` ${s.alias}${me ? ' (you)' : ''}`),
        h('span', { class: 'hint', text: `${key} · ${STATUS_LABEL[s.status] || s.status} · ${sessions.length} session${sessions.length > 1 ? 's' : ''}: ${where}` })));
    if (!me) row.append(h('div', { class: 'admin-actions' }, duration, reason, kick, ban));
    list.append(row);
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
    if (users.loaded) reloadUser(user);
    return true;
  } catch (err) {
    showError(err, `Could not ${cmd === 'unban' ? 'unban' : 'end the kick of'} ${user}`);
    return false;
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
