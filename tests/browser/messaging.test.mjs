// Everyday messaging through the page (issue 13): Markdown formatting, mentions with
// completion, edits and deletions (an administrator's too), replies with the jump to the
// original, threads, reactions, read state shared by a user's devices, the "new messages"
// line, notifications, the title and favicon counts, and room membership notices.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ADMIN_PASSWORD, launchBrowser, openPage, openRoom, register, room, screenshot, send, signIn, sleep,
  testServer, until, viaSocket,
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

/** The list item of the message with this text in the open conversation. */
const msg = (page, text) => page.locator('#message-list li.msg', { has: page.locator('.msg-text', { hasText: text }) }).last();

/** Clicks one of a message's actions (shown on hover). */
async function act(page, li, op) {
  await li.hover();
  await li.locator(`.msg-actions [data-op="${op}"]`).click();
}

test('Markdown is rendered safely, and @mentions are completed, highlighted and checked', async () => {
  // The vendored libraries are served at versioned names, cached for long, under the CSP.
  const lib = await fetch(`${server.url}/vendor/purify-3.4.18.min.js`);
  assert.equal(lib.status, 200);
  assert.match(lib.headers.get('cache-control'), /max-age=31536000, immutable/);
  assert.match(lib.headers.get('content-type'), /^text\/javascript/);
  assert.match(lib.headers.get('content-security-policy'), /script-src 'self';/);
  assert.equal((await fetch(`${server.url}/vendor/other.js`)).status, 404);

  await openRoom(alice, 'Général');
  await openRoom(bob, 'Général');
  await send(alice, '**gras** _penché_ ~~barré~~ `x = 1` voir https://example.com/doc?a=1\n> cité\n\n- un\n- deux');
  const formatted = msg(bob, 'gras');
  await formatted.waitFor();
  const text = formatted.locator('.msg-text');
  assert.equal(await text.locator('strong').textContent(), 'gras');
  assert.equal(await text.locator('em').textContent(), 'penché');
  assert.equal(await text.locator('s').textContent(), 'barré');
  assert.equal(await text.locator('code').textContent(), 'x = 1');
  assert.equal((await text.locator('blockquote').textContent()).trim(), 'cité');
  assert.deepEqual(await text.locator('ul > li').allTextContents(), ['un', 'deux']);
  const link = text.locator('a');
  assert.equal(await link.getAttribute('href'), 'https://example.com/doc?a=1');
  assert.equal(await link.getAttribute('target'), '_blank');
  assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');

  // A code block keeps its text as written; raw HTML and javascript: links stay inert text.
  await send(alice, '```\nfn main() { println!("<b>hi</b>"); }\n```');
  await msg(bob, 'fn main()').locator('pre > code', { hasText: '<b>hi</b>' }).waitFor();
  await send(alice, '<img src=x onerror="window.__pwned = 1"> [clic](javascript:window.__pwned=2) # pas un titre');
  const inert = msg(bob, 'pas un titre');
  await inert.waitFor();
  assert.equal(await bob.locator('#message-list img, #message-list h1, #message-list a[href^="javascript"]').count(), 0);
  assert.match(await inert.locator('.msg-text').textContent(), /^<img src=x onerror="window.__pwned = 1"> \[clic\]\(javascript:window.__pwned=2\) # pas un titre$/);
  await sleep(200);
  assert.equal(await bob.evaluate(() => window.__pwned), undefined);

  // Completion: "@" and the start of a name offers the room's members; Enter picks one.
  const box = alice.getByLabel('Message', { exact: true });
  await box.fill('');
  await box.pressSequentially(`Dis @${B.username.slice(0, -1)}`);
  const option = alice.locator(`#mention-menu li[role="option"][data-insert="${B.username}"]`);
  await option.waitFor();
  assert.equal(await option.getAttribute('aria-selected'), 'true');
  assert.match(await option.textContent(), new RegExp(B.alias));
  await box.press('Enter');
  assert.equal(await box.inputValue(), `Dis @${B.username} `);
  await box.pressSequentially('tu as vu ?');
  await box.press('Enter');
  const mentioned = msg(bob, 'tu as vu ?');
  await mentioned.locator(`.mention.me`, { hasText: `@${B.username}` }).waitFor();
  assert.match(await mentioned.getAttribute('class'), /mentions-me/);
  await msg(alice, 'tu as vu ?').locator('.mention:not(.me)').waitFor();

  // Mentioning someone who cannot read the room (the administrator is no member of
  // Blabla): the author is told, discreetly.
  await room(alice, 'Blabla').getByRole('button', { name: 'Join Blabla' }).click();
  await alice.locator('#chat-title', { hasText: 'Blabla' }).waitFor();
  await send(alice, '@admin tu devrais venir');
  await alice.locator('#composer-notice', { hasText: 'Administrator cannot read this room and was not notified.' }).waitFor();
  await screenshot(alice, 'formatting-mentions');
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});

test('a link shows where it goes: a punycode host as typed, a text naming another host gets the real one', async () => {
  await openRoom(alice, 'Général');
  await openRoom(bob, 'Général');
  await send(alice, [
    'Liens à vérifier',
    // Punycode for "аррӏе.com" in Cyrillic letters, which reads like apple.com.
    'https://xn--80ak6aa92e.com',
    // The same name typed in those letters: the punycode host the browser goes to.
    'https://аррӏе.com/login',
    // Any other URL reads as before, decoded.
    'https://example.com/caf%C3%A9',
    // A right-to-left override (U+202E) once decoded: kept encoded.
    'https://example.com/%E2%80%AEmoc.elppa',
    '[https://bank.example.com](https://evil.example.net/login)',
    '[bank.example.com](https://bank.example.com/accounts)',
    '[la documentation](https://docs.example.org/)',
  ].join('\n'));
  const text = msg(bob, 'Liens à vérifier').locator('.msg-text');
  await text.waitFor();
  const links = await text.locator('a').evaluateAll((as) => as.map((a) => ({
    href: a.getAttribute('href'),
    text: a.textContent,
    real: a.querySelector('.link-real')?.textContent ?? null,
  })));
  assert.deepEqual(links, [
    { href: 'https://xn--80ak6aa92e.com', text: 'https://xn--80ak6aa92e.com', real: null },
    { href: 'https://xn--80ak6aa92e.com/login', text: 'https://xn--80ak6aa92e.com/login', real: null },
    { href: 'https://example.com/caf%C3%A9', text: 'https://example.com/café', real: null },
    { href: 'https://example.com/%E2%80%AEmoc.elppa', text: 'https://example.com/%E2%80%AEmoc.elppa', real: null },
    {
      href: 'https://evil.example.net/login',
      text: 'https://bank.example.com (goes to evil.example.net)',
      real: '(goes to evil.example.net)',
    },
    { href: 'https://bank.example.com/accounts', text: 'bank.example.com', real: null },
    { href: 'https://docs.example.org/', text: 'la documentation', real: null },
  ]);
  assert.doesNotMatch(await text.textContent(), /[аррӏ\u202e]/);
  // The real host is part of the link's accessible name.
  await text.getByRole('link', { name: 'https://bank.example.com (goes to evil.example.net)' }).waitFor();
  await text.scrollIntoViewIfNeeded();
  await screenshot(bob, 'links');
  assert.deepEqual(bob.problems, []);
});

test('editing and deleting one’s messages, and an administrator deleting with a reason', async () => {
  await openRoom(alice, 'Général');
  await openRoom(bob, 'Général');
  await send(alice, 'premier jet');
  const mine = msg(alice, 'premier jet');
  await msg(bob, 'premier jet').waitFor();
  // Bob cannot edit or delete Alice's message.
  await msg(bob, 'premier jet').hover();
  assert.equal(await msg(bob, 'premier jet').locator('[data-op="edit"], [data-op="delete"]').count(), 0);

  await act(alice, mine, 'edit');
  const editor = alice.getByLabel('Edit your message');
  await editor.fill('version **finale**');
  await editor.press('Enter');
  const edited = bob.locator('#message-list li.msg', { has: bob.locator('strong', { hasText: 'finale' }) });
  await edited.locator('.msg-edited', { hasText: '(edited)' }).waitFor();
  // Escape cancels an edit.
  const again = alice.locator('#message-list li.msg', { has: alice.locator('strong', { hasText: 'finale' }) });
  await act(alice, again, 'edit');
  await alice.getByLabel('Edit your message').fill('oublie ça');
  await alice.getByLabel('Edit your message').press('Escape');
  await alice.getByLabel('Edit your message').waitFor({ state: 'detached' });
  assert.equal(await again.locator('.msg-text').textContent(), 'version finale');

  // An edit told late (a cluster node catching up), or told twice, does not undo the
  // latest: each edit of a message is stamped later than the one before.
  const id = await again.getAttribute('data-id');
  const kept = await bob.evaluate(async (id) => {
    const { applyEdit, copiesOf } = await import('/js/messaging.js');
    const [m] = copiesOf(id);
    applyEdit(id, 'an older edit', m.edited - 1);
    applyEdit(id, 'the same edit again', m.edited);
    return copiesOf(id)[0].text;
  }, Number(id));
  assert.equal(kept, 'version **finale**');
  assert.equal(await edited.locator('.msg-text').textContent(), 'version finale');

  // Delete, after a confirmation.
  await act(alice, again, 'delete');
  const dialog = alice.getByRole('dialog', { name: 'Delete the message' });
  assert.equal(await dialog.getByLabel(/Reason/).isVisible(), false);
  await dialog.getByRole('button', { name: 'Delete' }).click();
  await bob.locator(`#message-list li.msg.deleted[data-id="${id}"] .msg-text`, { hasText: 'message deleted' }).waitFor();
  await alice.locator(`#message-list li.msg.deleted[data-id="${id}"]`).waitFor();
  // No edit, however late its stamp, brings a deleted message back.
  const gone = await bob.evaluate(async (id) => {
    const { applyEdit, copiesOf } = await import('/js/messaging.js');
    applyEdit(id, 'back from the dead', Date.now() + 3_600_000);
    const [m] = copiesOf(id);
    return { deleted: m.deleted, text: m.text };
  }, Number(id));
  assert.deepEqual(gone, { deleted: true, text: '' });

  // An administrator deletes Bob's message, giving a reason.
  await send(bob, 'message à modérer');
  const admin = await openPage(browser, server.url);
  await signIn(admin, 'admin', ADMIN_PASSWORD);
  await openRoom(admin, 'Général');
  const target = msg(admin, 'message à modérer');
  await act(admin, target, 'delete');
  const adminDialog = admin.getByRole('dialog', { name: 'Delete the message' });
  await adminDialog.getByLabel(/Reason/).fill('hors sujet');
  await adminDialog.getByRole('button', { name: 'Delete' }).click();
  await bob.locator('#message-list li.msg.deleted .msg-text', { hasText: 'message deleted' }).nth(1).waitFor();
  assert.equal(await bob.locator('#message-list .msg-text', { hasText: 'message à modérer' }).count(), 0);
  // The reason is in the audit log.
  const [audit] = await viaSocket(admin, 'admin', [['audit', { limit: 5 }]], { password: ADMIN_PASSWORD });
  assert.ok(audit.entries.some((e) => e.action === 'delete_message' && e.reason === 'hors sujet'), JSON.stringify(audit));
  await admin.context().close();
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});

test('replies quote their original, which a click shows; threads and reactions are live', async () => {
  await openRoom(alice, 'Général');
  await openRoom(bob, 'Général');
  await send(bob, 'Qui vient à la réunion ?');
  const question = msg(alice, 'Qui vient à la réunion ?');
  await act(alice, question, 'reply');
  await alice.locator('#reply-bar', { hasText: 'Qui vient à la réunion ?' }).waitFor();
  await send(alice, 'Moi !');
  const reply = msg(bob, 'Moi !');
  await reply.locator('.msg-quote', { hasText: 'Qui vient à la réunion ?' }).waitFor();
  assert.equal(await alice.locator('#reply-bar').isVisible(), false);
  // The original counts its replies, live.
  await msg(bob, 'Qui vient à la réunion ?').locator('.msg-replies', { hasText: '1 reply' }).waitFor();
  // A click on the quote shows the original.
  await reply.locator('.msg-quote').click();
  await msg(bob, 'Qui vient à la réunion ?').and(bob.locator('li.flash')).waitFor();

  // The thread panel: the original, its replies, and a reply written there.
  await msg(bob, 'Qui vient à la réunion ?').locator('.msg-replies').click();
  const thread = bob.locator('#thread');
  await thread.locator('#thread-root .msg-text', { hasText: 'Qui vient à la réunion ?' }).waitFor();
  await thread.locator('#thread-list .msg-text', { hasText: 'Moi !' }).waitFor();
  await thread.getByLabel('Reply in the thread').fill('Parfait, à 14 h.');
  await thread.getByLabel('Reply in the thread').press('Enter');
  await thread.locator('#thread-list .msg-text', { hasText: 'Parfait, à 14 h.' }).waitFor();
  await msg(alice, 'Parfait, à 14 h.').locator('.msg-quote', { hasText: 'Qui vient' }).waitFor();
  await msg(alice, 'Qui vient à la réunion ?').locator('.msg-replies', { hasText: '2 replies' }).waitFor();
  await screenshot(bob, 'thread');
  await thread.getByRole('button', { name: 'Close the thread' }).click();
  await thread.waitFor({ state: 'hidden' });

  // Reactions: a chip per emoji with its count; one's own highlighted; a click toggles.
  await act(alice, question, 'react');
  await alice.locator('#emoji-picker').getByRole('menuitem', { name: 'React with thumbs up' }).click();
  const chipBob = msg(bob, 'Qui vient à la réunion ?').locator('.reaction[data-emoji="👍"]');
  await chipBob.and(bob.locator('[data-count="1"]')).waitFor();
  assert.equal(await chipBob.getAttribute('aria-pressed'), 'false');
  assert.match(await chipBob.getAttribute('title'), new RegExp(`${A.alias} reacted with 👍`));
  const chipAlice = question.locator('.reaction[data-emoji="👍"]');
  assert.equal(await chipAlice.getAttribute('aria-pressed'), 'true');
  await chipBob.click();
  await chipAlice.and(alice.locator('[data-count="2"]')).waitFor();
  assert.match(await chipAlice.getAttribute('title'), new RegExp(`you, ${B.alias}|${B.alias}, you`));
  await chipAlice.click();
  await chipBob.and(bob.locator('[data-count="1"][aria-pressed="true"]')).waitFor();

  // The original of a reply far back in the history: older pages are loaded to show it.
  await viaSocket(alice, A.username, [
    ['send', { room: 'Général', text: 'Origine lointaine' }],
    ...Array.from({ length: 55 }, (_, i) => ['send', { room: 'Général', text: `remplissage ${i}` }]),
    ['send', { room: 'Général', text: 'Réponse tardive', reply_to: '$0' }],
  ]);
  const fresh = await openPage(browser, server.url);
  await signIn(fresh, B.username);
  await openRoom(fresh, 'Général');
  const late = msg(fresh, 'Réponse tardive');
  await late.waitFor();
  assert.equal(await fresh.locator('#message-list .msg-text', { hasText: 'Origine lointaine' }).count(), 0);
  await late.locator('.msg-quote').click();
  await msg(fresh, 'Origine lointaine').and(fresh.locator('li.flash')).waitFor();
  await fresh.context().close();
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});

test('read state is shared by a user’s devices; counts in the title and favicon; notifications', async () => {
  // A second device of Bob's, with a recording stand-in for the Notification API.
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-GB' });
  await context.addInitScript(() => {
    window.__notes = [];
    class FakeNotification {
      constructor(title, options) { window.__notes.push({ title, body: options && options.body }); }
      close() {}
    }
    FakeNotification.permission = 'default';
    FakeNotification.requestPermission = async () => { FakeNotification.permission = 'granted'; return 'granted'; };
    window.Notification = FakeNotification;
  });
  const bob2 = await context.newPage();
  bob2.problems = [];
  bob2.on('pageerror', (e) => bob2.problems.push(`page error: ${e.message}`));
  bob2.on('console', (m) => { if (m.type() === 'error') bob2.problems.push(`console: ${m.text()}`); });
  await bob2.goto(`${server.url}/`);
  await signIn(bob2, B.username);
  // Permission is asked from a visible control only.
  const enable = bob2.getByRole('button', { name: /Enable notifications/ });
  await enable.waitFor();
  await enable.click();
  await enable.waitFor({ state: 'hidden' });

  const channel = `Lecture ${Date.now().toString(36).slice(-5)}`;
  await alice.getByRole('button', { name: '+ New private channel' }).click();
  const dialog = alice.getByRole('dialog', { name: 'New private channel' });
  await dialog.getByLabel('Channel name').fill(channel);
  await dialog.getByLabel(`${B.alias} (${B.username})`).check();
  await dialog.getByRole('button', { name: 'Create channel' }).click();
  await alice.locator('#chat-title', { hasText: channel }).waitFor();
  await openRoom(bob, 'Général');
  await room(bob2, channel).waitFor();
  await openRoom(bob2, 'Général');

  await send(alice, 'un');
  await send(alice, 'deux');
  await send(alice, 'trois');
  for (const page of [bob, bob2]) {
    await room(page, channel).locator('.badge[data-unread="3"]').waitFor();
    await until(page, () => document.title === '(3) Salon');
  }
  // The favicon shows the count too, drawn on a canvas (allowed by the CSP: no error).
  await until(bob2, () => document.getElementById('favicon').dataset.count === '3'
    && document.getElementById('favicon').href.startsWith('blob:'));
  // Every room message notifies at the default level.
  await until(bob2, () => window.__notes.some((n) => n.body === 'trois'));

  // Bob's own message from his first device is never unread on the second.
  await openRoom(bob, channel);
  await bob.locator('#new-sep', { hasText: 'New messages' }).waitFor();
  assert.equal(await bob.locator('#message-list li.msg').first().getAttribute('data-id'),
    await bob.locator('#new-sep + li.msg').getAttribute('data-id'));
  // Reading on the first device clears the badge and the title on the second.
  await room(bob2, channel).locator('.badge').waitFor({ state: 'detached' });
  await until(bob2, () => document.title === 'Salon' && document.getElementById('favicon').dataset.count === '0');
  await send(bob, 'je lis');
  await sleep(500);
  assert.equal(await room(bob2, channel).locator('.badge').count(), 0);

  // A fresh sign-in gets the counts from the server, and opens at the "new messages" line.
  await openRoom(bob, 'Général');
  await send(alice, 'quatre');
  await room(bob2, channel).locator('.badge[data-unread="1"]').waitFor();
  const bob3 = await openPage(browser, server.url);
  await signIn(bob3, B.username);
  await room(bob3, channel).locator('.badge[data-unread="1"]').waitFor();
  await openRoom(bob3, channel);
  await bob3.locator('#new-sep + li.msg .msg-text', { hasText: 'quatre' }).waitFor();
  await room(bob2, channel).locator('.badge').waitFor({ state: 'detached' });
  await bob3.context().close();

  // Mentions only: a plain message does not notify, a mention does (and is counted).
  const before = await bob2.evaluate(() => window.__notes.length);
  await openRoom(bob2, channel);
  await bob2.getByLabel('Notify me of').selectOption('mentions');
  await openRoom(bob2, 'Général');
  await send(alice, 'rien de spécial');
  await send(alice, `@${B.username} regarde ça`);
  await room(bob2, channel).locator('.badge.mention[data-mentions="1"]').waitFor();
  await until(bob2, () => window.__notes.some((n) => /mentioned you/.test(n.title) && /regarde ça/.test(n.body)));
  assert.equal(await bob2.evaluate(() => window.__notes.filter((n) => n.body === 'rien de spécial').length), 0);
  assert.equal(await bob2.evaluate((n) => window.__notes.length, before), before + 1);
  // The level is stored on the server: the first device shows it too.
  await openRoom(bob, channel);
  assert.equal(await bob.getByLabel('Notify me of').inputValue(), 'mentions');
  // A private message notifies.
  await alice.locator(`#people-list li[data-user="${B.username}"] button`).click();
  await send(alice, 'en privé');
  await until(bob2, () => window.__notes.some((n) => /private message/.test(n.title) && n.body === 'en privé'));
  assert.deepEqual(bob2.problems, []);
  await context.close();
});

test('members see who joins and leaves a room', async () => {
  await openRoom(alice, 'Blabla');
  await room(bob, 'Blabla').getByRole('button', { name: 'Join Blabla' }).click();
  await alice.locator('#message-list .member-notice', { hasText: `${B.alias} joined the room.` }).waitFor();
  await room(bob, 'Blabla').getByRole('button', { name: 'Leave Blabla' }).click();
  await alice.locator('#message-list .member-notice', { hasText: `${B.alias} left the room.` }).waitFor();
  assert.deepEqual(alice.problems, []);
});
