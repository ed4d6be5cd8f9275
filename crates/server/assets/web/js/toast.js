// Toasts: short notices at the top right, clear of the composer, and errors shown as toasts.

import { $, h } from './dom.js';
import { sentence } from './format.js';

// ----- Toasts ---------------------------------------------------------------------------

export function toast(text, opts = {}) {
  const kind = opts.kind || 'info';
  const close = h('button', { type: 'button', 'aria-label': 'Dismiss', text: '×' });
  const el = h(
    'div',
    {
      class: `toast ${kind}`,
      role: kind === 'error' || kind === 'notice' ? 'alert' : 'status',
      'data-kind': kind,
      'data-group': opts.group || null,
    },
    h('div', { class: 'toast-body' }, opts.title ? h('span', { class: 'toast-title', text: opts.title }) : null, text),
    close,
  );
  const remove = () => el.remove();
  close.addEventListener('click', remove);
  $('toasts').append(el);
  const ms = opts.ms ?? (kind === 'error' ? 9000 : kind === 'notice' ? 15000 : 5000);
  if (ms > 0) setTimeout(remove, ms);
  return el;
}

/** Removes the toasts of a group (e.g. 'sanction': a kick or ban notice, stale once the
 *  user signs in again). */
export function dropToasts(group) {
  for (const el of $('toasts').querySelectorAll(`.toast[data-group="${group}"]`)) el.remove();
}

/** Shows a failed request's error: the server's own message, as a sentence. */
export function showError(err, what) {
  let text = err && err.message ? err.message : 'Something went wrong.';
  if (err && err.code === 'rate_limited' && err.retry_after_ms) {
    text += ` (try again in ${Math.ceil(err.retry_after_ms / 1000)} s)`;
  }
  toast(sentence(text), { kind: 'error', title: what });
}
