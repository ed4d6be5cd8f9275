// Files through the page (issue 14): uploads by the button with a progress bar, by pasting
// an image and by dropping files on the conversation; cancelling an upload, and removing a
// finished one from the server; an image's inline preview seen by another member and its
// full-size view; other files offered as
// downloads with their name, size and type, read with the session token (never a cookie,
// never the token in a URL).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { WAIT, launchBrowser, openPage, openRoom, register, room, screenshot, testServer, until } from './helpers.mjs';

let server;
let browser;
let alice;
let bob;

// A 2×2 PNG (red, green, blue, white), base64.
const PNG_2X2 = 'iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEklEQVR4nGP4z8DAAMIM/4EAAB/uBfsL2WiLAAAAAElFTkSuQmCC';

before(async () => {
  server = await testServer();
  browser = await launchBrowser();
  alice = await openPage(browser, server.url);
  await register(alice, 'alice');
  bob = await openPage(browser, server.url);
  await register(bob, 'bob');
  for (const page of [alice, bob]) {
    await room(page, 'Blabla').getByRole('button', { name: 'Join Blabla' }).click();
    await openRoom(page, 'Blabla');
  }
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Polls `check` (in this process) until it holds, at most `WAIT`. */
async function waitFor(check, what) {
  const deadline = Date.now() + WAIT;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The last message of the open conversation carrying a file with this name. */
const withFile = (page, name) => page.locator('#message-list li.msg', {
  has: page.locator('.attachments', { hasText: name }),
}).last();

/** Makes the page upload through a DataTransfer, as a drop or a paste would. */
function dispatchFiles(page, kind, files) {
  return page.evaluate(async ({ kind, files }) => {
    const dt = new DataTransfer();
    for (const f of files) {
      let bytes;
      if (f.canvas) {
        // A picture as a screenshot paste gives one: drawn, then encoded as PNG.
        const canvas = new OffscreenCanvas(f.canvas.w, f.canvas.h);
        const g = canvas.getContext('2d');
        g.fillStyle = '#2a6'; g.fillRect(0, 0, f.canvas.w, f.canvas.h);
        g.fillStyle = '#fd3'; g.fillRect(f.canvas.w / 4, f.canvas.h / 4, f.canvas.w / 2, f.canvas.h / 2);
        bytes = await canvas.convertToBlob({ type: 'image/png' });
      } else if (f.base64) {
        bytes = Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0));
      } else {
        bytes = new TextEncoder().encode(f.text);
      }
      dt.items.add(new File([bytes], f.name, { type: f.type }));
    }
    if (kind === 'paste') {
      const ev = new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true });
      document.getElementById('composer-input').dispatchEvent(ev);
    } else {
      const target = document.getElementById('messages');
      target.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  }, { kind, files });
}

test('a file chosen with the button uploads with a progress bar and is offered as a download', async () => {
  const report = Buffer.from('quarterly numbers\n'.repeat(20000)); // 360 kB
  await alice.locator('#attach-input').setInputFiles({ name: 'report.txt', mimeType: 'text/plain', buffer: report });
  const item = alice.locator('#attach-list li.upload', { hasText: 'report.txt' });
  await item.waitFor();
  await alice.locator('#attach-list li.upload.done', { hasText: 'report.txt' }).waitFor();
  await until(alice, () => !document.querySelector('#attach-list progress'));
  await alice.getByLabel('Message', { exact: true }).fill('the report');
  await alice.getByLabel('Message', { exact: true }).press('Enter');
  await until(alice, () => document.getElementById('attach-list').hidden);

  const link = withFile(bob, 'report.txt').locator('a.att-file');
  await link.waitFor();
  assert.equal(await link.locator('.att-name').textContent(), 'report.txt');
  assert.match(await link.locator('.att-meta').textContent(), /^360 kB · text\/plain$/);
  const [download] = await Promise.all([bob.waitForEvent('download'), link.click()]);
  assert.equal(download.suggestedFilename(), 'report.txt');
  assert.ok(download.url().startsWith('blob:'), 'read with the token into a blob, not a URL with the token');
  const saved = await download.createReadStream();
  const chunks = [];
  for await (const c of saved) chunks.push(c);
  assert.equal(Buffer.concat(chunks).length, report.length);
  // The page never put the token in a URL or a cookie.
  assert.equal(await bob.evaluate(() => document.cookie), '');
  await screenshot(bob, 'files-download');
});

test('the progress bar moves while uploading, and cancelling an upload halfway leaves nothing on the server', async () => {
  // The page's uploads go at 64 KiB/s, so that 512 KiB take seconds: the bar moves, the
  // server holds the upload in progress (a temporary file), and it is cancelled halfway.
  // The server's temporary files: one more while the upload is in progress.
  assert.ok(server.dataDir, 'the server\'s data directory (SALON_DATA_DIR with SALON_URL)');
  const tmp = path.join(server.dataDir, 'files', 'tmp');
  const before = readdirSync(tmp).length;
  const cdp = await alice.context().newCDPSession(alice);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 64 * 1024,
  });
  try {
    await alice.locator('#attach-input').setInputFiles({ name: 'slow.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(512 * 1024, 7) });
    const item = alice.locator('#attach-list li.upload', { hasText: 'slow.bin' });
    await item.locator('progress').waitFor();
    await until(alice, () => {
      const bar = document.querySelector('#attach-list li.upload progress');
      return bar && bar.value > 0 && bar.value < bar.max;
    });
    await waitFor(() => readdirSync(tmp).length === before + 1, 'the server storing the upload');
    await item.getByRole('button', { name: 'Cancel the upload of slow.bin' }).click();
    await until(alice, () => document.getElementById('attach-list').hidden);
    assert.equal(await alice.locator('#attach-list li.upload').count(), 0);
    // The request is aborted: the server drops what it had, and nothing is stored.
    await waitFor(() => readdirSync(tmp).length === before, 'the temporary file removed');
  } finally {
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
    });
    await cdp.detach();
  }
});

test('a finished upload taken off the message is removed from the server', async () => {
  // Content no other test uploads, so its stored bytes are found by their hash.
  const bytes = Buffer.from(`taken off ${Date.now()}\n`);
  const sha = createHash('sha256').update(bytes).digest('hex');
  const stored = path.join(server.dataDir, 'files', sha.slice(0, 2), sha);
  await alice.locator('#attach-input').setInputFiles({ name: 'draft.txt', mimeType: 'text/plain', buffer: bytes });
  await alice.locator('#attach-list li.upload.done', { hasText: 'draft.txt' }).waitFor();
  assert.ok(existsSync(stored), 'the upload is stored');
  await alice.getByRole('button', { name: 'Remove draft.txt' }).click();
  await until(alice, () => document.getElementById('attach-list').hidden);
  // The page asked the server to remove it: its bytes go at once, not after 24 hours.
  await waitFor(() => !existsSync(stored), 'the removed upload\'s bytes gone from the server');
  assert.deepEqual(alice.problems, []);
});

test('a pasted image and a dropped image are previewed inline for another member, with a full-size view', async () => {
  await alice.getByLabel('Message', { exact: true }).click();
  await dispatchFiles(alice, 'paste', [{ name: 'pasted.png', type: 'image/png', canvas: { w: 640, h: 360 } }]);
  await alice.locator('#attach-list li.upload.done', { hasText: 'pasted.png' }).waitFor();
  await dispatchFiles(alice, 'drop', [
    { name: 'dropped.png', type: 'image/png', base64: PNG_2X2 },
    { name: 'notes.md', type: 'text/markdown', text: '# notes\n' },
  ]);
  await alice.locator('#attach-list li.upload.done', { hasText: 'dropped.png' }).waitFor();
  await alice.locator('#attach-list li.upload.done', { hasText: 'notes.md' }).waitFor();
  // No text: files alone make a message.
  await alice.getByRole('button', { name: 'Send' }).click();

  const msg = withFile(bob, 'notes.md');
  await msg.waitFor();
  const thumbs = msg.locator('button.att-image img');
  assert.equal(await thumbs.count(), 2);
  // The previews are the server's thumbnails (at most 320 wide), read into blob: URLs.
  await until(bob, () => {
    const [pasted, dropped] = [...document.querySelectorAll('#message-list .att-thumb')].slice(-2);
    return [pasted, dropped].every((img) => img.src.startsWith('blob:') && img.complete)
      && pasted.naturalWidth === 320 && pasted.naturalHeight === 180 && dropped.naturalWidth === 2;
  });
  assert.deepEqual(await thumbs.evaluateAll((imgs) => imgs.map((i) => i.alt)), ['pasted.png', 'dropped.png']);
  assert.match(await msg.locator('a.att-file .att-meta').textContent(), /^8 B · /);

  await msg.locator('button.att-image').first().click();
  const dialog = bob.locator('#image-dialog');
  await dialog.waitFor();
  assert.equal(await dialog.locator('#image-title').textContent(), 'pasted.png');
  await until(bob, () => {
    const img = document.getElementById('image-full');
    return img.src.startsWith('blob:') && img.complete && img.naturalWidth === 640;
  });
  await screenshot(bob, 'files-full-size');
  await bob.keyboard.press('Escape');
  await until(bob, () => !document.getElementById('image-dialog').open);
  await screenshot(bob, 'files-previews');
  assert.deepEqual(alice.problems.concat(bob.problems), []);
});
