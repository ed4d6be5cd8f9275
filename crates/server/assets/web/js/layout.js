// Layout: phone-sized windows show one pane at a time.

import { $ } from './dom.js';

// ----- Layout (phone-sized windows show one pane at a time) ------------------------------

export function setPane(pane) {
  $('layout').dataset.pane = pane;
  $('nav-toggle').setAttribute('aria-expanded', String(pane === 'nav'));
  $('people-toggle').setAttribute('aria-expanded', String(pane === 'people'));
}

export function togglePane(pane) {
  setPane($('layout').dataset.pane === pane ? 'main' : pane);
}
