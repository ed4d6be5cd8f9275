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

// Icons: drawn in the text colour by app.css (`.icon-NAME`, a mask made of
// /icons/NAME.svg), so that no UI glyph depends on a colour emoji font (issue 15, item 13).

/** A small icon (decorative: hidden from screen readers): one element, drawn by app.css. */
export function icon(name) {
  const el = document.createElement('span');
  el.className = `icon icon-${name}`;
  el.setAttribute('aria-hidden', 'true');
  return el;
}

/** Puts its icon in every element of the page marked `data-icon`. */
export function fillIcons(root = document) {
  for (const el of root.querySelectorAll('[data-icon]')) el.replaceChildren(icon(el.dataset.icon));
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}
