// Long histories and big lists (issue 15): the page never scrolls away from the app
// (item 1), tabbing to the message box keeps the newest message in view and the first
// Tab after sign-in reaches the skip link (item 6), and scrolling back, new messages and
// presence changes touch only the nodes they change (item 8).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ADMIN_PASSWORD, PASSWORD, Server, launchBrowser, openPage, openRoom, register, room, until,
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

test('paging back, new messages, edits, room switches and presence touch only what they change (item 8)', async () => {
  const page = await openPage(browser, server.url, { width: 1366, height: 768 });
  const me = await register(page, 'pager');
  await openRoom(page, 'Général');
  await page.locator('#message-list .msg-text', { hasText: `message ${TOTAL}` }).waitFor();
  const count = () => page.locator('#message-list li.msg').count();
  const before = await count();
  assert.ok(before < TOTAL, 'the first page only');
  // References to the nodes shown now, and the anchor of the reading position.
  await page.evaluate(() => {
    window.kept = [...document.querySelectorAll('#message-list > li.msg')];
    window.keptList = document.getElementById('message-list');
  });
  const anchor = async () => page.evaluate(() => {
    const box = document.getElementById('messages');
    const li = window.kept[window.kept.length - 1];
    return li.getBoundingClientRect().top - box.getBoundingClientRect().top;
  });
  const top0 = await anchor();
  await page.locator('#load-older').evaluate((b) => b.click());
  await until(page, (n) => document.querySelectorAll('#message-list li.msg').length > n, before);
  assert.ok(await page.evaluate(() => window.kept.every((li) => li.isConnected)), 'the nodes shown before are kept');
  const top1 = await anchor();
  assert.ok(Math.abs(top1 - top0) < 2, `the messages in view stay where they were (${top0} → ${top1})`);
  // Everything, page after page: the same authors' run stays one group, one day separator.
  await page.locator('#load-older').evaluate((b) => b.click());
  for (let i = 0; i < 5 && !(await page.locator('#history-start').isVisible()); i += 1) {
    await page.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
    await page.waitForTimeout(200);
  }
  await until(page, (n) => document.querySelectorAll('#message-list li.msg').length === n, TOTAL);
  const shape = await page.evaluate(() => ({
    days: document.querySelectorAll('#message-list > li.day-sep').length,
    firsts: document.querySelectorAll('#message-list > li.msg.first').length,
    ids: [...document.querySelectorAll('#message-list > li.msg')].map((li) => Number(li.dataset.id)),
    kept: window.kept.every((li) => li.isConnected),
  }));
  assert.equal(shape.days, 1);
  assert.equal(shape.firsts, 1, 'one author in a row: one header');
  assert.deepEqual(shape.ids, [...shape.ids].sort((a, b) => a - b));
  assert.equal(new Set(shape.ids).size, TOTAL);
  assert.ok(shape.kept);

  // A new message and an edit: only their nodes.
  const sent = await admin.request('send', { room: 'Général', text: 'one more' });
  await page.locator('#message-list .msg-text', { hasText: 'one more' }).waitFor();
  await admin.request('edit', { id: sent.id, text: 'one more, edited' });
  await page.locator('#message-list .msg-text', { hasText: 'one more, edited' }).waitFor();
  assert.ok(await page.evaluate(() => window.kept.every((li) => li.isConnected)));

  // Away and back: the same list, not drawn again.
  await page.locator('#room-list li[data-room="Blabla"]').getByRole('button', { name: 'Join Blabla' }).click();
  await page.locator('#room-list li[data-room="Blabla"][data-state="member"]').waitFor();
  await openRoom(page, 'Blabla');
  assert.equal(await page.locator('#message-list li.msg[data-id]').count(), 0);
  await openRoom(page, 'Général');
  await page.locator('#message-list .msg-text', { hasText: 'one more, edited' }).waitFor();
  assert.ok(await page.evaluate(() => document.getElementById('message-list') === window.keptList
    && window.kept.every((li) => li.isConnected)), 'the room switch kept every node');
  assert.ok(await lastMsgInView(page));

  // Presence: the row of the user who signs in changes, the other rows stay.
  const other = await ProtoClient.connect(server.tcpPort);
  await registerOn(other, 'presencex', PASSWORD);
  other.close();
  await page.locator('#people-list li[data-user="presencex"]').waitFor({ state: 'attached' }).catch(() => {});
  await page.evaluate(() => { window.rows = [...document.querySelectorAll('#people-list > li')]; });
  const conn = await loggedIn(server.tcpPort, 'presencex', PASSWORD);
  await page.locator('#people-list li[data-user="presencex"][data-status="online"]').waitFor();
  const rows = await page.evaluate(() => window.rows.filter((li) => li.dataset.user !== 'presencex')
    .map((li) => li.isConnected));
  assert.ok(rows.length >= 2);
  assert.ok(rows.every(Boolean), 'the other rows are the same nodes');
  conn.close();
  assert.equal(me.username.startsWith('pager'), true);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('a room left with more than 200 messages loaded keeps its newest 200, undrawn, and pages back again (item 8)', async () => {
  const LONG = 260;
  await admin.request('join', { room: 'Blabla' });
  for (let i = 1; i <= LONG; i += 1) await admin.request('send', { room: 'Blabla', text: `blabla ${i}` });
  const page = await openPage(browser, server.url, { width: 1366, height: 768 });
  await register(page, 'trim');
  await room(page, 'Blabla').getByRole('button', { name: 'Join Blabla' }).click();
  await openRoom(page, 'Blabla');
  await page.locator('#message-list .msg-text', { hasText: `blabla ${LONG}` }).waitFor();
  const pageBack = async () => {
    for (let i = 0; i < 20 && !(await page.locator('#history-start').isVisible()); i += 1) {
      await page.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
      await page.waitForTimeout(150);
    }
    await page.locator('#history-start').waitFor();
  };
  await pageBack();
  // Only this test's messages (an earlier test may have written in Blabla too).
  const count = () => page.evaluate(() => [...document.querySelectorAll('#message-list .msg-text')]
    .filter((t) => /^blabla \d+$/.test(t.textContent)).length);
  assert.equal(await count(), LONG);
  await page.evaluate(() => { window.newest = [...document.querySelectorAll('#message-list > li.msg')].pop(); });

  await openRoom(page, 'Général');
  await openRoom(page, 'Blabla');
  await page.locator('#message-list .msg-text', { hasText: `blabla ${LONG}` }).waitFor();
  const back = await page.evaluate(() => {
    const msgs = [...document.querySelectorAll('#message-list > li.msg')]
      .filter((li) => /^blabla \d+$/.test(li.querySelector('.msg-text')?.textContent));
    return {
      count: msgs.length,
      first: msgs[0].querySelector('.msg-text').textContent,
      firstHeaded: msgs[0].classList.contains('first'),
      sameNewest: msgs[msgs.length - 1] === window.newest,
      days: document.querySelectorAll('#message-list > li.day-sep').length,
    };
  });
  assert.deepEqual(back, {
    count: 200, first: `blabla ${LONG - 199}`, firstHeaded: true, sameNewest: true, days: 1,
  });
  // The older ones come back by paging, once each.
  await pageBack();
  assert.equal(await count(), LONG);
  const texts = await page.evaluate(() => [...document.querySelectorAll('#message-list .msg-text')]
    .map((t) => t.textContent).filter((t) => /^blabla \d+$/.test(t)));
  assert.deepEqual(texts, Array.from({ length: LONG }, (_, i) => `blabla ${i + 1}`));
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
