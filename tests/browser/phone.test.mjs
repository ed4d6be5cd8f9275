// A phone-sized window: one pane at a time, nothing wider than the screen, keyboard and
// labels still work.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ADMIN_PASSWORD, launchBrowser, openPage, PHONE, register, screenshot, send, signIn, testServer,
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

const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);

test('the client is usable in a phone-sized window', async () => {
  const page = await openPage(browser, server.url, PHONE);
  assert.ok(await overflow(page) <= 0, 'sign-in fits the width');
  await screenshot(page, 'phone-sign-in');
  const U = await register(page, 'pia');

  // The chat is the main pane; rooms and people are one tap away.
  const chat = page.locator('#chat');
  await chat.waitFor();
  assert.equal(await page.locator('#sidebar').isVisible(), false);
  assert.equal(await page.locator('#people').isVisible(), false);
  await send(page, 'Écrit depuis mon téléphone');
  await page.locator('#message-list .msg-text', { hasText: 'téléphone' }).waitFor();
  assert.ok(await overflow(page) <= 0, 'chat fits the width');
  await screenshot(page, 'phone-chat');

  await page.getByRole('button', { name: 'Rooms and conversations' }).click();
  await page.locator('#sidebar').waitFor();
  assert.equal(await chat.isVisible(), false);
  assert.equal(await page.getByRole('button', { name: 'Rooms and conversations' }).getAttribute('aria-expanded'), 'true');
  await screenshot(page, 'phone-rooms');
  await page.locator('#room-list li[data-room="Blabla"]').getByRole('button', { name: 'Join Blabla' }).click();
  // Joining opens the room in the main pane.
  await page.locator('#chat-title', { hasText: 'Blabla' }).waitFor();
  assert.equal(await page.locator('#sidebar').isVisible(), false);

  await page.getByRole('button', { name: 'People' }).click();
  await page.locator(`#people-list li[data-user="${U.username}"]`).waitFor();
  assert.ok(await overflow(page) <= 0, 'people fit the width');
  await screenshot(page, 'phone-people');
  await page.keyboard.press('Escape');
  await chat.waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('on a phone, private messages waiting at sign-in show on the ☰ button', async () => {
  const sender = await openPage(browser, server.url);
  const S = await register(sender, 'sam');
  const page = await openPage(browser, server.url, PHONE);
  const R = await register(page, 'rita');
  assert.equal(await page.locator('#nav-toggle').getAttribute('data-unread'), null);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('body[data-screen="auth"]').waitFor();

  const rita = sender.locator(`#people-list li[data-user="${R.username}"][data-status="offline"]`);
  await rita.waitFor();
  await rita.locator('button').first().click();
  for (const text of ['un', 'deux', 'trois']) await send(sender, text);
  await sender.locator('#message-list .msg-text', { hasText: 'trois' }).waitFor();

  await signIn(page, R.username);
  const toggle = page.locator('#nav-toggle[data-unread="3"]');
  await toggle.waitFor();
  assert.match(await toggle.getAttribute('aria-label'), /3 unread/);
  await toggle.click();
  await page.locator(`#dm-list li[data-user="${S.username}"] .badge[data-unread="3"]`).waitFor();
  await screenshot(page, 'phone-unread-badge');
  await page.context().close();
  await sender.context().close();
});

test('the administration panel fits a phone-sized window', async () => {
  const page = await openPage(browser, server.url, PHONE);
  await signIn(page, 'admin', ADMIN_PASSWORD);
  await page.getByRole('button', { name: /^Admin\b/ }).click(); // "Admin" on a phone
  // One card at a time, chosen in the panel's tab bar.
  assert.ok(await overflow(page) <= 0, 'admin panel fits the width');
  await page.getByRole('tab', { name: 'Connected' }).click();
  await page.locator('#conn-list li[data-user="admin"]').waitFor();
  assert.ok(await overflow(page) <= 0, 'admin panel fits the width');
  await screenshot(page, 'phone-admin');
  await page.context().close();
});
