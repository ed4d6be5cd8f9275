// Files the page must refuse or keep from the wrong people (issue 14), on a server with
// small limits: a file over the size limit is refused in the page before any of it is
// sent; one past the user's quota shows the server's refusal; an HTML file named `.png`
// is offered as a download, never shown as an image; a file is read by the room's
// members only, and by nobody once its message is deleted.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Server, launchBrowser, openPage, openRoom, register, room, until } from './helpers.mjs';

let server;
let browser;
let alice;
let bob;
let carol;

before(async () => {
  // A server of its own, whatever SALON_URL says: these limits are the test.
  server = await Server.start('', 'upload_max_bytes = 100000\nupload_quota_bytes = 250000');
  browser = await launchBrowser();
  const url = server.url;
  alice = await openPage(browser, url);
  await register(alice, 'alice');
  bob = await openPage(browser, url);
  await register(bob, 'bob');
  carol = await openPage(browser, url);
  await register(carol, 'carol'); // not a member of Blabla
  for (const page of [alice, bob]) {
    await room(page, 'Blabla').getByRole('button', { name: 'Join Blabla' }).click();
    await openRoom(page, 'Blabla');
  }
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The requests `page` makes to upload files, from now on. */
function uploadsSent(page) {
  const sent = [];
  page.on('request', (r) => { if (r.method() === 'POST' && r.url().includes('/api/files')) sent.push(r.url()); });
  return sent;
}

/** Chooses a file with the button and waits for its upload to be done or to fail. */
async function choose(page, name, buffer, mimeType = 'application/octet-stream') {
  await page.locator('#attach-input').setInputFiles({ name, mimeType, buffer });
  const item = page.locator('#attach-list li.upload', { hasText: name });
  await page.locator('#attach-list li.upload.done, #attach-list li.upload.failed', { hasText: name }).waitFor();
  return item;
}

/** Empties the composer's list of uploads (each removed with its button). */
async function clearUploads(page) {
  const buttons = page.locator('#attach-list li.upload button');
  while (await buttons.count() > 0) await buttons.first().click();
  await until(page, () => document.getElementById('attach-list').hidden);
}

/** What `page` gets for file `id`, read as the page reads files (its session token). */
function readAs(page, id) {
  return page.evaluate(async (id) => {
    const token = sessionStorage.getItem('salon.token') || localStorage.getItem('salon.token');
    const res = await fetch(`/api/files/${id}`, { headers: { Authorization: `Bearer ${token}` }, credentials: 'omit' });
    return res.status;
  }, id);
}

test('a file over the size limit is refused in the page, before any of it is sent', async () => {
  const sent = uploadsSent(alice);
  const item = await choose(alice, 'big.bin', Buffer.alloc(150000, 1));
  assert.match(await item.getAttribute('class'), /failed/);
  assert.equal(await item.locator('.upload-status').textContent(),
    'Too large: 150 kB, files are at most 100 kB.');
  assert.deepEqual(sent, [], 'nothing was sent to the server');
  await clearUploads(alice);
});

test('past the quota, the server\'s refusal is shown', async () => {
  const sent = uploadsSent(alice);
  for (const n of [1, 2]) {
    const item = await choose(alice, `part-${n}.bin`, Buffer.alloc(90000, n));
    assert.match(await item.getAttribute('class'), /done/);
  }
  // 180 kB stored (uploads waiting to be sent count): 90 kB more would pass 250 kB.
  const item = await choose(alice, 'part-3.bin', Buffer.alloc(90000, 3));
  assert.match(await item.getAttribute('class'), /failed/);
  assert.match(await item.locator('.upload-status').textContent(), /over your quota of 250000/);
  assert.equal(sent.length, 3, 'the third was sent, and its refusal read');
  // Chromium logs the refused request itself; nothing else went wrong.
  assert.deepEqual(alice.problems.splice(0),
    ['console: Failed to load resource: the server responded with a status of 413 (Payload Too Large)']);
  await clearUploads(alice);
});

test('an HTML file named .png is offered as a download, never shown as an image', async () => {
  const disguised = Buffer.from('<!DOCTYPE html><html><body><script>alert(1)</script></body></html>');
  await choose(alice, 'cat.png', disguised, 'image/png');
  await alice.getByLabel('Message', { exact: true }).fill('un chat');
  await alice.getByLabel('Message', { exact: true }).press('Enter');
  const msg = bob.locator('#message-list li.msg', { hasText: 'un chat' }).last();
  const link = msg.locator('a.att-file');
  await link.waitFor();
  assert.equal(await link.locator('.att-name').textContent(), 'cat.png');
  assert.match(await link.locator('.att-meta').textContent(), / · application\/octet-stream$/);
  assert.equal(await msg.locator('button.att-image, img').count(), 0, 'no image is shown');
  assert.deepEqual(alice.problems.concat(bob.problems), []);
});

test('a file is read by the room\'s members only, and by nobody once its message is deleted', async () => {
  const uploaded = alice.waitForResponse((r) => r.request().method() === 'POST' && r.url().includes('/api/files'));
  await choose(alice, 'plan.txt', Buffer.from('le plan secret\n'), 'text/plain');
  const { id } = await (await uploaded).json();
  await alice.getByLabel('Message', { exact: true }).fill('le plan');
  await alice.getByLabel('Message', { exact: true }).press('Enter');
  const msg = bob.locator('#message-list li.msg', { hasText: 'le plan' }).last();
  await msg.locator('a.att-file').waitFor();

  assert.equal(await readAs(bob, id), 200, 'a member reads it');
  assert.equal(await readAs(carol, id), 404, 'a non-member does not');

  const mine = alice.locator('#message-list li.msg', { hasText: 'le plan' }).last();
  const messageId = await mine.getAttribute('data-id');
  await mine.hover();
  await mine.locator('.msg-actions [data-op="delete"]').click();
  await alice.getByRole('dialog', { name: 'Delete the message' }).getByRole('button', { name: 'Delete' }).click();
  await bob.locator(`#message-list li.msg.deleted[data-id="${messageId}"]`).waitFor();
  assert.equal(await bob.locator(`#message-list li.msg[data-id="${messageId}"] a.att-file`).count(), 0,
    'the deleted message shows no file');
  assert.equal(await readAs(bob, id), 404, 'a member no longer reads it');
  assert.equal(await readAs(alice, id), 404, 'nor does its uploader');
});
