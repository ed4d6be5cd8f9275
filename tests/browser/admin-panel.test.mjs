// The administration panel with hundreds of accounts (issue 15): every account searched
// and paged, sanctions for offline accounts, cards in tabs, what was typed kept across
// redraws, kick confirmation, the top bar on a phone, status dots and the identity.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  ADMIN_PASSWORD, PASSWORD, launchBrowser, openPage, register, room, Server, screenshot, signIn, until, viaSocket,
} from './helpers.mjs';

const DESKTOP = { width: 1366, height: 768 };
const PHONE = { width: 390, height: 844 };
const ACCOUNTS = 300;
// More than the Connected card shows at once (admin.js: CONN_SHOWN).
const CONNECTED = 32;
const BIN = process.env.SALON_BIN || path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'target', 'debug', 'salon');
// The password `salon bench` gives its accounts (crates/bench/src/lib.rs).
const BENCH_PASSWORD = 'bench password not for production';

let server;
let browser;
let admin;
// Words of this run only: the server may be shared with other test files and runs.
const tag = `adm${Date.now().toString(36)}`;
let offline; // an account that never signs in

/** Chooses a card of the panel in its tab bar (opening the panel first if need be). */
async function adminTab(page, name) {
  if (!await page.locator('#admin').isVisible()) await page.getByRole('button', { name: /^Administration/ }).click();
  const tab = page.getByRole('tab', { name: new RegExp(`^${name}`) });
  await tab.click();
  await tab.and(page.locator('[aria-selected="true"]')).waitFor();
}

/** 300 accounts ("Bench User", password BENCH_PASSWORD). One Argon2 hash each would take
 *  minutes on a loaded machine: `salon bench login` writes them straight into the
 *  server's database with one hash (the provisioning API, meant to run beside a running
 *  server). Hence a server of this file's own, even when SALON_URL names a shared one. */
async function createAccounts() {
  await promisify(execFile)(BIN, ['bench', 'login', '--server', `127.0.0.1:${server.tcpPort}`,
    '--database-url', `sqlite://${path.join(server.dir, 'data', 'salon.db')}`,
    '--logins', '0', '--resumes', String(ACCOUNTS), '--concurrency', '4', '--no-pin']);
}

before(async () => {
  server = await Server.start();
  browser = await launchBrowser();
  admin = await openPage(browser, server.url, DESKTOP);
  await signIn(admin, 'admin', ADMIN_PASSWORD);
  await createAccounts();
  // One that never signs in, with accents in its names to search without them.
  offline = { username: `${tag}zeph`, alias: `Zéphyrin ${tag}` };
  await viaSocket(admin, 'admin', [['create_account', {
    username: offline.username, alias: offline.alias, first_name: 'Zéphyrin', last_name: 'Lefèvre', password: PASSWORD,
  }]], { password: ADMIN_PASSWORD });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('Users: every account, searched as one types and paged; an offline account is kicked after a confirmation, then banned', async () => {
  await admin.getByRole('button', { name: /^Administration/ }).click();
  await adminTab(admin, 'Users');
  const list = admin.locator('#users-list');
  await until(admin, () => document.querySelectorAll('#users-list > li').length === 50);
  assert.match(await admin.locator('#users-count').textContent(), /^50 of \d{3} accounts$/);
  await admin.getByRole('button', { name: 'More' }).click();
  await until(admin, () => document.querySelectorAll('#users-list > li').length === 100);

  // Searching as one types (no button), accents ignored: the account never signed in.
  await admin.getByLabel(/^Search every account/).pressSequentially('zephyrin lefevre');
  const row = list.locator(`li[data-user="${offline.username}"]`);
  await row.waitFor();
  await until(admin, () => document.querySelectorAll('#users-list > li').length === 1);
  assert.equal(await admin.locator('#users-count').textContent(), '1 account');
  assert.equal(await admin.getByRole('button', { name: 'More' }).isVisible(), false);
  assert.equal(await row.getByRole('img', { name: 'offline' }).count(), 1);
  assert.match(await row.textContent(), /0 sessions/);

  // Kick asks first, with the duration and reason that will apply; Cancel does nothing.
  await row.getByLabel(/^Kick duration for/).selectOption('86400');
  await row.getByLabel(/^Reason for sanctioning/).fill('holiday cover');
  await row.getByRole('button', { name: 'Kick', exact: true }).click();
  const confirm = row.getByRole('group', { name: `Confirm the kick of ${offline.alias}` });
  assert.equal(await confirm.textContent().then((t) => t.startsWith(`Kick ${offline.alias} for 1 day, reason: “holiday cover”?`)), true);
  assert.equal(await admin.evaluate(() => document.activeElement.dataset.op), 'confirm-kick');
  await confirm.getByRole('button', { name: 'Cancel' }).click();
  await confirm.waitFor({ state: 'detached' });
  assert.equal(await row.locator('.admin-sanction').count(), 0);
  await row.getByRole('button', { name: 'Kick', exact: true }).click();
  await confirm.getByRole('button', { name: 'Confirm kick' }).click();
  await confirm.waitFor({ state: 'detached' });
  const kicked = row.locator('.admin-sanction[data-kind="kick"]');
  await kicked.waitFor();
  assert.match(await kicked.textContent(), /^Kicked until .+ · holiday cover · by admin$/);
  await row.getByRole('button', { name: `End the kick of ${offline.alias}` }).waitFor();
  // The Kicks and bans card lists it too.
  await adminTab(admin, 'Kicks and bans');
  await admin.locator(`#sanction-list li[data-user="${offline.username}"][data-kind="kick"]`).waitFor();
  // And signing in is refused.
  const page = await openPage(browser, server.url, DESKTOP);
  const form = page.locator('#signin-form');
  await form.getByLabel('Username or alias').fill(offline.username);
  await form.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await form.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#signin-error').filter({ hasText: /\S/ }).waitFor();
  await page.context().close();

  // Lifted from the row; then banned (asks for a second click), and unbanned.
  await adminTab(admin, 'Users');
  await row.getByRole('button', { name: `End the kick of ${offline.alias}` }).click();
  await kicked.waitFor({ state: 'detached' });
  await row.getByRole('button', { name: 'Ban…' }).click();
  await row.getByRole('button', { name: 'Confirm ban' }).click();
  await row.locator('.admin-sanction[data-kind="ban"]').waitFor();
  await screenshot(admin, 'admin-users');
  await row.getByRole('button', { name: `Unban ${offline.alias}` }).click();
  await row.locator('.admin-sanction').waitFor({ state: 'detached' });
  assert.deepEqual(admin.problems, []);
});

test('Connected users stays bounded, with a filter; each card starts in view once chosen, by mouse or keyboard', async () => {
  // More users connected at once than the card shows (kept open in the administrator's page).
  const [found] = await viaSocket(admin, 'admin', [['accounts', { query: 'bench user', limit: CONNECTED }]], { password: ADMIN_PASSWORD });
  const names = found.accounts.map((a) => a.username);
  assert.equal(names.length, CONNECTED);
  await Promise.all(names.map((u) => viaSocket(admin, u, [], { password: BENCH_PASSWORD, keep: true })));
  await adminTab(admin, 'Connected');
  await admin.locator('#conn-refresh').click();
  await until(admin, () => /showing 30 /.test(document.getElementById('conn-count').textContent));
  assert.match(await admin.locator('#conn-count').textContent(), /^\d+ connected; showing 30 of the \d+: filter to find the others\.$/);
  assert.equal(await admin.locator('#conn-list > li').count(), 30);
  // Each row has a status dot that says the status (item 13).
  assert.equal(await admin.locator('#conn-list > li .dot[role="img"][aria-label="online"]').count(), 30);
  const last = found.accounts[CONNECTED - 1];
  await admin.getByLabel('Filter connected users').fill(last.alias);
  await until(admin, () => document.querySelectorAll('#conn-list > li').length === 1);
  assert.equal(await admin.locator(`#conn-list li[data-user="${last.username}"]`).count(), 1);
  assert.match(await admin.locator('#conn-count').textContent(), /^\d+ connected, 1 matching\.$/);
  // One's own row: no actions, and nothing else in their place.
  await admin.getByLabel('Filter connected users').fill('administrator');
  await until(admin, () => document.querySelectorAll('#conn-list > li').length === 1);
  assert.doesNotMatch(await admin.locator('#conn-list li[data-user="admin"]').textContent(), /null|undefined/);
  await admin.getByLabel('Filter connected users').fill('');

  // Every card: its top in the viewport, chosen with the mouse.
  const cards = [['Join requests', 'req'], ['Accounts', 'acct'], ['Users', 'users'], ['Connected', 'conn'],
    ['Kicks and bans', 'sanctions'], ['Broadcast', 'bc'], ['Shutdown', 'sd']];
  for (const [name, id] of cards) {
    await adminTab(admin, name);
    const box = await admin.locator(`#admin-card-${id}`).boundingBox();
    assert.ok(box && box.y >= 0 && box.y + 40 < DESKTOP.height, `${name}: top at ${box?.y}`);
    assert.equal(await admin.getByRole('tabpanel').count(), 1);
  }
  // With the keyboard: Tab reaches the tabs, Enter chooses, arrows move.
  await admin.getByRole('tab', { name: /^Join requests/ }).focus();
  await admin.keyboard.press('Tab');
  await admin.keyboard.press('Enter');
  await admin.locator('#admin-card-acct:not([hidden])').waitFor();
  await admin.keyboard.press('ArrowRight');
  await admin.locator('#admin-card-users:not([hidden])').waitFor();
  assert.equal(await admin.evaluate(() => document.activeElement.id), 'admin-tab-users');
  await admin.evaluate(() => { for (const ws of window.keptSockets || []) ws.close(); window.keptSockets = []; });
});

test('a reject reason typed for a join request survives another request arriving', async () => {
  const one = await openPage(browser, server.url, DESKTOP);
  const A = await register(one, 'reqa');
  const two = await openPage(browser, server.url, DESKTOP);
  await register(two, 'reqb');
  await adminTab(admin, 'Join requests');
  await room(one, 'Informatique').getByRole('button', { name: 'Request to join Informatique' }).click();
  const row = admin.locator(`#req-list li[data-user="${A.username}"][data-room="Informatique"]`);
  const reason = row.getByLabel(/^Reason for/);
  await reason.fill('no laptop budget this year');
  // Another request arrives while the administrator is still in the field.
  await room(two, 'Marketing').getByRole('button', { name: 'Request to join Marketing' }).click();
  await admin.locator('#req-list li[data-room="Marketing"]').waitFor();
  assert.equal(await reason.inputValue(), 'no laptop budget this year');
  assert.equal(await admin.evaluate(() => document.activeElement.closest('li')?.dataset.room), 'Informatique');
  assert.match(await admin.getByRole('tab', { name: /^Join requests/ }).textContent(), /2/);
  await row.getByRole('button', { name: 'Reject' }).click();
  await one.locator('.toast', { hasText: 'no laptop budget this year' }).waitFor();
  await one.context().close();
  await two.context().close();
});

test('a kick typed in a Users row survives that user changing status', async () => {
  const user = await openPage(browser, server.url, DESKTOP);
  const U = await register(user, 'rowu');
  await adminTab(admin, 'Users');
  const search = admin.getByLabel(/^Search every account/);
  await search.fill(U.username);
  const row = admin.locator(`#users-list li[data-user="${U.username}"]`);
  await row.getByRole('img', { name: 'online' }).waitFor();
  await row.getByLabel(/^Kick duration for/).selectOption('3600');
  await row.getByLabel(/^Reason for sanctioning/).fill('typed before the status change');
  await user.getByLabel('Your status').selectOption('busy');
  await row.getByRole('img', { name: 'busy' }).waitFor();
  assert.equal(await row.getByLabel(/^Reason for sanctioning/).inputValue(), 'typed before the status change');
  assert.equal(await row.getByLabel(/^Kick duration for/).inputValue(), '3600');
  assert.equal(await admin.evaluate(() => document.activeElement.dataset.field), 'reason');
  await user.context().close();
});

test('the identity in the top bar is readable: the alias, an admin badge, the whole in the title', async () => {
  const me = admin.locator('#me');
  const name = me.locator('.me-name');
  assert.equal(await name.textContent(), 'Administrator');
  assert.ok(await name.evaluate((el) => el.scrollWidth <= el.clientWidth), 'the alias is not cut');
  assert.equal(await me.locator('.admin-tag').textContent(), 'admin');
  assert.match(await me.getAttribute('title'), /^Administrator \(admin\) · .+ · administrator$/);
});

test('on a phone the top bar fits on one line and Sign out works; the panel cards start in view', async () => {
  const page = await openPage(browser, server.url, PHONE);
  await signIn(page, 'admin', ADMIN_PASSWORD);
  const bar = page.locator('#app > .topbar');
  const overflow = await bar.evaluate((el) => [...el.children]
    .filter((c) => c.getBoundingClientRect().width > 0 && c.getBoundingClientRect().right > window.innerWidth)
    .map((c) => c.id || c.className));
  assert.deepEqual(overflow, []);
  const out = page.getByRole('button', { name: 'Sign out' });
  const box = await out.boundingBox();
  const barBox = await bar.boundingBox();
  assert.ok(box.x >= 0 && box.x + box.width <= PHONE.width, `Sign out at ${box.x}..${box.x + box.width}`);
  assert.ok(barBox.height < 56, `one line: the bar is ${barBox.height} px tall`);
  await screenshot(page, 'phone-admin-topbar');

  await page.getByRole('button', { name: /^Admin\b/ }).click(); // "Admin" on a phone
  for (const [name, id] of [['Users', 'users'], ['Shutdown', 'sd']]) {
    await adminTab(page, name);
    const card = await page.locator(`#admin-card-${id}`).boundingBox();
    assert.ok(card.y >= 0 && card.y + 40 < PHONE.height, `${name}: top at ${card.y}`);
  }
  await out.click();
  await page.locator('body[data-screen="auth"]').waitFor();
  await page.context().close();
});
