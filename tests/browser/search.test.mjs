// Full-text search through the page (issue 14): accent-free queries with the matched words
// in <mark>, only what the user may read, the filters (this conversation, author, order),
// "More results", errors, keyboard use, opening a result far back in a long room with
// context on both sides, scrolling down to the live end, and the phone layout.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  PASSWORD, launchBrowser, openPage, openRoom, register, screenshot, signIn, testServer, until, viaSocket,
} from './helpers.mjs';

let server;
let browser;
let alice;
let bob;
let A;
let B;
let C;
// Words of this run only: the server may be shared with other test files and runs.
const tag = `zq${Date.now().toString(36)}`;

before(async () => {
  server = await testServer();
  browser = await launchBrowser();
  alice = await openPage(browser, server.url);
  A = await register(alice, 'alice');
  bob = await openPage(browser, server.url);
  B = await register(bob, 'bob');
  const carol = await openPage(browser, server.url);
  C = await register(carol, 'carol');
  // Carol's private channel: nobody else may find what is said there.
  await viaSocket(carol, C.username, [
    ['create_channel', { name: `secret-${tag}`, members: [] }],
    ['send', { room: `secret-${tag}`, text: `Réunion secrète ${tag}` }],
  ]);
  await carol.context().close();
  await viaSocket(alice, A.username, [
    ['send', { room: 'Général', text: `${tag} pomme pomme pomme pomme` }],
    ['send', { room: 'Général', text: `Réunion du comité ${tag} demain à 14h30` }],
    ['direct', { to: B.username, text: `Réunion ${tag} en privé, rien que nous deux` }],
    ['send', { room: 'Général', text: `${tag} pomme et bien d'autres mots qui diluent la pertinence de ce message` }],
    ...Array.from({ length: 25 }, (_, i) => ['send', { room: 'Général', text: `lot ${tag} numéro ${i}` }]),
  ]);
  await viaSocket(bob, B.username, [['send', { room: 'Général', text: `Réunion ${tag} : Bob y sera` }]]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const hits = (page) => page.locator('#search-results .search-hit');
const panel = (page) => page.locator('#search-panel');

/** Rows as {place, author, snippet, marks}. */
function rows(page) {
  return hits(page).evaluateAll((buttons) => buttons.map((b) => ({
    place: b.querySelector('.search-place').textContent,
    author: b.querySelector('.search-author').textContent,
    snippet: b.querySelector('.search-snippet').textContent,
    marks: [...b.querySelectorAll('mark')].map((m) => m.textContent),
  })));
}

/** Types a query in the open panel and waits until the results shown are for it. */
async function searchFor(page, text, count) {
  await page.getByLabel('Search messages').fill(text);
  await until(page, (n) => !document.querySelector('#search-results[aria-busy]')
    && document.querySelectorAll('#search-results .search-hit').length === n
    && (n > 0 || !document.querySelector('#search-empty').hidden || document.querySelector('#search-status.error')), count);
  await page.waitForTimeout(400); // nothing stale lands afterwards
  assert.equal(await hits(page).count(), count);
}

test('an accent-free query finds the message, highlighted, and only where the user may read', async () => {
  await bob.getByRole('button', { name: 'Search', exact: true }).click();
  await panel(bob).waitFor();
  assert.equal(await bob.evaluate(() => document.activeElement.id), 'search-input');
  await searchFor(bob, `reunion ${tag}`, 3);
  const found = await rows(bob);
  // Newest first: Bob's own, the private message, the room's.
  assert.deepEqual(found.map((r) => r.place), ['#Général', `Private with ${A.alias}`, '#Général']);
  assert.deepEqual(found.map((r) => r.author), [B.alias, A.alias, A.alias]);
  const comite = found.find((r) => r.snippet.includes('comité'));
  assert.ok(comite.marks.includes('Réunion'), JSON.stringify(comite));
  assert.ok(comite.marks.includes(tag));
  assert.ok(!found.some((r) => r.snippet.includes('secrète')), 'Carol’s private channel stays hers');
  // The snippet is text: the marks are the only elements in it.
  assert.equal(await bob.locator('#search-results .search-snippet *:not(mark)').count(), 0);
  await screenshot(bob, 'search-results');

  // Nothing found: a clear empty state. An unknown author: the server's message.
  await searchFor(bob, `secrete ${tag}`, 0);
  assert.equal(await bob.locator('#search-empty').isVisible(), true);
  await bob.getByLabel('Author', { exact: true }).fill('nobody-by-that-name');
  await searchFor(bob, `reunion ${tag}`, 0);
  await bob.locator('#search-status.error').waitFor();
  assert.notEqual((await bob.locator('#search-status').textContent()).trim(), '');
  await bob.getByLabel('Author', { exact: true }).fill('');
  await searchFor(bob, `reunion ${tag}`, 3);
  assert.deepEqual(bob.problems, []);
});

test('filters: this conversation, author, dates, relevance; "More results" pages', async () => {
  // "This conversation" is the one open when the panel opened.
  await bob.keyboard.press('Escape');
  await panel(bob).waitFor({ state: 'hidden' });
  await openRoom(bob, 'Général');
  await bob.keyboard.press('Control+k');
  await panel(bob).waitFor();
  await bob.getByLabel('In', { exact: true }).selectOption('here');
  await searchFor(bob, `reunion ${tag}`, 2);
  assert.deepEqual((await rows(bob)).map((r) => r.place), ['#Général', '#Général']);
  await bob.getByLabel('Author', { exact: true }).fill(A.username);
  await searchFor(bob, `reunion ${tag}`, 1);
  assert.deepEqual((await rows(bob)).map((r) => r.author), [A.alias]);
  await bob.getByLabel('Author', { exact: true }).fill('');
  await bob.getByLabel('In', { exact: true }).selectOption('all');

  // Dates: whole days of the browser's time zone.
  const [today, yesterday] = await bob.evaluate(() => [0, -1].map((d) => {
    const t = new Date();
    t.setDate(t.getDate() + d);
    return `${t.getFullYear()}-${String(t.getMonth() + 1).padStart(2, '0')}-${String(t.getDate()).padStart(2, '0')}`;
  }));
  await bob.getByLabel('Sent on or before').fill(yesterday);
  await searchFor(bob, `reunion ${tag}`, 0);
  await bob.getByLabel('Sent on or before').fill(today);
  await bob.getByLabel('Sent on or after').fill(today);
  await searchFor(bob, `reunion ${tag}`, 3);
  await bob.getByLabel('Sent on or after').fill('');
  await bob.getByLabel('Sent on or before').fill('');

  await searchFor(bob, `pomme ${tag}`, 2);
  assert.match((await rows(bob))[0].snippet, /diluent/, 'newest first');
  await bob.getByLabel('Order').selectOption('relevance');
  await until(bob, () => /pomme pomme pomme/.test(document.querySelector('#search-results .search-snippet')?.textContent || ''));
  await bob.getByLabel('Order').selectOption('newest');

  await searchFor(bob, `lot ${tag}`, 20);
  const more = bob.getByRole('button', { name: 'More results' });
  await more.click();
  await until(bob, () => document.querySelectorAll('#search-results .search-hit').length === 25);
  await more.waitFor({ state: 'hidden' });
  const numbers = (await rows(bob)).map((r) => Number(/numéro (\d+)/.exec(r.snippet)[1]));
  assert.deepEqual(numbers, Array.from({ length: 25 }, (_, i) => 24 - i));
  assert.deepEqual(bob.problems, []);
});

test('keyboard: arrows through the results, Enter opens, Escape closes and gives focus back', async () => {
  await bob.keyboard.press('Escape');
  await panel(bob).waitFor({ state: 'hidden' });
  await bob.getByLabel('Message', { exact: true }).focus();
  await bob.keyboard.press('Control+k');
  await panel(bob).waitFor();
  await searchFor(bob, `reunion ${tag}`, 3);
  await bob.keyboard.press('ArrowDown');
  await bob.keyboard.press('ArrowDown');
  assert.equal(await bob.evaluate(() => document.activeElement.closest('li') === document.querySelectorAll('#search-results li')[1]), true);
  await bob.keyboard.press('Enter'); // the private message
  await bob.locator('#chat-title', { hasText: A.alias }).waitFor();
  await bob.locator('#message-list li.msg', { hasText: 'en privé' }).waitFor();
  // On a wide screen the panel stays, focus too, for the next result.
  assert.equal(await panel(bob).isVisible(), true);
  await bob.keyboard.press('Escape');
  await panel(bob).waitFor({ state: 'hidden' });
  assert.equal(await bob.evaluate(() => document.activeElement.id), 'composer-input');
  // Opened with its button: focus goes back to it.
  await bob.getByRole('button', { name: 'Search', exact: true }).click();
  await panel(bob).waitFor();
  await bob.keyboard.press('Escape');
  assert.equal(await bob.evaluate(() => document.activeElement.id), 'search-btn');
  // "/" outside of a text field opens it too.
  await bob.locator('#chat-title').click();
  await bob.keyboard.press('/');
  await panel(bob).waitFor();
  await bob.keyboard.press('Escape');
  assert.deepEqual(bob.problems, []);
});

test('a result far back in a long room opens there, with context, and scrolling down reaches the live end', async () => {
  const name = `long-${tag}`;
  await viaSocket(alice, A.username, [
    ['create_channel', { name, members: [B.username] }],
    ...Array.from({ length: 150 }, (_, i) => ['send', { room: name, text: i === 30 ? `la cible ${tag}` : `ligne ${i}` }]),
  ]);
  await bob.locator(`#room-list li[data-room="${name}"]`).waitFor();
  await bob.keyboard.press('Control+k');
  await panel(bob).waitFor();
  await searchFor(bob, `cible ${tag}`, 1);
  await hits(bob).first().click();
  await bob.locator('#chat-title', { hasText: name }).waitFor();
  const target = bob.locator('#message-list li.msg', { hasText: `la cible ${tag}` });
  await target.and(bob.locator('li.flash')).waitFor();
  assert.equal(await target.isVisible(), true);
  const texts = () => bob.locator('#message-list li.msg .msg-text').allTextContents();
  let shown = await texts();
  assert.ok(shown.includes('ligne 29') && shown.includes('ligne 31'), 'both sides of the message');
  assert.ok(shown.includes('ligne 6') && shown.includes('ligne 55'), '25 each side');
  assert.ok(!shown.includes('ligne 149'), 'not the live end');
  await bob.locator('#jump-latest').waitFor();
  await screenshot(bob, 'search-opened-result');

  // Scrolling up loads the older page above, keeping the messages in view where they were.
  const scrollBox = (to) => bob.evaluate((top) => {
    const box = document.getElementById('messages');
    box.scrollTop = top === 'end' ? box.scrollHeight : top;
    return box.scrollTop;
  }, to);
  await scrollBox(0);
  await bob.locator('#message-list li.msg .msg-text', { hasText: /^ligne 0$/ }).waitFor();
  await bob.locator('#history-start').waitFor();
  assert.deepEqual((await texts()).slice(0, 7), ['ligne 0', 'ligne 1', 'ligne 2', 'ligne 3', 'ligne 4', 'ligne 5', 'ligne 6']);
  assert.ok(await bob.evaluate(() => document.getElementById('messages').scrollTop) > 50, 'kept in place');

  // A live message while the window is far back: not appended after the gap.
  await viaSocket(alice, A.username, [['send', { room: name, text: `pendant ${tag}` }]]);
  await until(bob, () => /1 new message below/.test(document.querySelector('#jump-latest-text').textContent));
  assert.ok(!(await texts()).includes(`pendant ${tag}`));

  // Scrolling down loads the newer pages until the live end.
  for (let i = 0; i < 30 && await bob.locator('#jump-latest').isVisible(); i += 1) {
    await scrollBox('end');
    await bob.waitForTimeout(200);
  }
  await bob.locator('#jump-latest').waitFor({ state: 'hidden' });
  shown = await texts();
  const ids = await bob.locator('#message-list li.msg').evaluateAll((lis) => lis.map((li) => Number(li.dataset.id)));
  assert.deepEqual([...ids].sort((x, y) => x - y), ids, 'in order');
  assert.equal(new Set(ids).size, ids.length, 'no duplicates');
  assert.deepEqual(shown.slice(-3), ['ligne 148', 'ligne 149', `pendant ${tag}`]);
  assert.deepEqual(shown.filter((t) => /^ligne /.test(t)).length, 149, 'nothing missing');

  // Live again: a new message is appended.
  await viaSocket(alice, A.username, [['send', { room: name, text: `en direct ${tag}` }]]);
  await bob.locator('#message-list li.msg').last().filter({ hasText: `en direct ${tag}` }).waitFor();
  assert.deepEqual(bob.problems, []);
});

test('"Jump to the latest" leaves an old window; sending from one goes to the live end', async () => {
  const name = `long-${tag}`;
  // A fresh page of Bob's, which has not loaded the room yet.
  await bob.context().close();
  bob = await openPage(browser, server.url);
  await signIn(bob, B.username);
  await bob.keyboard.press('Control+k');
  await searchFor(bob, `cible ${tag}`, 1);
  await hits(bob).first().click();
  await bob.locator('#jump-latest').waitFor();
  await bob.getByRole('button', { name: 'Jump to the latest' }).click();
  await bob.locator('#message-list li.msg').last().filter({ hasText: `en direct ${tag}` }).waitFor();
  assert.equal(await bob.locator('#jump-latest').isVisible(), false);

  await hits(bob).first().click();
  await bob.locator('#jump-latest').waitFor();
  const box = bob.getByLabel('Message', { exact: true });
  await box.fill(`réponse ${tag}`);
  await box.press('Enter');
  await bob.locator('#message-list li.msg').last().filter({ hasText: `réponse ${tag}` }).waitFor();
  assert.equal(await bob.locator('#jump-latest').isVisible(), false);
  assert.equal(await bob.locator('#message-list li.msg', { hasText: 'la cible' }).count(), 0);
  assert.ok(await bob.locator('#chat-title', { hasText: name }).isVisible());
  assert.deepEqual(bob.problems, []);
});

test('rate limiting is shown, and the search is sent again after the wait', async () => {
  await bob.keyboard.press('Control+k');
  await panel(bob).waitFor();
  await bob.evaluate(() => {
    const status = document.getElementById('search-status');
    window.searchStatuses = [];
    new MutationObserver(() => window.searchStatuses.push(status.textContent))
      .observe(status, { childList: true, characterData: true, subtree: true });
  });
  // Bob's searches from another connection use up his allowance (it is per user) for 2.5 s.
  const hammer = alice.evaluate(async ({ user, password, query }) => {
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
    const replies = new Map();
    let n = 0;
    await new Promise((resolve) => {
      ws.onmessage = (ev) => {
        const f = JSON.parse(ev.data);
        if (f.type === 'hello') resolve();
        if (f.re !== undefined) replies.get(f.re)?.(f);
      };
    });
    const call = (cmd, args) => new Promise((resolve) => {
      n += 1;
      replies.set(n, resolve);
      ws.send(JSON.stringify({ id: n, cmd, args }));
    });
    await call('login', { login: user, password });
    let limited = 0;
    for (const end = Date.now() + 2500; Date.now() < end;) {
      if ((await call('search', { query })).code === 'rate_limited') limited += 1;
    }
    await call('logout');
    return limited;
  }, { user: B.username, password: PASSWORD, query: `reunion ${tag}` });
  await new Promise((r) => setTimeout(r, 400));
  await bob.getByLabel('Search messages').fill(`comite ${tag}`);
  assert.ok(await hammer > 0, 'the other connection was limited too');
  await until(bob, () => document.querySelectorAll('#search-results .search-hit').length === 1);
  const statuses = await bob.evaluate(() => window.searchStatuses);
  assert.ok(statuses.some((t) => /^Too many searches: trying again in \d+ s\.$/.test(t)), JSON.stringify(statuses));
  await bob.keyboard.press('Escape');
  assert.deepEqual(bob.problems, []);
});

test('on a phone the search takes the screen, and a result opens the conversation', async () => {
  const phone = await openPage(browser, server.url, { width: 390, height: 844 });
  const P = await register(phone, 'pia');
  await viaSocket(phone, P.username, [['send', { room: 'Général', text: `Téléphone ${tag} : réunion` }]]);
  await phone.getByRole('button', { name: 'Search', exact: true }).click();
  await panel(phone).waitFor();
  const boxOf = await panel(phone).boundingBox();
  assert.ok(boxOf.width >= 389 && boxOf.x <= 1, JSON.stringify(boxOf));
  assert.ok(await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth) <= 0);
  await searchFor(phone, `telephone ${tag}`, 1);
  await screenshot(phone, 'phone-search');
  await hits(phone).first().click();
  await panel(phone).waitFor({ state: 'hidden' });
  await phone.locator('#message-list li.msg', { hasText: `Téléphone ${tag}` }).and(phone.locator('li.flash')).waitFor();
  assert.equal(await phone.locator('#chat').isVisible(), true);
  assert.deepEqual(phone.problems, []);
  await phone.context().close();
});
