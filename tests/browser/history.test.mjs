// Long histories and big lists (issue 15): the page never scrolls away from the app
// (item 1), tabbing to the message box keeps the newest message in view and the first
// Tab after sign-in reaches the skip link (item 6), and scrolling back, new messages and
// presence changes touch only the nodes they change (item 8).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ADMIN_PASSWORD, PASSWORD, Server, launchBrowser, openPage, openRoom, register, room, signIn, uniqueName, until,
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
  await page.evaluate(() => new Promise((r) => { let n = 0; const f = () => (++n < 4 ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }));
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

test('older pages are drawn with their Markdown, links and repeated texts intact (formatted ahead of the draw, item 8)', async () => {
  // Three pages in a room of its own: Markdown in each message, a link, and one text
  // repeated in every page (each copy must get its own nodes).
  // Sent while the reader is away, so that the pages come from the server, not live.
  const me = uniqueName('formats');
  const conn = await ProtoClient.connect(server.tcpPort);
  await registerOn(conn, me.username, PASSWORD);
  conn.close();
  const ROOM = `Formats ${me.username}`;
  await admin.request('create_channel', { name: ROOM, members: [me.username] });
  const N = 120;
  for (let i = 1; i <= N; i += 1) {
    const text = i % 10 === 0 ? 'same **text**' : `m${i} **bold ${i}** _it_ https://example.com/${i}`;
    await admin.request('send', { room: ROOM, text });
  }
  const page = await openPage(browser, server.url, { width: 1366, height: 768 });
  await signIn(page, me.username, PASSWORD);
  await openRoom(page, ROOM);
  await page.locator('#message-list .msg-text', { hasText: `m${N - 1} bold` }).waitFor();
  for (let i = 0; i < 20 && !(await page.locator('#history-start').isVisible()); i += 1) {
    await page.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
    await page.waitForTimeout(150);
  }
  await page.locator('#history-start').waitFor();
  const drawn = await page.evaluate(() => [...document.querySelectorAll('#message-list .msg-text')].map((t) => ({
    text: t.textContent,
    strong: [...t.querySelectorAll('strong')].map((s) => s.textContent).join('|'),
    em: t.querySelectorAll('em').length,
    link: t.querySelector('a') ? [t.querySelector('a').getAttribute('href'), t.querySelector('a').target, t.querySelector('a').rel] : null,
  })));
  assert.equal(drawn.length, N);
  drawn.forEach((d, k) => {
    const i = k + 1;
    if (i % 10 === 0) {
      assert.deepEqual(d, { text: 'same text', strong: 'text', em: 0, link: null }, `message ${i}`);
    } else {
      assert.deepEqual(d, {
        text: `m${i} bold ${i} it https://example.com/${i}`,
        strong: `bold ${i}`,
        em: 1,
        link: [`https://example.com/${i}`, '_blank', 'noopener noreferrer'],
      }, `message ${i}`);
    }
  });
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

/** One step through a long history (in the page): scrolls to the top of the list ('up')
 *  or near its bottom ('down'), waits until the messages drawn change, and tells what is
 *  drawn and where the message that was at the top of the view is now. */
const step = (page, dir) => page.evaluate(async (where) => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const box = document.getElementById('messages');
  const drawn = () => [...document.querySelectorAll('#message-list > li.msg[data-id]')];
  const ends = () => drawn().map((li) => li.dataset.id).filter((_, i, a) => i === 0 || i === a.length - 1).join('-');
  const topOf = (li) => li.getBoundingClientRect().top - box.getBoundingClientRect().top;
  const was = ends();
  box.scrollTop = where === 'up' ? 0 : box.scrollHeight - box.clientHeight - 100;
  // The message at the top of the view now (the reading position), before anything is drawn.
  const top = drawn().find((li) => li.getBoundingClientRect().bottom > box.getBoundingClientRect().top);
  const anchor = { id: top.dataset.id, top: topOf(top) };
  const deadline = performance.now() + 10000;
  while (ends() === was && performance.now() < deadline) await frame();
  // A few frames more: whatever is laid out only once near the view (sizes settling
  // after the draw) must not move the reading position either.
  for (let i = 0; i < 3; i += 1) await frame();
  const li = document.querySelector(`#message-list > li.msg[data-id="${anchor.id}"]`);
  return {
    moved: ends() !== was,
    shift: li ? Math.abs(topOf(li) - anchor.top) : null,
    texts: drawn().map((m) => m.querySelector('.msg-text').textContent),
    items: document.querySelectorAll('#message-list > li').length,
    start: !document.getElementById('history-start').hidden,
    jump: !document.getElementById('jump-latest').hidden,
  };
}, dir);

test('paging back through a long room keeps at most 300 messages drawn and the reading position; scrolling forward draws them again (item 8)', async () => {
  const LONG = 620; // more than twice the window
  const reader = await ProtoClient.connect(server.tcpPort);
  await registerOn(reader, 'windowreader', PASSWORD);
  reader.close();
  await admin.request('create_channel', { name: 'Fenetre', members: ['windowreader'] });
  for (let i = 1; i <= LONG; i += 100) {
    const batch = [];
    for (let k = i; k < i + 100 && k <= LONG; k += 1) batch.push(admin.request('send', { room: 'Fenetre', text: `w ${k}` }));
    await Promise.all(batch); // sent in order: each request waits for the one before
  }
  // All read: the room opens at its newest message (not at a "new messages" line).
  const conn = await loggedIn(server.tcpPort, 'windowreader', PASSWORD);
  const latest = await conn.request('history', { room: 'Fenetre', limit: 1 });
  await conn.request('mark_read', { room: 'Fenetre', id: latest.messages[0].id });
  conn.close();
  const page = await openPage(browser, server.url, { width: 1366, height: 768 });
  await signIn(page, 'windowreader');
  await openRoom(page, 'Fenetre');
  await page.locator('#message-list .msg-text', { hasText: `w ${LONG}` }).waitFor();
  const numbers = (texts) => texts.map((t) => Number(t.slice(2)));
  const consecutive = (texts) => numbers(texts).every((n, i, a) => i === 0 || n === a[i - 1] + 1);
  const check = (r, what) => {
    assert.ok(r.moved, `${what}: messages were drawn`);
    assert.ok(r.texts.length <= 300, `${what}: ${r.texts.length} messages drawn (at most 300)`);
    assert.ok(r.items < 340, `${what}: ${r.items} list items`);
    assert.ok(consecutive(r.texts), `${what}: the messages drawn follow each other`);
    assert.ok(r.shift !== null && r.shift < 2, `${what}: the message read stays where it was (moved ${r.shift} px)`);
  };

  // Back to the beginning, page after page.
  let r;
  let pages = 0;
  do {
    r = await step(page, 'up');
    pages += 1;
    check(r, `page ${pages} back`);
  } while (!r.start && pages < 30);
  assert.ok(r.start, 'the beginning is reached');
  assert.equal(r.texts[0], 'w 1');
  assert.ok(r.jump, '"Jump to the latest" is offered: the newest messages are not drawn');
  assert.ok(pages >= 12, `every page was fetched (${pages})`);

  // Forward again to the newest message, drawn from what was loaded.
  let steps = 0;
  do {
    r = await step(page, 'down');
    steps += 1;
    check(r, `step ${steps} forward`);
  } while (r.texts[r.texts.length - 1] !== `w ${LONG}` && steps < 30);
  assert.deepEqual(numbers(r.texts).slice(-3), [LONG - 2, LONG - 1, LONG]);
  assert.equal(await page.locator('#jump-latest').isVisible(), false);

  // At the end, a new message is appended (the oldest drawn goes).
  await admin.request('send', { room: 'Fenetre', text: `w ${LONG + 1}` });
  await page.locator('#message-list .msg-text', { hasText: `w ${LONG + 1}` }).waitFor();
  const texts = await page.locator('#message-list > li.msg[data-id] .msg-text').allTextContents();
  assert.ok(texts.length <= 300 && consecutive(texts), `${texts.length} drawn, in order`);

  // One step back draws older ones and leaves the end: "Jump to the latest" comes back to it.
  r = await step(page, 'up');
  check(r, 'a step back from the end');
  assert.ok(r.jump && !r.texts.includes(`w ${LONG + 1}`));
  assert.equal(await page.locator('#jump-latest-text').textContent(), 'You are viewing older messages.');
  // Messages arriving meanwhile are counted on the bar, not drawn.
  await admin.request('send', { room: 'Fenetre', text: `w ${LONG + 2}` });
  await admin.request('send', { room: 'Fenetre', text: `w ${LONG + 3}` });
  await until(page, () => document.getElementById('jump-latest-text').textContent === '2 new messages below.');
  assert.equal(await page.locator('#message-list .msg-text', { hasText: `w ${LONG + 3}` }).count(), 0);
  await page.getByRole('button', { name: 'Jump to the latest' }).click();
  await page.locator('#message-list .msg-text', { hasText: `w ${LONG + 3}` }).waitFor();
  assert.ok(await lastMsgInView(page), 'the newest message is in view');
  assert.equal(await page.locator('#jump-latest').isVisible(), false);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
