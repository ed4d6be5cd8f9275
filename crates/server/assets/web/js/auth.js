// Signing in and out: token storage, the screens (loading, sign-in, registration,
// the app), the sign-in and registration forms, leaving the app and signing out.

import { $ } from './dom.js';
import { fmtFull, sentence } from './format.js';
import { state } from './state.js';
import { conn, request, whenOpen } from './net.js';
import { dropDrafts } from './drafts.js';
import { declined } from './rooms.js';
import { enterApp } from './session.js';
import { shown, updateTitle } from './conversation.js';
import { outbox, renderPending } from './compose.js';
import { closePicker } from './messaging.js';
import { closeThread } from './thread.js';
import { leaveFiles } from './files.js';
import { resetSearch } from './search.js';

// ----- Token storage --------------------------------------------------------------------

export const TOKEN_KEY = 'salon.token';
export const VIEW_KEY = 'salon.view';

export function loadToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function saveToken(token, remember) {
  try {
    if (remember === undefined) remember = localStorage.getItem(TOKEN_KEY) !== null;
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(TOKEN_KEY);
    (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
  } catch {
    /* storage unavailable: the session simply will not survive a reload */
  }
}

export function dropToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(VIEW_KEY);
  } catch {
    /* nothing stored */
  }
  dropDrafts();
  declined.forget();
}

// ----- Screens --------------------------------------------------------------------------

export function setScreen(name) {
  document.body.dataset.screen = name;
  $('loading').hidden = name !== 'loading';
  $('auth-screen').hidden = name !== 'auth';
  $('app').hidden = name !== 'app';
  // Signed in from a form now hidden: focus at the start of the page, so that the first
  // Tab reaches "Skip to message box" (issue 15, item 6).
  const active = document.activeElement;
  if (name === 'app' && (!active || active === document.body || !$('app').contains(active))) {
    document.body.tabIndex = -1;
    document.body.focus({ preventScroll: true });
  }
}

export function showAuth(notice, kind) {
  setScreen('auth');
  const n = $('auth-notice');
  if (notice) {
    n.textContent = notice;
    n.className = kind === 'error' ? 'notice error' : 'notice';
    n.hidden = false;
  }
  if (!document.activeElement || document.activeElement === document.body) {
    ($('signin-panel').hidden ? $('reg-first_name') : $('signin-login')).focus();
  }
}

export function leaveApp() {
  // Pending messages belong to the session that wrote them.
  for (const entry of outbox.splice(0)) clearTimeout(entry.timer);
  renderPending();
  state.signedIn = false;
  state.me = null;
  state.rooms = [];
  state.people.clear();
  state.convs.clear();
  state.view = null;
  shown.key = null;
  state.adminOpen = false;
  state.requests = [];
  state.accounts = [];
  state.sessions = [];
  state.members.clear();
  state.replyTo = null;
  state.editing = null;
  state.backlog = 0;
  state.presenceStale = false;
  closeThread();
  closePicker();
  leaveFiles();
  resetSearch();
  $('conn-banner').hidden = true;
  updateTitle();
}

export function selectTab(which) {
  const signin = which === 'signin';
  $('tab-signin').setAttribute('aria-selected', String(signin));
  $('tab-register').setAttribute('aria-selected', String(!signin));
  $('tab-signin').tabIndex = signin ? 0 : -1;
  $('tab-register').tabIndex = signin ? -1 : 0;
  // The tab panels are <div>s around the forms (role=tabpanel is not allowed on a <form>).
  $('signin-panel').hidden = !signin;
  $('register-panel').hidden = signin;
}

export function clearFieldErrors(form) {
  for (const el of form.querySelectorAll('[data-field-error]')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const fe = form.querySelector('.form-error');
  if (fe) fe.textContent = '';
}

/** Puts a server error next to the field it names, else at the form's level, as a
 *  sentence (capital letter, final period) like the client's own texts. `focus`: move
 *  the focus to the field (the first of several errors only). */
export function showFormError(form, err, inputFor, focus = true) {
  const fieldEl = err.field ? form.querySelector(`[data-field-error="${CSS.escape(err.field)}"]`) : null;
  let msg = err.message || 'Something went wrong.';
  if (err.code === 'rate_limited' && err.retry_after_ms) msg += ` (try again in ${Math.ceil(err.retry_after_ms / 1000)} s)`;
  if (err.code === 'kicked' && err.until) msg += ` (until ${fmtFull(err.until)})`;
  msg = sentence(msg);
  if (fieldEl) {
    fieldEl.textContent = msg;
    const input = inputFor(err.field);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      if (focus) input.focus();
    }
  } else {
    form.querySelector('.form-error').textContent = msg;
  }
}

export async function onSignIn(ev) {
  ev.preventDefault();
  const form = $('signin-form');
  clearFieldErrors(form);
  const login = $('signin-login').value.trim();
  const password = $('signin-password').value;
  if (!login) return showFormError(form, { field: 'login', message: 'Enter your username or alias.' }, () => $('signin-login'));
  if (!password) return showFormError(form, { field: 'password', message: 'Enter your password.' }, () => $('signin-password'));
  await signIn(form, login, password);
}

async function signIn(form, login, password) {
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    await whenOpen();
    const data = await request('login', { login, password });
    saveToken(data.token, $('signin-remember').checked);
    $('signin-password').value = '';
    $('auth-notice').hidden = true;
    enterApp(data);
  } catch (err) {
    showFormError(form, err, (f) => (f === 'password' ? $('signin-password') : f === 'login' ? $('signin-login') : null));
    if (form !== $('signin-form')) {
      selectTab('signin');
      $('signin-login').value = login;
      showFormError($('signin-form'), err, () => null);
    }
  } finally {
    button.disabled = false;
  }
}

/**
 * What the sign-in screen offers depends on the server's registration mode (hello):
 * open, approval (a note: an administrator approves), invite (a code field, filled from
 * an invitation link `#invite=CODE`), closed (no "Create an account").
 */
export function applyRegistration(mode) {
  state.registration = mode;
  const closed = mode === 'closed';
  $('tab-register').hidden = closed;
  $('signin-closed-note').hidden = !closed;
  if (closed && !$('register-panel').hidden) selectTab('signin');
  $('reg-invite-field').hidden = mode !== 'invite';
  const note = $('register-note');
  note.hidden = mode !== 'approval' && mode !== 'invite';
  note.textContent = mode === 'approval'
    ? 'An administrator approves each new account before it can sign in.'
    : 'Creating an account on this server needs an invitation code from an administrator.';
  const code = new URLSearchParams(location.hash.slice(1)).get('invite');
  if (mode === 'invite' && code && !$('reg-invite').value) {
    $('reg-invite').value = code;
    if (!state.signedIn) selectTab('register');
  }
}

const chars = (s) => [...s].length;

/** The registration form's errors found before sending: [field, message] in the form's
 *  order (docs/PROTOCOL.md, registration rules). */
function registrationErrors(args, password2) {
  const errors = [];
  const length = (field, label, min, max) => {
    const n = chars(args[field] || '');
    if (!n) errors.push([field, `Enter your ${label}.`]);
    else if (n < min) errors.push([field, `The ${label} needs at least ${min} characters.`]);
    else if (n > max) errors.push([field, `The ${label} can have at most ${max} characters.`]);
    return n >= min && n <= max;
  };
  if (state.registration === 'invite' && !args.invite) errors.push(['invite', 'Enter the invitation code.']);
  length('first_name', 'first name', 1, 64);
  length('last_name', 'last name', 1, 64);
  if (length('username', 'username', 3, 32) && !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(args.username)) {
    errors.push(['username', 'A username has only letters (a–z), digits, . _ - and starts with a letter or digit.']);
  }
  length('alias', 'alias', 2, 32);
  length('password', 'password', 8, 128);
  if (args.password && args.password !== password2) errors.push(['password2', 'The two passwords differ.']);
  return errors;
}

export async function onRegister(ev) {
  ev.preventDefault();
  const form = $('register-form');
  clearFieldErrors(form);
  const args = {};
  for (const f of ['username', 'alias', 'first_name', 'last_name', 'password']) {
    args[f] = f === 'password' ? $(`reg-${f}`).value : $(`reg-${f}`).value.trim();
  }
  if (state.registration === 'invite') args.invite = $('reg-invite').value.trim();
  // Every rule the client can check, all shown at once (item 13); the server checks
  // again and its error is shown too.
  const errors = registrationErrors(args, $('reg-password2').value);
  if (errors.length) {
    errors.forEach(([field, message], i) => showFormError(form, { field, message }, (f) => $(`reg-${f}`), i === 0));
    return;
  }
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  let account;
  try {
    await whenOpen();
    account = await request('register', args);
  } catch (err) {
    button.disabled = false;
    showFormError(form, err, (f) => $(`reg-${f}`));
    return;
  }
  button.disabled = false;
  if (account && account.pending_approval) {
    // Nothing to sign in to yet: say so, on the sign-in tab.
    $('reg-password').value = '';
    $('reg-password2').value = '';
    $('signin-login').value = args.username;
    selectTab('signin');
    showAuth('Your account is created and waits for an administrator\'s approval. You can sign in once it is approved.', 'info');
    return;
  }
  // Registration does not sign in: do it with the same credentials.
  $('reg-password').value = '';
  $('reg-password2').value = '';
  await signIn(form, args.username, args.password);
}

// ----- Signing out ----------------------------------------------------------------------

/** What the sign-in form says after the reload that ends a sign-out ([text, kind], JSON in
 *  sessionStorage: the reloaded page has nothing else of this one). */
const SIGNED_OUT_KEY = 'salon.signedOut';

/** How long the server's answer to `logout` is waited for before reloading anyway. */
const LOGOUT_WAIT_MS = 5000;

/**
 * Signing out ends with a reload of the page. Everything the session drew stays in the
 * document otherwise, hidden but there for the next person at this tab (and kept in the
 * administration panel's lists even after another account signs in): the open rooms'
 * messages, private ones, accounts, join requests, sanctions with their reasons, the
 * connected sessions with their addresses. Clearing each list by hand would miss the next
 * one added; a new document has none of them.
 *
 * Before the reload: the token is dropped from storage and the server is told (`logout`,
 * answered after every request sent before it; the token is revoked), its answer waited
 * for (at most LOGOUT_WAIT_MS), and nothing reconnects meanwhile (`conn.leaving`). The
 * reloaded page has no token and shows the sign-in form with the notice left for it.
 */
export function logout() {
  if (conn.leaving) return;
  conn.leaving = true;
  const token = loadToken();
  dropToken();
  // Nothing of the session is shown while the server answers (the reload drops the rest,
  // pending messages included: they belong to the session that wrote them).
  $('loading').textContent = 'Signing out…';
  setScreen('loading');
  const reload = (text = 'You are signed out.', kind = 'info') => reloadSignedOut(text, kind);
  if (!token || !conn.open) {
    reload();
    return;
  }
  setTimeout(reload, LOGOUT_WAIT_MS);
  request('logout').then(() => reload(), (err) => {
    if (err.code === 'disconnected') reload();
    else reload(sentence(`You are signed out of this page, but the server answered: ${err.message}`), 'error');
  });
}

let reloading = false;

/**
 * Ends a session the way signing out does, with a reload (see `logout`), the sign-in form
 * of the reloaded page saying `text`: also when the server ended it (a kick, a ban, a
 * password changed, a session that expired), so that nothing of it stays in the page for
 * the next person at this tab. The token is dropped first; nothing reconnects meanwhile.
 */
export function reloadSignedOut(text, kind = 'info') {
  if (reloading) return;
  reloading = true;
  conn.leaving = true;
  dropToken();
  try {
    sessionStorage.setItem(SIGNED_OUT_KEY, JSON.stringify([text, kind]));
  } catch {
    /* storage unavailable: the sign-in form without the notice */
  }
  location.reload();
}

/** The notice left by `logout` for the reloaded page, once: [text, kind], or [] if none. */
export function signedOutNotice() {
  try {
    const kept = JSON.parse(sessionStorage.getItem(SIGNED_OUT_KEY) || '[]');
    sessionStorage.removeItem(SIGNED_OUT_KEY);
    return Array.isArray(kept) ? kept : [];
  } catch {
    return [];
  }
}
