// Installable app: registers the service worker (`/sw.js`), which makes the client
// installable as a desktop or phone app and shows the offline screen when the server
// cannot be reached. It caches nothing but that screen (see sw.js). Where service workers
// are unavailable (an insecure origin, a certificate the browser does not trust), the
// client works the same, only without install and offline screen.

export function registerServiceWorker() {
  if (!('serviceWorker' in navigator) || !window.isSecureContext) return;
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {
    /* not installable here (e.g. an untrusted certificate); nothing else changes */
  });
}
