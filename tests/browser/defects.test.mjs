// Daily-use defects of issue 15 (items 5, 10, 11, 12, 13): toasts clear of the Send
// button and sanction notices gone after signing in again, read state across devices
// and reloads, the shutdown banner and unknown presence, the Leave confirmation, and
// smaller ones (own row, sentences, registration errors, a declined request, plain
// labels, icons that are not emoji). The last test shuts the server down and restarts it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ADMIN_PASSWORD, PHONE, launchBrowser, openPage, openRoom, register, room, send, Server, signIn, until, viaSocket,
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

/** Runs administrator commands over a WebSocket of its own, opened from `page`: the
 *  test does not depend on the admin panel's layout. */
const asAdmin = (page, commands) => viaSocket(page, 'admin', commands, { password: ADMIN_PASSWORD });

/** The element at the centre of the Send button is the button (or inside it). */
function sendButtonOnTop(page) {
  return page.evaluate(() => {
    const b = document.getElementById('send-btn');
    const r = b.getBoundingClientRect();
    const el = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return !!el && (el === b || b.contains(el));
  });
}

test('item 5: toasts never cover the Send button (desktop and phone)', async () => {
  for (const viewport of [{ width: 1366, height: 768 }, { width: 390, height: 844 }]) {
    const page = await openPage(browser, server.url, viewport);
    await register(page, 'toby');
    await page.locator('#send-btn').waitFor();
    // Several notices at once, one of them long.
    await asAdmin(page, [
      ['broadcast', { text: 'Maintenance ce soir à 18 h. '.repeat(12) }],
      ['broadcast', { text: 'Deuxième annonce' }],
      ['broadcast', { text: 'Troisième annonce' }],
    ]);
    await page.locator('.toast[data-kind="notice"]', { hasText: 'Troisième annonce' }).waitFor();
    await page.locator('#send-btn').waitFor();
    assert.equal(await sendButtonOnTop(page), true, `a toast covers Send at ${viewport.width}×${viewport.height}`);
    // Dismissible.
    const t = page.locator('.toast[data-kind="notice"]', { hasText: 'Deuxième annonce' });
    await t.getByRole('button', { name: 'Dismiss' }).click();
    await t.waitFor({ state: 'detached' });
    await page.context().close();
  }
});

test('item 5: after kick, end of kick and signing in again, no kick notice remains', async () => {
  const page = await openPage(browser, server.url);
  const U = await register(page, 'kira');
  // The administrator's commands from a page of its own: the kicked page reloads.
  const other = await openPage(browser, server.url);
  await asAdmin(other, [['kick', { user: U.username, seconds: 3600, reason: 'calme-toi' }]]);
  await page.locator('body[data-screen="auth"]').waitFor();
  // Said on the sign-in form of the page reloaded for it.
  await page.locator('#auth-notice', { hasText: 'calme-toi' }).waitFor();
  await asAdmin(other, [['unkick', { user: U.username }]]);
  await signIn(page, U.username);
  assert.equal(await page.locator('.toast', { hasText: 'calme-toi' }).count(), 0);
  assert.equal(await page.locator('.toast', { hasText: /disconnected by an administrator/ }).count(), 0);
  await page.context().close();
  await other.context().close();
});

test('item 13: own row at full opacity, plain labels, UI icons that are not emoji', async () => {
  const page = await openPage(browser, server.url);
  const U = await register(page, 'olga');
  await openRoom(page, 'Général');
  // One's own row in People is not drawn as if offline.
  const own = page.locator(`#people-list li[data-user="${U.username}"] .person-open`);
  await own.waitFor();
  assert.equal(await own.evaluate((el) => getComputedStyle(el).opacity), '1');

  // Plain words.
  await page.locator('#chat-sub', { hasText: 'Everyone is a member' }).waitFor();
  assert.match(await room(page, 'Blabla').locator('.room-meta').textContent(), /Anyone can join/);
  assert.match(await room(page, 'Informatique').locator('.room-meta').textContent(), /Join on request/);
  await room(page, 'Informatique').getByRole('button', { name: 'Request to join Informatique' }).waitFor();
  const jargon = ['everyone', 'open', 'on request', 'can request', 'can join', 'request pending', 'private', 'member'];
  for (const tag of await page.locator('#room-list .tag').allTextContents()) assert.ok(!jargon.includes(tag), tag);
  assert.doesNotMatch(await page.locator('#chat-sub').textContent(), /everyone room/i);

  // A private channel (created by the administrator with this user in it), a message
  // of one's own with its actions: no UI glyph is an emoji character.
  await asAdmin(page, [['create_channel', { name: `Projet ${U.username}`, members: [U.username] }]]);
  await room(page, `Projet ${U.username}`).locator('.label .icon-lock').waitFor();
  await openRoom(page, `Projet ${U.username}`);
  await page.locator('#chat-title .icon-lock').waitFor();
  await send(page, 'avec des icônes');
  await page.locator('#message-list .msg-text', { hasText: 'avec des icônes' }).waitFor();
  await page.locator('#message-list li.msg').last().hover();
  const emojiInUi = await page.evaluate(() => {
    const found = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (n.parentElement.closest('.msg-text, .reaction, #emoji-picker, script, style')) continue;
      if (/\p{Extended_Pictographic}/u.test(n.textContent)) found.push(`${n.parentElement.id || n.parentElement.className}: ${n.textContent.trim()}`);
    }
    return found;
  });
  assert.deepEqual(emojiInUi, []);
  // The actions' icons are drawn: each a box in the text colour masked by an SVG file
  // that is served (a missing file would leave a blank square, not an emoji).
  const icons = await page.evaluate(async () => {
    const out = [];
    for (const el of document.querySelectorAll('#message-list li.msg:last-child .msg-action .icon')) {
      const style = getComputedStyle(el);
      const url = (style.maskImage || style.webkitMaskImage).match(/url\("?([^")]+)"?\)/);
      const r = el.getBoundingClientRect();
      const res = url ? await fetch(url[1]) : null;
      out.push({ url: url && url[1], size: r.width > 8 && r.height > 8, type: res && res.headers.get('content-type'), colour: style.backgroundColor === style.color });
    }
    return out;
  });
  assert.ok(icons.length >= 3, JSON.stringify(icons));
  for (const i of icons) {
    assert.match(i.url, /\/icons\/(smile|reply|pencil|trash)\.svg$/);
    assert.ok(i.size && i.colour, JSON.stringify(i));
    assert.equal(i.type, 'image/svg+xml');
  }
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('item 13: the administrator\'s own row in People reads in full, "(you)" included', async () => {
  const page = await openPage(browser, server.url);
  await signIn(page, 'admin', ADMIN_PASSWORD);
  const own = page.locator('#people-list li[data-user="admin"]');
  await own.waitFor();
  // Nothing in the row is cut off with an ellipsis.
  const cut = await own.evaluate((li) => [...li.querySelectorAll('span')]
    .filter((s) => s.scrollWidth > s.clientWidth + 1).map((s) => s.textContent));
  assert.deepEqual(cut, []);
  assert.match(await own.textContent(), /Administrator.*\(you\)/);
  await page.context().close();
});

test('item 12: leaving an on-request room asks first; an open room does not', async () => {
  const page = await openPage(browser, server.url);
  const U = await register(page, 'lena');
  // An open room: one click.
  await room(page, 'Blabla').getByRole('button', { name: 'Join Blabla' }).click();
  await page.locator('#room-list li[data-room="Blabla"][data-state="member"]').waitFor();
  await room(page, 'Blabla').getByRole('button', { name: 'Leave Blabla' }).click();
  await page.locator('#room-list li[data-room="Blabla"][data-state="can_join"]').waitFor();

  // An on-request room: an inline confirmation saying rejoining needs approval.
  await room(page, 'Informatique').getByRole('button', { name: 'Request to join Informatique' }).click();
  await page.locator('#room-list li[data-room="Informatique"][data-state="pending"]').waitFor();
  await asAdmin(page, [['accept', { user: U.username, room: 'Informatique', reason: '' }]]);
  const info = room(page, 'Informatique');
  await page.locator('#room-list li[data-room="Informatique"][data-state="member"]').waitFor();
  await info.getByRole('button', { name: 'Leave Informatique' }).click();
  const confirm = info.getByRole('group', { name: 'Leave Informatique?' });
  await confirm.waitFor();
  assert.match(await confirm.textContent(), /approval/);
  assert.equal(await info.getAttribute('data-state'), 'member');
  // Focus is on the confirmation; Escape cancels (keyboard), still a member.
  assert.equal(await page.evaluate(() => document.activeElement.dataset.action), 'leave-confirm');
  await page.keyboard.press('Escape');
  await confirm.waitFor({ state: 'detached' });
  assert.equal(await info.getAttribute('data-state'), 'member');
  // Confirmed: left.
  await info.getByRole('button', { name: 'Leave Informatique' }).click();
  await info.getByRole('button', { name: 'Yes, leave Informatique' }).click();
  await page.locator('#room-list li[data-room="Informatique"][data-state="can_request"]').waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('item 13: a declined join request stays in the room row until dismissed or asked again', async () => {
  const page = await openPage(browser, server.url);
  const U = await register(page, 'rita');
  const mk = room(page, 'Marketing');
  await mk.getByRole('button', { name: 'Request to join Marketing' }).click();
  await page.locator('#room-list li[data-room="Marketing"][data-state="pending"]').waitFor();
  await asAdmin(page, [['reject', { user: U.username, room: 'Marketing', reason: 'réservé au service' }]]);
  const note = mk.locator('.room-declined');
  await note.filter({ hasText: 'réservé au service' }).waitFor();
  // Still there once every toast is gone.
  await page.evaluate(() => { for (const t of document.querySelectorAll('.toast')) t.remove(); });
  await page.locator('#room-list li[data-room="Blabla"] .room-action').click(); // redraws the list
  await page.locator('#room-list li[data-room="Blabla"][data-state="member"]').waitFor();
  assert.equal(await note.count(), 1);
  await note.getByRole('button', { name: 'Dismiss the notice about Marketing' }).click();
  await note.waitFor({ state: 'detached' });
  // Asking again also clears it.
  await mk.getByRole('button', { name: 'Request to join Marketing' }).click();
  await page.locator('#room-list li[data-room="Marketing"][data-state="pending"]').waitFor();
  await asAdmin(page, [['reject', { user: U.username, room: 'Marketing', reason: '' }]]);
  await note.waitFor();
  await mk.getByRole('button', { name: 'Request to join Marketing' }).click();
  await page.locator('#room-list li[data-room="Marketing"][data-state="pending"]').waitFor();
  assert.equal(await note.count(), 0);

  // Declined while signed out: told at the next sign-in, in the row too.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('body[data-screen="auth"]').waitFor();
  await asAdmin(page, [['reject', { user: U.username, room: 'Marketing', reason: 'complet' }]]);
  await signIn(page, U.username);
  await note.filter({ hasText: 'Complet.' }).waitFor();
  // A reload keeps it (the server told the decision once).
  await page.reload();
  await page.locator('body[data-screen="app"]').waitFor();
  await note.filter({ hasText: 'Complet.' }).waitFor();
  await page.context().close();
});

test('item 13: registration shows every field error at once; server errors read as sentences', async () => {
  const page = await openPage(browser, server.url);
  await page.getByRole('tab', { name: 'Create an account' }).click();
  const form = page.locator('#register-form');
  const errors = () => form.locator('[data-field-error]').evaluateAll((els) => Object.fromEntries(
    els.filter((e) => e.textContent.trim()).map((e) => [e.dataset.fieldError, e.textContent])));
  const asSentence = /^[A-ZÀ-Ý].*[.!?]$/s;

  // Nothing filled in: every required field says so, and focus goes to the first.
  await form.getByRole('button', { name: 'Create my account' }).click();
  let shown = await errors();
  assert.deepEqual(Object.keys(shown).sort(), ['alias', 'first_name', 'last_name', 'password', 'username']);
  for (const text of Object.values(shown)) assert.match(text, asSentence);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'reg-first_name');

  // Several rules broken at once: too short, bad characters, passwords that differ.
  await form.getByLabel('First name').fill('Zoé');
  await form.getByLabel('Last name').fill('Testeur');
  await form.getByLabel(/^Username/).fill('zoé!');
  await form.getByLabel(/^Alias/).fill('Z');
  await form.getByLabel(/^Password/).fill('correct horse battery staple');
  await form.getByLabel('Repeat the password').fill('correct horse battery');
  await form.getByRole('button', { name: 'Create my account' }).click();
  shown = await errors();
  assert.deepEqual(Object.keys(shown).sort(), ['alias', 'password2', 'username']);
  assert.equal(await form.locator('[aria-invalid="true"]').count(), 3);

  // Valid for the client, refused by the server (a taken username): the server's field
  // error is shown, as a sentence.
  await form.getByLabel(/^Username/).fill('admin');
  await form.getByLabel(/^Alias/).fill('Zoé Bis');
  await form.getByLabel('Repeat the password').fill('correct horse battery staple');
  await form.getByRole('button', { name: 'Create my account' }).click();
  await form.locator('#reg-username-error').filter({ hasText: /\S/ }).waitFor();
  assert.match(await form.locator('#reg-username-error').textContent(), asSentence);

  // Signing in with a wrong password: the server's message, as a sentence.
  await page.getByRole('tab', { name: 'Sign in' }).click();
  const signin = page.locator('#signin-form');
  await signin.getByLabel('Username or alias').fill('admin');
  await signin.getByLabel('Password', { exact: true }).fill('not the password at all');
  await signin.getByRole('button', { name: 'Sign in' }).click();
  const err = signin.locator('[data-field-error]:not(:empty), .form-error:not(:empty)').first();
  await err.waitFor();
  assert.match(await err.textContent(), asSentence);
  await page.context().close();
});

test('item 10: own messages from another device are never unread; unread counts survive a reload', async () => {
  const a1 = await openPage(browser, server.url);
  const A = await register(a1, 'anna');
  const a2 = await openPage(browser, server.url);
  await signIn(a2, A.username);
  const b = await openPage(browser, server.url);
  const B = await register(b, 'boris');
  for (const p of [a1, b]) {
    await room(p, 'Blabla').getByRole('button', { name: 'Join Blabla' }).click();
    await p.locator('#room-list li[data-room="Blabla"][data-state="member"]').waitFor();
  }
  await a2.locator('#room-list li[data-room="Blabla"][data-state="member"]').waitFor();
  // The second device reads Général; the first writes in Blabla and privately to Boris.
  await openRoom(a2, 'Général');
  await openRoom(a1, 'Blabla');
  await send(a1, 'écrit depuis le portable');
  await send(a1, 'encore moi');
  await a1.locator('#message-list .msg-text', { hasText: 'encore moi' }).waitFor();
  await b.locator(`#people-list li[data-user="${A.username}"] .person-open`).click();
  await send(b, 'bonjour Anna');
  await a1.locator(`#dm-list li[data-user="${B.username}"]`).waitFor();
  await a1.locator(`#dm-list li[data-user="${B.username}"] .dm-open`).click();
  await send(a1, 'réponse depuis le portable');
  await a1.locator('#message-list .msg-text', { hasText: 'réponse depuis le portable' }).waitFor();
  // Boris writes in Blabla: that one is unread on the second device, own ones are not.
  await openRoom(b, 'Blabla');
  await send(b, 'message de Boris');
  await a1.locator('#message-list .msg-text', { hasText: 'réponse depuis le portable' }).waitFor();
  const blabla = room(a2, 'Blabla');
  await blabla.locator('.badge[data-unread]').waitFor();
  await until(a2, () => {
    const el = document.querySelector('#room-list li[data-room="Blabla"] .badge[data-unread]');
    return el && el.dataset.unread === '1';
  });
  // The conversation with Boris was read on the first device, answer included: no badge.
  await a2.locator(`#dm-list li[data-user="${B.username}"]`).waitFor();
  await until(a2, (u) => !document.querySelector(`#dm-list li[data-user="${u}"] .badge[data-unread]`), B.username);

  // A reload keeps the counts: they come from the server's read state.
  await a2.reload();
  await a2.locator('body[data-screen="app"]').waitFor();
  await openRoom(a2, 'Général');
  await until(a2, () => {
    const el = document.querySelector('#room-list li[data-room="Blabla"] .badge[data-unread]');
    return el && el.dataset.unread === '1';
  });
  assert.equal(await a2.locator(`#dm-list li[data-user="${B.username}"] .badge[data-unread]`).count(), 0);

  // A private message nobody has read yet: counted on both devices, and still after a
  // reload.
  await openRoom(a1, 'Général');
  await b.locator(`#dm-list li[data-user="${A.username}"] .dm-open`).click();
  await send(b, 'tu as vu ?');
  const dmBadge = (p) => p.locator(`#dm-list li[data-user="${B.username}"] .badge[data-unread="1"]`);
  await dmBadge(a1).waitFor();
  await dmBadge(a2).waitFor();
  await a2.reload();
  await a2.locator('body[data-screen="app"]').waitFor();
  await dmBadge(a2).waitFor();
  for (const p of [a1, a2, b]) await p.context().close();
});

// Last: stops the server and restarts it.
test('item 11: after a shutdown, one banner with the administrator\'s message; presence unknown until back', async () => {
  const user = await openPage(browser, server.url);
  const U = await register(user, 'ugo');
  const other = await openPage(browser, server.url);
  const O = await register(other, 'otto');
  const row = (who) => user.locator(`#people-list li[data-user="${who}"]`);
  await user.locator(`#people-list li[data-user="${O.username}"][data-status="online"]`).waitFor();
  await asAdmin(user, [['shutdown', { seconds: 2, message: 'mise à jour du serveur' }]]);
  await user.locator('#shutdown-banner', { hasText: 'mise à jour du serveur' }).waitFor();
  const { code } = await server.exited;
  assert.equal(code, 0);
  await user.locator('body[data-conn="closed"], body[data-conn="connecting"]').first().waitFor();
  // Exactly one banner, saying the administrator's message.
  await user.locator('#conn-banner', { hasText: 'Mise à jour du serveur' }).waitFor();
  const banners = await user.locator('.banner:visible').allTextContents();
  assert.equal(banners.length, 1, banners.join(' | '));
  assert.match(banners[0], /mise à jour du serveur/i);
  assert.doesNotMatch(banners[0], /the server is stopping/);
  // Nobody shows as online while disconnected, oneself included.
  await user.locator('#people-list li[data-status="unknown"]').first().waitFor();
  assert.equal(await user.locator('#people-list li[data-status="online"]').count(), 0);
  assert.equal(await row(O.username).getAttribute('data-status'), 'unknown');
  assert.match(await row(O.username).getByRole('button').getAttribute('aria-label'), /status unknown/);
  const dots = await user.locator('#people-list .dot').evaluateAll((els) => els.map((e) => getComputedStyle(e).backgroundColor));
  assert.ok(dots.length >= 2 && dots.every((c) => c === dots[0]), dots.join(' '));

  await server.restart();
  await user.locator('body[data-conn="open"]').waitFor({ timeout: 30000 });
  await user.locator('#conn-banner').waitFor({ state: 'hidden' });
  await user.locator(`#people-list li[data-user="${U.username}"][data-status="online"]`).waitFor();
  assert.equal(await user.locator('.banner:visible').count(), 0);
  await other.context().close();
  await user.context().close();
});
