// Network drops: the page reconnects by itself and resumes the session without the
// password; logout revokes; the shutdown countdown is shown. Uses its own server, which
// it kills and restarts on the same port and data.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ADMIN_PASSWORD, launchBrowser, messages, openPage, openRoom, register, send, Server, signIn,
} from './helpers.mjs';

let server;
let browser;

before(async () => {
  server = await Server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('after the server goes away and comes back, the page resumes without the password', async () => {
  const page = await openPage(browser, server.url);
  const U = await register(page, 'remy');
  await openRoom(page, 'Général');
  await send(page, 'avant la coupure');
  await page.locator('#message-list .msg-text', { hasText: 'avant la coupure' }).waitFor();

  await server.kill();
  await page.locator('#conn-banner', { hasText: 'Connection lost' }).waitFor();
  await page.locator('body[data-conn="closed"], body[data-conn="connecting"]').waitFor();
  // The chat stays on screen while it waits; a message written now waits, shown as
  // not sent yet.
  assert.equal(await page.locator('body').getAttribute('data-screen'), 'app');
  await send(page, 'pendant la coupure');
  await page.locator('#pending-list .msg.pending', { hasText: 'pendant la coupure' }).waitFor();
  await page.locator('#pending-list .msg-pending', { hasText: 'Not sent yet' }).waitFor();
  assert.equal(await page.getByLabel('Message', { exact: true }).inputValue(), '');

  await server.restart();
  await page.locator('body[data-conn="open"]').waitFor({ timeout: 30000 });
  await page.locator('#conn-banner').waitFor({ state: 'hidden' });
  assert.equal(await page.locator('body').getAttribute('data-screen'), 'app');
  await page.locator('#me', { hasText: U.username }).waitFor();
  // The session works: the waiting message is sent by itself, once, and history is
  // still there.
  await page.locator('#message-list .msg-text', { hasText: 'pendant la coupure' }).waitFor();
  await page.locator('#pending-list .msg').waitFor({ state: 'detached' });
  const texts = (await messages(page)).map((m) => m.text);
  assert.deepEqual(texts.slice(-2), ['avant la coupure', 'pendant la coupure']);

  // A reload also resumes (the token is kept for the tab); the message is stored once.
  await page.reload();
  await page.locator('body[data-screen="app"]').waitFor();
  await page.locator('#me', { hasText: U.username }).waitFor();
  await openRoom(page, 'Général');
  await page.locator('#message-list .msg-text', { hasText: 'pendant la coupure' }).waitFor();
  const stored = (await messages(page)).filter((m) => m.text === 'pendant la coupure');
  assert.equal(stored.length, 1);
  assert.deepEqual(page.problems.filter((p) => !/WebSocket|ERR_CONNECTION_REFUSED/.test(p)), []);
  await page.context().close();
});

test('signing out revokes the session: a reload asks for the password', async () => {
  const page = await openPage(browser, server.url);
  const U = await register(page, 'sid');
  const token = await page.evaluate(() => sessionStorage.getItem('salon.token'));
  assert.match(token, /^[0-9a-f]{64}$/);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('body[data-screen="auth"]').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('salon.token')), null);

  // Put the old token back as if it had been stolen: the server refuses it. (In a page
  // of its own: the signed-out page reconnects by itself, and could try the token back
  // in its storage before the reload, which would drop it.)
  await page.context().close();
  const thief = await openPage(browser, server.url);
  await thief.evaluate((t) => sessionStorage.setItem('salon.token', t), token);
  await thief.reload();
  await thief.locator('body[data-screen="auth"]').waitFor();
  await thief.locator('#auth-notice', { hasText: 'sign in again' }).waitFor();
  assert.equal(await thief.evaluate(() => sessionStorage.getItem('salon.token')), null);
  await signIn(thief, U.username);
  await thief.context().close();
});

test('the shutdown countdown is shown, then the page waits for the server', async () => {
  const user = await openPage(browser, server.url);
  await register(user, 'ugo');
  const admin = await openPage(browser, server.url);
  await signIn(admin, 'admin', ADMIN_PASSWORD);
  await admin.getByRole('button', { name: /^Administration/ }).click();
  await admin.getByRole('tab', { name: /^Shutdown/ }).click();
  await admin.getByLabel('Countdown (seconds)').fill('3');
  await admin.getByLabel('Message to users').fill('mise à jour');
  await admin.getByRole('button', { name: 'Shut down…' }).click();
  await admin.getByRole('button', { name: 'Click again to shut down' }).click();
  const banner = user.locator('#shutdown-banner');
  await banner.filter({ hasText: /stops in \d s: mise à jour/ }).waitFor();
  const { code } = await server.exited;
  assert.equal(code, 0);
  // One banner, with the administrator's message (issue 15, item 11).
  await user.locator('#conn-banner', { hasText: /stopped: Mise à jour\. Reconnecting/ }).waitFor();
  await banner.waitFor({ state: 'hidden' });
  await server.restart();
  await user.locator('body[data-conn="open"]').waitFor({ timeout: 30000 });
  await banner.waitFor({ state: 'hidden' });
  assert.equal(await user.locator('body').getAttribute('data-screen'), 'app');
});
