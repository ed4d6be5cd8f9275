// Sign-in and registration: the server's field errors appear next to the right field.
// Signing out leaves nothing of the session in the page; the top bar's identity.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ADMIN_PASSWORD, launchBrowser, openPage, openRoom, register, screenshot, send, signIn, testServer, uniqueName,
  viaSocket, PASSWORD,
} from './helpers.mjs';

let server;
let browser;

before(async () => {
  server = await testServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The text shown next to a registration field. */
const fieldError = (page, field) => page.locator(`#reg-${field}-error`);

test('the sign-in screen is served with its security headers and shows the sign-in form', async () => {
  const res = await fetch(`${server.url}/`);
  assert.equal(res.status, 200);
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.match(csp, /connect-src 'self' ws:\/\/127\.0\.0\.1:\d+/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(res.headers.get('x-frame-options'), 'DENY');

  // The client never parses strings as HTML: in main.js and every module it imports,
  // followed from main.js the way the browser does.
  const modules = new Map();
  const queue = ['main.js'];
  while (queue.length) {
    const name = queue.shift();
    if (modules.has(name)) continue;
    const mod = await fetch(`${server.url}/js/${name}`);
    assert.equal(mod.status, 200, name);
    assert.match(mod.headers.get('content-type'), /^text\/javascript/, name);
    assert.equal(mod.headers.get('x-content-type-options'), 'nosniff', name);
    const js = await mod.text();
    assert.doesNotMatch(js, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(/, name);
    modules.set(name, js);
    for (const [, dep] of js.matchAll(/ from '\.\/([a-z]+\.js)';/g)) queue.push(dep);
  }
  assert.ok(modules.size > 10, `only ${[...modules.keys()]}`);
  assert.equal((await fetch(`${server.url}/js/nope.js`)).status, 404);
  assert.equal((await fetch(`${server.url}/app.js`)).status, 404);

  const page = await openPage(browser, server.url);
  await page.getByLabel('Username or alias').waitFor();
  await page.locator('#signin-form').getByLabel('Password', { exact: true }).waitFor();
  await screenshot(page, 'sign-in');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('registration shows each server error next to its field', async () => {
  const page = await openPage(browser, server.url);
  await page.getByRole('tab', { name: 'Create an account' }).click();
  const form = page.locator('#register-form');
  const submit = form.getByRole('button', { name: 'Create my account' });
  const who = uniqueName('reg');

  // A username that is too short: the error sits under Username, nowhere else.
  await form.getByLabel('First name').fill('Régine');
  await form.getByLabel('Last name').fill('Dupont');
  await form.getByLabel(/^Username/).fill('ab');
  await form.getByLabel(/^Alias/).fill(who.alias);
  await form.getByLabel(/^Password/).fill(PASSWORD);
  await form.getByLabel('Repeat the password').fill(PASSWORD);
  await submit.click();
  await fieldError(page, 'username').filter({ hasText: /\S/ }).waitFor();
  assert.equal(await form.getByLabel(/^Username/).getAttribute('aria-invalid'), 'true');
  assert.equal(await fieldError(page, 'password').textContent(), '');
  assert.equal(await fieldError(page, 'alias').textContent(), '');

  // A weak password: the error moves to Password.
  await form.getByLabel(/^Username/).fill(who.username);
  await form.getByLabel(/^Password/).fill('password123');
  await form.getByLabel('Repeat the password').fill('password123');
  await submit.click();
  await fieldError(page, 'password').filter({ hasText: /\S/ }).waitFor();
  assert.equal(await fieldError(page, 'username').textContent(), '');
  await screenshot(page, 'register-errors');

  // Invalid characters in the first name.
  await form.getByLabel(/^Password/).fill(PASSWORD);
  await form.getByLabel('Repeat the password').fill(PASSWORD);
  await form.getByLabel('First name').fill('R2D2');
  await submit.click();
  await fieldError(page, 'first_name').filter({ hasText: /\S/ }).waitFor();
  assert.equal(await fieldError(page, 'password').textContent(), '');

  // Two different passwords are caught before asking the server.
  await form.getByLabel('First name').fill('Régine');
  await form.getByLabel('Repeat the password').fill(`${PASSWORD}!`);
  await submit.click();
  await fieldError(page, 'password2').filter({ hasText: 'differ' }).waitFor();

  // Fixed: the account is created and signed in.
  await form.getByLabel('Repeat the password').fill(PASSWORD);
  await submit.click();
  await page.locator('body[data-screen="app"]').waitFor();
  await page.locator('#me').filter({ hasText: who.username }).waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();

  // The same username again: "taken", under Username.
  const again = await openPage(browser, server.url);
  await again.getByRole('tab', { name: 'Create an account' }).click();
  const f2 = again.locator('#register-form');
  await f2.getByLabel('First name').fill('Autre');
  await f2.getByLabel('Last name').fill('Personne');
  await f2.getByLabel(/^Username/).fill(who.username.toUpperCase());
  await f2.getByLabel(/^Alias/).fill(`${who.alias} bis`);
  await f2.getByLabel(/^Password/).fill(PASSWORD);
  await f2.getByLabel('Repeat the password').fill(PASSWORD);
  await f2.getByRole('button', { name: 'Create my account' }).click();
  await again.locator('#reg-username-error').filter({ hasText: /\S/ }).waitFor();
  assert.equal(await again.locator('body').getAttribute('data-screen'), 'auth');
  await again.context().close();
});

test('a wrong password is refused visibly and the right one signs in', async () => {
  const page = await openPage(browser, server.url);
  const who = await register(page, 'sam');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('body[data-screen="auth"]').waitFor();
  await page.locator('#auth-notice').filter({ hasText: 'signed out' }).waitFor();

  const form = page.locator('#signin-form');
  await form.getByLabel('Username or alias').fill(who.username);
  await form.getByLabel('Password', { exact: true }).fill('not the right password');
  await form.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#signin-error').filter({ hasText: /\S/ }).waitFor();
  assert.equal(await page.locator('body').getAttribute('data-screen'), 'auth');

  // By alias this time.
  await signIn(page, who.alias);
  await page.locator('#me').filter({ hasText: who.username }).waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

/** Chooses a card of the administration panel in its tab bar. */
async function adminTab(page, name) {
  const tab = page.getByRole('tab', { name: new RegExp(`^${name}`) });
  await tab.click();
  await tab.and(page.locator('[aria-selected="true"]')).waitFor();
}

test('signing out leaves nothing of the session in the page, not even for the next user of the tab', async () => {
  // Words of this test only, to look for in the page afterwards.
  const tag = `so${Date.now().toString(36)}`;
  const secret = `Réunion budget ${tag} : confidentiel`;
  const direct = `Entre nous ${tag}`;
  const reason = `motif ${tag} à ne pas montrer`;

  // Somebody connected, with a join request; somebody else kicked with a reason.
  const other = await openPage(browser, server.url);
  const U = await register(other, 'ulla');
  await other.locator('#room-list li[data-room="Informatique"]')
    .getByRole('button', { name: 'Request to join Informatique' }).click();
  await other.locator('#room-list li[data-room="Informatique"][data-state="pending"]').waitFor();
  const V = uniqueName('vera');
  await viaSocket(other, 'admin', [
    ['create_account', { username: V.username, alias: V.alias, first_name: 'Vera', last_name: 'Testeur', password: PASSWORD }],
    ['kick', { user: V.username, seconds: 3600, reason }],
  ], { password: ADMIN_PASSWORD });

  // The administrator reads a room and a private conversation, and the panel's lists.
  const page = await openPage(browser, server.url);
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await openRoom(page, 'Général');
  await send(page, secret);
  await page.locator('#message-list .msg-text', { hasText: secret }).waitFor();
  await page.locator(`#people-list li[data-user="${U.username}"] button`).first().click();
  await send(page, direct);
  await page.locator('#message-list .msg-text', { hasText: direct }).waitFor();
  await page.getByRole('button', { name: /^Administration/ }).click();
  await page.locator(`#req-list li[data-user="${U.username}"]`).waitFor();
  await adminTab(page, 'Kicks and bans');
  await page.locator('#sanction-list li', { hasText: reason }).waitFor();
  await adminTab(page, 'Connected');
  await page.locator(`#conn-list li[data-user="${U.username}"]`, { hasText: /127\.0\.0\.1:\d+/ }).waitFor();
  const before = await page.evaluate(() => document.documentElement.outerHTML);
  for (const s of [secret, direct, reason, U.username, 'admin-row']) assert.ok(before.includes(s), `before: ${s}`);

  // Signed out: the sign-in form, and nothing of the administrator's anywhere in the page.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('body[data-screen="auth"]').waitFor();
  await page.locator('#auth-notice').filter({ hasText: 'You are signed out.' }).waitFor();
  await page.getByLabel('Username or alias').waitFor();
  const html = await page.evaluate(() => document.documentElement.outerHTML);
  for (const s of [secret, direct, tag, U.username, V.username, 'admin-row', 'Administrator (admin)']) {
    assert.ok(!html.includes(s), `still in the page after signing out: ${s}`);
  }
  assert.doesNotMatch(html, /127\.0\.0\.1:\d+/);
  assert.equal(await page.locator('#me').textContent(), '');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('salon.token') || localStorage.getItem('salon.token')), null);

  // The next user of this tab, not an administrator: the panel holds nothing of the
  // administrator's.
  await signIn(page, U.username);
  await page.locator('#me').filter({ hasText: U.username }).waitFor();
  const panel = page.locator('#admin-body');
  assert.equal(await panel.locator('.admin-row').count(), 0);
  const panelText = await panel.textContent();
  for (const s of [tag, U.username, V.username]) assert.ok(!panelText.includes(s), `in #admin-body: ${s}`);
  assert.doesNotMatch(panelText, /127\.0\.0\.1:\d+/);
  assert.equal(await page.getByRole('button', { name: /^Administration/ }).isVisible(), false);
  assert.deepEqual(page.problems, []);
  await page.context().close();
  await other.context().close();
});

test('the top bar shows a user\'s identity with nothing else: no "null" without the admin badge', async () => {
  const page = await openPage(browser, server.url);
  const who = await register(page, 'nils');
  const me = page.locator('#me');
  await me.filter({ hasText: who.username }).waitFor();
  assert.equal(await me.locator('.admin-tag').count(), 0);
  assert.equal(await me.textContent(), `${who.alias} (${who.username})`);
  assert.doesNotMatch(await page.locator('#app > .topbar').textContent(), /null/);
  await page.context().close();
});
