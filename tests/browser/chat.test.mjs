// Two people in two browsers: room chat, unread counts, private messages (also received
// while offline), presence, history scroll-back, private channels, and no HTML injection.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  launchBrowser, messages, openPage, openRoom, register, room, screenshot, send, signIn, sleep, testServer, until,
  viaSocket,
} from './helpers.mjs';

let server;
let browser;
let alice;
let bob;
let A;
let B;

before(async () => {
  server = await testServer();
  browser = await launchBrowser();
  alice = await openPage(browser, server.url);
  A = await register(alice, 'alice', { first_name: 'Alice', last_name: 'Martin' });
  bob = await openPage(browser, server.url);
  B = await register(bob, 'bob', { first_name: 'Bob', last_name: 'Durand' });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('two users chat live in a room, with alias and time', async () => {
  await openRoom(alice, 'Général');
  await openRoom(bob, 'Général');
  await send(alice, 'Bonjour à tous !');
  await bob.locator('#message-list .msg-text', { hasText: 'Bonjour à tous !' }).waitFor();
  await send(bob, 'Salut Alice,\nça va ?');
  await alice.locator('#message-list .msg-text', { hasText: 'ça va ?' }).waitFor();
  await bob.locator('#message-list .msg-text', { hasText: 'ça va ?' }).waitFor();

  const seenByBob = (await messages(bob)).filter((m) => m.author === A.username || m.author === B.username);
  assert.deepEqual(seenByBob.map((m) => [m.alias, m.text]), [
    [A.alias, 'Bonjour à tous !'],
    [B.alias, 'Salut Alice,\nça va ?'],
  ]);
  for (const m of seenByBob) assert.match(m.time, /^\d{2}:\d{2}$/);
  // Shift+Enter made a new line instead of sending.
  const input = alice.getByLabel('Message', { exact: true });
  await input.fill('line one');
  await input.press('Shift+Enter');
  await input.pressSequentially('line two');
  assert.equal(await input.inputValue(), 'line one\nline two');
  await input.press('Enter');
  await bob.locator('#message-list .msg-text', { hasText: /^line one\nline two$/ }).waitFor();
  assert.equal(await input.inputValue(), '');
  await screenshot(alice, 'chat');
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});

test('joining an open room and unread counts on other rooms', async () => {
  for (const page of [alice, bob]) {
    const blabla = room(page, 'Blabla');
    assert.equal(await blabla.getAttribute('data-state'), 'can_join');
    assert.match(await blabla.textContent(), /Anyone can join/);
    await blabla.getByRole('button', { name: 'Join Blabla' }).click();
    await page.locator('#room-list li[data-room="Blabla"][data-state="member"]').waitFor();
  }
  // Bob reads Général while Alice writes twice in Blabla.
  await openRoom(bob, 'Général');
  await openRoom(alice, 'Blabla');
  await send(alice, 'premier');
  await send(alice, 'second');
  await room(bob, 'Blabla').locator('.badge[data-unread="2"]').waitFor();
  await until(bob, () => document.title === '(2) Salon');
  await openRoom(bob, 'Blabla');
  await bob.locator('#message-list .msg-text', { hasText: 'second' }).waitFor();
  assert.equal(await room(bob, 'Blabla').locator('.badge').count(), 0);
  assert.equal(await bob.title(), 'Salon');

  // Leaving puts the Join action back.
  await room(bob, 'Blabla').getByRole('button', { name: 'Leave Blabla' }).click();
  await bob.locator('#room-list li[data-room="Blabla"][data-state="can_join"]').waitFor();
  await bob.locator('#chat-title', { hasText: 'Général' }).waitFor();
  // Général cannot be left: no action offered.
  assert.equal(await room(bob, 'Général').locator('.room-action').count(), 0);
});

test('a draft stays in its room: switching rooms never carries it, and it survives a reload', async () => {
  const box = alice.getByLabel('Message', { exact: true });
  await openRoom(alice, 'Général');
  await box.fill('brouillon confidentiel pour Général');
  await openRoom(alice, 'Blabla');
  assert.equal(await box.inputValue(), '', 'the draft did not follow into Blabla');
  await box.fill('autre brouillon');
  await openRoom(alice, 'Général');
  assert.equal(await box.inputValue(), 'brouillon confidentiel pour Général');
  await alice.reload();
  await alice.locator('#chat-title').filter({ hasText: 'Général' }).waitFor();
  await until(alice, () => document.getElementById('composer-input').value !== '');
  assert.equal(await box.inputValue(), 'brouillon confidentiel pour Général');
  await box.press('Enter');
  await alice.locator('#message-list .msg-text', { hasText: 'brouillon confidentiel pour Général' }).waitFor();
  assert.equal(await box.inputValue(), '');
  await openRoom(alice, 'Blabla');
  assert.equal(await box.inputValue(), 'autre brouillon');
  await box.fill('');
  await openRoom(alice, 'Général');
  assert.equal(await box.inputValue(), '', 'a sent draft is gone');
});

test('a message with HTML or a script is shown as text and not executed', async () => {
  await openRoom(alice, 'Général');
  await openRoom(bob, 'Général');
  const evil = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold?</b>';
  await send(alice, evil);
  const shown = bob.locator('#message-list .msg-text', { hasText: '<script>' });
  await shown.waitFor();
  assert.equal(await shown.textContent(), evil);
  assert.equal(await bob.locator('#message-list img, #message-list script, #message-list b').count(), 0);
  await sleep(300);
  assert.equal(await bob.evaluate(() => window.__pwned), undefined);
  assert.equal(await alice.evaluate(() => window.__pwned), undefined);
  // Also through a private message and an alias-like string in the sender's name field.
  await alice.locator(`#people-list li[data-user="${B.username}"] button`).click();
  await send(alice, '<iframe src="/"></iframe>');
  await bob.locator(`#dm-list li[data-user="${A.username}"]`).click();
  const dm = bob.locator('#message-list .msg-text', { hasText: '<iframe' });
  await dm.waitFor();
  assert.equal(await bob.locator('#message-list iframe').count(), 0);
  assert.deepEqual(bob.problems, []);
});

test('private messages between two users, live', async () => {
  await openRoom(bob, 'Général');
  await alice.locator(`#people-list li[data-user="${B.username}"] button`).click();
  await alice.locator('#chat-title', { hasText: B.alias }).waitFor();
  await send(alice, 'Juste entre nous');
  // Bob sees the conversation appear with an unread count, then opens it.
  const item = bob.locator(`#dm-list li[data-user="${A.username}"]`);
  await item.locator('.badge').waitFor();
  await item.getByRole('button').click();
  await bob.locator('#message-list .msg-text', { hasText: 'Juste entre nous' }).waitFor();
  await send(bob, 'Promis, je ne dirai rien');
  await alice.locator('#message-list .msg-text', { hasText: 'Promis' }).waitFor();
  const seen = await messages(alice);
  assert.deepEqual(seen.slice(-2).map((m) => [m.author, m.text]), [
    [A.username, 'Juste entre nous'],
    [B.username, 'Promis, je ne dirai rien'],
  ]);
  await screenshot(alice, 'private-conversation');
});

test('presence is live and the status selector changes it', async () => {
  const bobInAlice = alice.locator(`#people-list li[data-user="${B.username}"]`);
  await until(alice, (u) => document.querySelector(`#people-list li[data-user="${u}"]`)?.dataset.status === 'online', B.username);
  await bob.getByLabel('Your status').selectOption('busy');
  await until(alice, (u) => document.querySelector(`#people-list li[data-user="${u}"]`)?.dataset.status === 'busy', B.username);
  assert.match(await bobInAlice.textContent(), /busy/);
  await bob.getByLabel('Your status').selectOption('away');
  await until(alice, (u) => document.querySelector(`#people-list li[data-user="${u}"]`)?.dataset.status === 'away', B.username);
  await screenshot(alice, 'people');
});

test('private messages received while offline arrive at sign-in', async () => {
  const carolPage = await openPage(browser, server.url);
  const C = await register(carolPage, 'carol');
  await carolPage.getByRole('button', { name: 'Sign out' }).click();
  await carolPage.locator('body[data-screen="auth"]').waitFor();
  await until(alice, (u) => document.querySelector(`#people-list li[data-user="${u}"]`)?.dataset.status === 'offline', C.username);

  await alice.locator(`#people-list li[data-user="${C.username}"] button`).click();
  await send(alice, 'Tu verras ça en rentrant');
  await send(alice, 'Et ça aussi');
  await alice.locator('#message-list .msg-text', { hasText: 'Et ça aussi' }).waitFor();

  await signIn(carolPage, C.username);
  const item = carolPage.locator(`#dm-list li[data-user="${A.username}"]`);
  await item.locator('.badge[data-unread="2"]').waitFor();
  await item.getByRole('button').click();
  await carolPage.locator('#message-list .msg-text', { hasText: 'Et ça aussi' }).waitFor();
  const texts = (await messages(carolPage)).map((m) => m.text);
  assert.deepEqual(texts, ['Tu verras ça en rentrant', 'Et ça aussi']);
  await carolPage.context().close();
});

test('earlier private conversations are listed when signing in on a new page', async () => {
  // Bob and Alice talked earlier; a fresh page knows nothing until it asks the server.
  const fresh = await openPage(browser, server.url);
  await signIn(fresh, B.username);
  const item = fresh.locator(`#dm-list li[data-user="${A.username}"]`);
  await item.waitFor();
  await item.getByRole('button').click();
  await fresh.locator('#message-list .msg-text', { hasText: 'Promis, je ne dirai rien' }).waitFor();
  await fresh.context().close();
});

test('a private channel with chosen members, and scrolling back through history', async () => {
  await alice.getByRole('button', { name: '+ New private channel' }).click();
  const dialog = alice.getByRole('dialog', { name: 'New private channel' });
  // A bad name is reported next to the name field.
  await dialog.getByLabel('Channel name').fill('x');
  await dialog.getByRole('button', { name: 'Create channel' }).click();
  await dialog.locator('#channel-name-error').filter({ hasText: /\S/ }).waitFor();
  const name = `Projet ${Date.now().toString(36).slice(-5)}`;
  await dialog.getByLabel('Channel name').fill(name);
  await dialog.getByLabel(`${B.alias} (${B.username})`).check();
  await dialog.getByRole('button', { name: 'Create channel' }).click();
  await alice.locator('#chat-title', { hasText: name }).waitFor();
  // Bob is told and sees the channel without reloading.
  await bob.locator('.toast', { hasText: name }).waitFor();
  await bob.locator(`#room-list li[data-room="${name}"][data-policy="private"][data-state="member"]`).waitFor();

  // 70 messages: the first page holds the last 50, scrolling up fetches the rest.
  await viaSocket(alice, A.username, Array.from({ length: 70 }, (_, i) => ['send', { room: name, text: `numéro ${i + 1}` }]));
  // Bob, elsewhere, counts them as unread.
  await room(bob, name).locator('.badge[data-unread="70"]').waitFor();

  // Bob reads them, then signs in on another page: read, the room opens at its last page
  // only (unread, it would open at the first unread message).
  await openRoom(bob, name);
  // It opens at the first unread message; reading to the end marks them all read.
  await bob.locator('#new-sep').waitFor();
  await bob.locator('#message-list .msg-text', { hasText: /^numéro 70$/ }).scrollIntoViewIfNeeded();
  const bob2 = await openPage(browser, server.url);
  await signIn(bob2, B.username);
  await room(bob2, name).waitFor();
  await room(bob2, name).locator('.badge').waitFor({ state: 'detached' });
  await openRoom(bob2, name);
  await bob2.locator('#message-list .msg-text', { hasText: /^numéro 70$/ }).waitFor();
  assert.equal(await bob2.locator('#message-list li.msg').count(), 50);
  assert.equal(await bob2.locator('#message-list .msg-text', { hasText: /^numéro 20$/ }).count(), 0);
  await bob2.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
  await bob2.locator('#message-list .msg-text', { hasText: /^numéro 1$/ }).waitFor();
  await bob2.locator('#history-start').waitFor();
  const texts = (await messages(bob2)).map((m) => m.text);
  assert.deepEqual(texts, Array.from({ length: 70 }, (_, i) => `numéro ${i + 1}`));
  await bob2.context().close();
});

test('who is typing is shown to the others, and goes when their message arrives', async () => {
  await openRoom(alice, 'Général');
  await openRoom(bob, 'Général');
  // Earlier tests typed here: past the 3 s during which a page (and the server) says it
  // only once.
  await sleep(3100);
  const box = alice.getByLabel('Message', { exact: true });
  await box.pressSequentially('je tape');
  await bob.locator('#typing', { hasText: `${A.alias} is typing…` }).waitFor();
  assert.equal(await alice.locator('#typing').textContent(), '', 'one is not told of one’s own typing');
  await box.press('Enter');
  await bob.locator('#message-list .msg-text', { hasText: 'je tape' }).waitFor();
  await bob.locator('#typing:empty').waitFor({ state: 'attached' });
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});
