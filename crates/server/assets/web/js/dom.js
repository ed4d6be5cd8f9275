// DOM helpers: `$` (an element by id), `h` (builds an element; strings become text
// nodes, never HTML) and `clear`.

// ----- DOM helpers ----------------------------------------------------------------------

export const $ = (id) => document.getElementById(id);

/** Builds an element; string children become text nodes (never HTML). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// Icons: small inline SVGs drawn with the text colour, so that no UI glyph depends on a
// colour emoji font (issue 15, item 13). Paths on a 24×24 grid, stroked.
const ICONS = {
  lock: ['M6 11h12v10H6z', 'M8 11V7a4 4 0 0 1 8 0v4'],
  search: ['M11 4a7 7 0 1 1 0 14a7 7 0 1 1 0-14z', 'M20 20l-4-4'],
  bell: ['M6 16v-5a6 6 0 0 1 12 0v5l2 2H4z', 'M10 21h4'],
  clip: ['M20 11l-8 8a5 5 0 0 1-7-7l8.5-8.5a3.5 3.5 0 0 1 5 5L10 17a2 2 0 0 1-3-3l7.5-7.5'],
  file: ['M14 3H6v18h12V7z', 'M14 3v4h4'],
  smile: ['M12 3a9 9 0 1 1 0 18a9 9 0 1 1 0-18z', 'M8 14a4.5 4.5 0 0 0 8 0', 'M9 9.5h.01M15 9.5h.01'],
  reply: ['M9 14L4 9l5-5', 'M4 9h10a6 6 0 0 1 0 12h-3'],
  pencil: ['M4 20l1-5L16 4l4 4L9 19z'],
  trash: ['M4 7h16', 'M9 7V4h6v3', 'M6 7l1 13h10l1-13'],
};

/** A small inline SVG icon (decorative: hidden from screen readers). */
export function icon(name) {
  let svg = iconMade.get(name);
  if (!svg) {
    const ns = 'http://www.w3.org/2000/svg';
    svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('class', `icon icon-${name}`);
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    for (const d of ICONS[name] || []) {
      const path = document.createElementNS(ns, 'path');
      path.setAttribute('d', d);
      svg.append(path);
    }
    iconMade.set(name, svg);
  }
  // A copy: every message draws several (cheaper than building each; issue 15, item 8).
  return svg.cloneNode(true);
}
/** Each icon built once, by name (a handful). */
const iconMade = new Map();

/** Puts its icon in every element of the page marked `data-icon`. */
export function fillIcons(root = document) {
  for (const el of root.querySelectorAll('[data-icon]')) el.replaceChildren(icon(el.dataset.icon));
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}
