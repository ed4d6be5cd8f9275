// Long histories and big lists (issue 15): the page never scrolls away from the app
// (item 1), tabbing to the message box keeps the newest message in view and the first
// Tab after sign-in reaches the skip link (item 6), and scrolling back, new messages and
// presence changes touch only the nodes they change (item 8).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ADMIN_PASSWORD, PASSWORD, Server, launchBrowser, openPage, openRoom, register, until,
} from './helpers.mjs';
import { ProtoClient, loggedIn, registerOn } from './proto.mjs';

let server;
let browser;
let admin; // a protocol connection of `admin`
const TOTAL = 130; // messages in Général: three pages

before(async () => {
  server = await Server.start();
  browser = await launchBrowser();
  admin = await loggedIn(server.tcpPort, 'admin', ADMIN_PASSWORD);
  // One author posting in a row: grouped messages (hidden headers).
  for (let i = 1; i <= TOTAL; i += 1) await admin.request('send', { room: 'Général', text: `message ${i}` });
});

after(async () => {
  admin?.close();
  await browser?.close();
  await server?.stop();
});

const lastMsgInView = (page) => page.evaluate(() => {
  const box = document.getElementById('messages').getBoundingClientRect();
  const msgs = document.querySelectorAll('#message-list li.msg');
  const last = msgs[msgs.length - 1].getBoundingClientRect();
  return last.bottom > box.top && last.top < box.bottom;
});

test('turning the wheel at the bottom of a list of grouped messages never scrolls the page (item 1)', async () => {
  const page = await openPage(browser, server.url, { width: 1366, height: 768 });
  await register(page, 'wheel');
  await openRoom(page, 'Général');
  await page.locator('#message-list .msg-text', { hasText: `message ${TOTAL}` }).waitFor();
  const box = await page.locator('#messages').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.locator('#messages').evaluate((el) => { el.scrollTop = el.scrollHeight; });
  for (let i = 0; i < 6; i += 1) await page.mouse.wheel(0, 500);
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const m = await page.evaluate(() => ({
    top: document.scrollingElement.scrollTop,
    height: document.scrollingElement.scrollHeight,
    viewport: window.innerHeight,
  }));
  assert.equal(m.top, 0);
  assert.equal(m.height, m.viewport);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('the first Tab after sign-in reaches the skip link; tabbing to the message box keeps the newest message in view (item 6)', async () => {
  const p = await openPage(browser, server.url, { width: 1366, height: 768 });
  const who = await register(p, 'tabber');
  await p.getByRole('button', { name: /sign out/i }).click();
  await p.locator('body[data-screen="auth"]').waitFor();
  const form = p.locator('#signin-form');
  await form.getByLabel('Username or alias').fill(who.username);
  await form.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await form.getByLabel('Password', { exact: true }).press('Enter');
  await p.locator('body[data-screen="app"]').waitFor();
  await p.locator('#message-list .msg-text', { hasText: `message ${TOTAL}` }).waitFor();
  await p.keyboard.press('Tab');
  assert.equal(await p.evaluate(() => document.activeElement.textContent), 'Skip to message box');

  // Tab on (not through the skip link) until the message box.
  const shownBefore = await p.locator('#message-list li.msg').count();
  let reached = false;
  for (let i = 0; i < 500 && !reached; i += 1) {
    await p.keyboard.press('Tab');
    reached = await p.evaluate(() => document.activeElement && document.activeElement.id === 'composer-input');
  }
  assert.ok(reached, 'Tab reaches the message box');
  await p.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  assert.ok(await lastMsgInView(p), 'the newest message is in view');
  assert.equal(await p.locator('#message-list li.msg').count(), shownBefore, 'focusing "Load earlier messages" loads nothing');
  assert.deepEqual(p.problems, []);
  await p.context().close();
});
