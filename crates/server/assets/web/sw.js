// Salon's service worker: makes the web client installable and shows a clear offline
// screen when the server cannot be reached. It keeps exactly the offline screen's own
// files (SHELL) and nothing else: never API data, files, messages or the app's code, which
// always come from the network (a stale copy of the app speaking to a newer server would
// be worse than the offline screen). The server writes this build's VERSION in, so a new
// build replaces the cached screen.
'use strict';

const VERSION = '__SALON_SHELL_VERSION__';
const CACHE = `salon-offline-${VERSION}`;
const SHELL = ['/offline.html', '/offline.js', '/app.css', '/icon.svg'];

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches.open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((path) => new Request(path, { cache: 'reload' }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(
        names.filter((name) => name.startsWith('salon-') && name !== CACHE).map((name) => caches.delete(name)),
      ))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === 'navigate') {
    // The page from the network; the offline screen only when the network fails.
    event.respondWith(fetch(request).catch(() => offline('/offline.html')));
    return;
  }
  if (SHELL.includes(url.pathname)) {
    event.respondWith(fetch(request).catch(() => offline(url.pathname)));
  }
  // Anything else (the app's modules, /api/, /ws, files) is not touched: the network only.
});

async function offline(path) {
  const cache = await caches.open(CACHE);
  const hit = await cache.match(path);
  return hit || new Response('Salon cannot reach its server.', {
    status: 503,
    headers: { 'Content-Type': 'text/plain; charset=utf-8' },
  });
}
