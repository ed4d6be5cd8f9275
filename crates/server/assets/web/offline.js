// The offline screen (offline.html, served by the service worker when the server cannot
// be reached): tries the server again every few seconds, when the browser says it is back
// online, or on demand, and reloads into the app as soon as the server answers.
'use strict';

(() => {
  const RETRY_MS = 5000;
  let trying = false;

  async function attempt(byHand) {
    if (trying) return;
    trying = true;
    const status = document.getElementById('offline-status');
    if (byHand) status.textContent = 'Trying…';
    try {
      const response = await fetch('/healthz', { cache: 'no-store' });
      if (response.ok) {
        status.textContent = 'The server is back. Opening Salon…';
        window.location.reload();
        return;
      }
    } catch {
      /* still unreachable */
    } finally {
      trying = false;
    }
    status.textContent = 'Still unreachable. Trying again every few seconds…';
  }

  function init() {
    document.getElementById('offline-retry').addEventListener('click', () => attempt(true));
    window.addEventListener('online', () => attempt(false));
    setInterval(() => attempt(false), RETRY_MS);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
