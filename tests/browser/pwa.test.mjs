// The installable app (issue 15): a web app manifest with icons Chromium accepts, a
// service worker that makes the client installable, keeps nothing but the offline
// screen (never API data or files), and shows that screen when the server is gone,
// reopening Salon by itself once it is back. Uses its own server, which it kills and
// restarts.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  BROWSER_OPTIONS, DESKTOP, launchBrowser, openPage, register, Server, until,
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

/** Waits until the service worker is active and controls the page. */
async function controlled(page) {
  await page.evaluate(() => navigator.serviceWorker.ready);
  await until(page, () => navigator.serviceWorker.controller !== null);
}

test('Chromium finds the client installable: manifest, icons and service worker', async () => {
  const response = await fetch(`${server.url}/manifest.webmanifest`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'application/manifest+json');
  const manifest = await response.json();
  assert.equal(manifest.name, 'Salon');
  assert.equal(manifest.display, 'standalone');
  for (const icon of manifest.icons) {
    const r = await fetch(`${server.url}${icon.src}`);
    assert.equal(r.status, 200, icon.src);
    assert.equal(r.headers.get('content-type'), icon.type, icon.src);
  }

  // A browser profile on disk, as an installed app has (the tests' other contexts are
  // incognito, where Chromium never offers to install).
  const profile = mkdtempSync(path.join(os.tmpdir(), 'salon-pwa-'));
  const context = await chromium.launchPersistentContext(profile, { ...BROWSER_OPTIONS, viewport: DESKTOP });
  try {
    const page = context.pages()[0] || await context.newPage();
    const problems = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    await page.goto(`${server.url}/`);
    const scope = await page.evaluate(async () => (await navigator.serviceWorker.ready).scope);
    assert.equal(scope, `${server.url}/`);
    const cdp = await context.newCDPSession(page);
    const { errors } = await cdp.send('Page.getAppManifest');
    assert.deepEqual(errors, []);
    const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
    assert.deepEqual(installabilityErrors, [], JSON.stringify(installabilityErrors));
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
});

test('the service worker keeps only the offline screen, never API data or files', async () => {
  const page = await openPage(browser, server.url);
  await controlled(page);
  await register(page, 'pauline');
  // Use the API under the worker's eyes: history was loaded, and a file goes up and down.
  const fetched = await page.evaluate(async () => {
    const token = sessionStorage.getItem('salon.token') || localStorage.getItem('salon.token');
    const auth = { Authorization: `Bearer ${token}` };
    const up = await fetch('/api/files?name=secret.txt', { method: 'POST', headers: auth, body: 'confidential' });
    const { id } = await up.json();
    const down = await fetch(`/api/files/${id}`, { headers: auth });
    return { up: up.status, down: down.status, text: await down.text() };
  });
  assert.deepEqual(fetched, { up: 201, down: 200, text: 'confidential' });

  const cached = await page.evaluate(async () => {
    const out = [];
    for (const name of await caches.keys()) {
      const cache = await caches.open(name);
      for (const request of await cache.keys()) out.push(new URL(request.url).pathname);
    }
    return out.sort();
  });
  assert.deepEqual(cached, ['/app.css', '/icon.svg', '/offline.html', '/offline.js']);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('with the server gone, the page shows the offline screen and reopens Salon when it is back', async () => {
  const page = await openPage(browser, server.url);
  await controlled(page);
  await register(page, 'olivier');

  await server.kill();
  await page.reload();
  await page.locator('body[data-screen="offline"]').waitFor();
  await page.getByRole('heading', { level: 1, name: 'Salon cannot reach its server' }).waitFor();
  await page.getByRole('button', { name: 'Try again now' }).click();
  await page.locator('#offline-status', { hasText: 'Still unreachable' }).waitFor();

  await server.restart();
  // The screen notices by itself (it tries every few seconds) and opens the app, where
  // the session resumes without the password.
  await page.locator('body[data-screen="app"]').waitFor({ timeout: 30000 });
  await page.locator('#me').waitFor();
  await page.context().close();
});
