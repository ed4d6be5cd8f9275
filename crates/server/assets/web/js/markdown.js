// Message text: a safe subset of Markdown (markdown-it and DOMPurify, the only path
// from a message's text to DOM nodes), links that show where they go, mentions
// highlighted, snippets.

import { h } from './dom.js';
import { state } from './state.js';
import { memberAlias } from './compose.js';

// ----- Message text: a safe subset of Markdown --------------------------------------------

/** markdown-it with raw HTML off, links made from URLs, and only the constructs a chat
 *  needs: no headings, tables, images, rules or reference definitions; and DOMPurify.
 *  Made when first needed: the vendored scripts run before the modules, but nothing
 *  touches them while the modules load. */
let libs = null;
function libraries() {
  if (libs) return libs;
  const md = (() => {
    if (typeof window.markdownit !== 'function') return null;
    const it = window.markdownit({ html: false, linkify: true, breaks: true, typographer: false });
    it.disable(['heading', 'lheading', 'table', 'image', 'hr', 'reference', 'html_block', 'html_inline']);
    it.normalizeLinkText = linkText(it.normalizeLinkText.bind(it), it.normalizeLink.bind(it));
    return it;
  })();
  const purify = window.DOMPurify && window.DOMPurify.isSupported ? window.DOMPurify : null;
  // Addresses in a link's text, with or without a scheme ("bank.example.com" too), for
  // `showRealHost`: a second linkify-it, fuzzy (markdown-it's, which makes the links of a
  // message, finds only URLs with a scheme and e-mail addresses).
  const addresses = md ? new md.linkify.constructor().set({ fuzzyLink: true }) : null;
  libs = { md, purify, addresses };
  return libs;
}

// ----- Links that show where they go ------------------------------------------------------

/** A host name with a punycode label (`xn--…`): an internationalized name, which may be
 *  written in letters that look like another site's (`аррӏе.com`, Cyrillic). */
const PUNYCODE = /(?:^|\.)xn--/i;

/** Invisible and direction-changing characters (U+202E…), which decoding a URL's `%E2%80%AE`
 *  would put in its text and which can show it reversed. */
const FORMAT_CHAR = /\p{Cf}/u;

/** The host of an address as written (`https://…`, `mailto:…@…`, or a bare host),
 *  lower-cased without a trailing dot; '' if none. */
function hostOf(url) {
  const m = /^(?:[a-z][a-z0-9+.-]*:(?:\/\/)?)?(?:[^/?#@\s]*@)?([^/?#:@\s]+)/i.exec(url);
  return m ? m[1].toLowerCase().replace(/\.$/, '') : '';
}

/**
 * markdown-it's `normalizeLinkText` (the text of a link it makes from a URL) decodes a
 * punycode host for display: `https://xn--80ak6aa92e.com` would read `https://аррӏе.com`,
 * like apple.com, while the link goes to the punycode host (a security review found it).
 * When the link's real host is punycode, the text is the link's address itself (as typed
 * for an ASCII URL; a URL typed in Unicode letters shows its punycode host, where the
 * browser goes); so too when decoding would put invisible or bidirectional characters in
 * it. Any other URL reads as markdown-it shows it (`%C3%A9` as `é`).
 */
function linkText(shown, real) {
  return (url) => {
    const text = shown(url);
    const href = real(url);
    return PUNYCODE.test(hostOf(href)) || FORMAT_CHAR.test(text) ? href : text;
  };
}

/**
 * A link whose text names another address than where it goes
 * (`[https://bank.example.com](https://evil.example.net)`, or a name in letters that look
 * like another's) shows its real host after the text, inside the link: everyone sees it,
 * on a phone too (a `title` shows only on hover), and a screen reader reads it as part of
 * the link's name: "https://bank.example.com (goes to evil.example.net)". Links made from
 * a URL (their text is the address) and texts that name no address are left as they are.
 * The added part is styled (`.link-real`), which no message's own text can be.
 */
function showRealHost(a, addresses) {
  let real;
  try {
    const u = new URL(a.href);
    real = u.protocol === 'mailto:' ? hostOf(u.href) : u.hostname.toLowerCase().replace(/\.$/, '');
  } catch {
    return;
  }
  if (!real) return;
  const named = addresses.match(a.textContent) || [];
  if (!named.some((n) => hostOf(n.url) !== real)) return;
  a.append(' ', h('span', { class: 'link-real', text: `(goes to ${real})` }));
}

/** What the sanitizer keeps of markdown-it's output: exactly what the enabled rules make. */
const PURIFY = {
  ALLOWED_TAGS: ['p', 'br', 'strong', 'em', 's', 'code', 'pre', 'blockquote', 'ul', 'ol', 'li', 'a'],
  ALLOWED_ATTR: ['href', 'start'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};

/** Texts rendered and sanitized together by `formattedTogether`, each taken once by
 *  `formatted`: text -> its fragments (the same text may be there more than once). */
let together = null;

/** Texts formatted ahead by `formatAhead`, for the draw that follows (same shape). */
let ahead = null;

/** The texts rendered and sanitized in one pass (see formattedTogether), as a map of
 *  text -> fragments; null if the libraries are missing or the pass did not give one
 *  section per text (each is then sanitized on its own when drawn). */
function formatAll(texts) {
  const { md, purify } = libraries();
  if (!md || !purify || !texts.length) return null;
  const html = texts.map((t) => `<section>${md.render(t)}</section>`).join('');
  const all = purify.sanitize(html, { ...PURIFY, ALLOWED_TAGS: [...PURIFY.ALLOWED_TAGS, 'section'] });
  const sections = [...all.childNodes];
  if (sections.length !== texts.length || !sections.every((s) => s.nodeName === 'SECTION')) return null;
  const out = new Map();
  sections.forEach((s, i) => {
    const frag = document.createDocumentFragment();
    frag.append(...s.childNodes);
    const list = out.get(texts[i]);
    if (list) list.push(frag);
    else out.set(texts[i], [frag]);
  });
  return out;
}

/** Runs `draw` (which calls `formatted` for these texts) with the texts rendered and
 *  sanitized in one pass: a page of history is 50 messages, and DOMPurify parses a
 *  document per call, which cost more than drawing the messages (issue 15, item 8).
 *  Each text is delimited by a <section> of ours: markdown-it escapes all raw HTML
 *  (`html: false`), so no text can open or close one. If the sanitized result does not
 *  have one section per text, each is sanitized on its own, as without this. Texts
 *  formatted ahead (`formatAhead`) are not formatted again. */
export function formattedTogether(texts, draw) {
  const left = ahead ? texts.filter((t) => !(ahead.get(t) || []).length) : texts;
  if (left.length > 1) together = formatAll(left);
  try {
    draw();
  } finally {
    together = null;
  }
}

/** Formats `texts` now, for a draw in a later task (`withAhead`): a page of history is
 *  formatted in the task that receives it and drawn in the next, so that neither task
 *  holds the page for the whole of the work (issue 15, item 8). */
export function formatAhead(texts) {
  ahead = texts.length > 1 ? formatAll(texts) : null;
}

/** Runs `draw` with what `formatAhead` prepared, which is dropped afterwards (what the
 *  draw did not use included: a view switched meanwhile). */
export function withAhead(draw) {
  try {
    draw();
  } finally {
    ahead = null;
  }
}

/** The next fragment prepared for `text`, if any. */
function prepared(text) {
  for (const map of [together, ahead]) {
    const list = map && map.get(text);
    if (list && list.length) return list.shift();
  }
  return null;
}

/** A message's text as DOM nodes: Markdown rendered, sanitized, links opened in a new
 *  tab without referrer or opener (and showing their real host when their text names
 *  another), mentions highlighted. Without the libraries (a page that could not load
 *  them), the plain text. */
export function formatted(text, m) {
  const { md, purify, addresses } = libraries();
  if (!md || !purify) return null;
  const frag = prepared(text) || purify.sanitize(md.render(text), PURIFY);
  for (const a of frag.querySelectorAll('a')) {
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    showRealHost(a, addresses);
  }
  // markdown-it ends blocks with newlines: not part of the text people read.
  for (const n of [...frag.childNodes]) {
    if (n.nodeType === Node.TEXT_NODE && !n.data.trim()) n.remove();
  }
  if (m) highlightMentions(frag, m);
  return frag;
}

/** The mentions of a room message as they appear in its text (`@Alias`, `@username`,
 *  `@room`), the longest first. */
function mentionLabels(m) {
  const out = [];
  const me = state.me ? state.me.username : null;
  if (m.mention_room) out.push({ label: '@room', me: true });
  for (const u of m.mentions || []) {
    const alias = memberAlias(m.room, u);
    out.push({ label: `@${alias}`, me: u === me });
    if (alias.toLowerCase() !== u.toLowerCase()) out.push({ label: `@${u}`, me: u === me });
  }
  return out.sort((a, b) => b.label.length - a.label.length);
}

/** Wraps each mention in the text (outside code and links) in a highlighted span. */
function highlightMentions(root, m) {
  const labels = mentionLabels(m);
  if (!labels.length) return;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const nodes = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!(n.parentElement && n.parentElement.closest('code, pre, a'))) nodes.push(n);
  }
  for (let rest of nodes) {
    for (;;) {
      const lower = rest.data.toLowerCase();
      let best = null;
      for (const l of labels) {
        const at = lower.indexOf(l.label.toLowerCase());
        if (at >= 0 && (!best || at < best.at)) best = { at, l };
      }
      if (!best) break;
      const hit = rest.splitText(best.at);
      rest = hit.splitText(best.l.label.length);
      hit.replaceWith(h('span', { class: `mention${best.l.me ? ' me' : ''}` }, hit.data));
    }
  }
}

export const mentionsMe = (m) => !!state.me && !!m.room
  && (!!m.mention_room || (m.mentions || []).includes(state.me.username));

/** The beginning of a text, on one line. */
export function snippet(text, n = 120) {
  const t = text.replace(/\s+/g, ' ').trim();
  const chars = [...t];
  return chars.length > n ? `${chars.slice(0, n).join('')}…` : t;
}
