// Search (issue 14): the search panel and its results, and the window of history a
// result opens (with the jump bar back to the latest).

import { $, clear, h } from './dom.js';
import { fmtFull, sentence } from './format.js';
import { addMessages, aliasOf, conv, convKey, roomInfo, state } from './state.js';
import { request } from './net.js';
import { showError } from './toast.js';
import { detached, newBelow, openView, renderMessages, renderNewer, showView } from './conversation.js';
import { sleep } from './messaging.js';
import { setPane } from './layout.js';

// ----- Search (issue 14): a panel of results; a result opens its conversation there -------
//
// Requests: at most one in flight. Every change of the query or a filter bumps
// `search.gen` and (re)starts a 250 ms debounce; a reply whose generation is old is
// dropped, and a search wanted while one was in flight is sent when it answers.
//
// Opening a result loads a *window* around the message (`history` with `before` = id + 1,
// and with `after` = id) in place of the conversation's messages. While the window does
// not reach the newest message (`c.newer`), messages past its end are held back by
// `addMessages` instead of being appended after a gap, and a bar offers to jump to the
// latest. Scrolling down loads the following pages (`after`); once one says nothing
// newer follows, the held messages are merged and the view is the live one again.
// Leaving the conversation, sending in it, or "Jump to the latest" drops the window.
//
// Hooks in other modules (one line each): `addMessages` (holdBack), `showView`
// (leaveWindow; no "new messages" line at a result), `loadHistory` (a window is not
// reloaded from the latest page), `renderMessages` (windowScroll), `onScroll`
// (windowOnScroll), `onSend` (jumpToLatest), `leaveApp` (resetSearch), `init` (initSearch).

const SEARCH_DEBOUNCE_MS = 250;
const SEARCH_PAGE = 20; // results per page (the server allows 1 to 50)
const CONTEXT_PAGE = 25; // messages loaded on each side of a result
const HELD_MAX = 200; // live messages kept while a window is open (more are refetched)

const search = {
  gen: 0, // bumped by every change of the query or the filters
  busy: false, // a request is in flight
  again: false, // a search was wanted while one was in flight
  timer: null, // the debounce, or the wait after `rate_limited`
  next: null, // the cursor of the next page
  count: 0, // results shown
  here: null, // the conversation "this conversation" means (the one open when opened)
  returnFocus: null, // focused before the panel opened: focused again when it closes
  opening: 0, // counts the results opened: only the last one clicked is shown
};

const narrowScreen = () => window.matchMedia('(max-width: 760px)').matches;
const shownNow = (c) => !state.adminOpen && !!state.view && convKey(state.view) === c.key;
const placeArgs = (view) => (view.kind === 'room' ? { room: view.name } : { with: view.user });

function openSearch() {
  if (!state.signedIn) return;
  const panel = $('search-panel');
  if (panel.hidden) {
    const active = document.activeElement;
    search.returnFocus = active && active !== document.body ? active : $('search-btn');
    panel.hidden = false;
    $('search-btn').setAttribute('aria-expanded', 'true');
    const before = search.here ? convKey(search.here) : null;
    renderSearchScope();
    // Results for "this conversation" were for the one open before.
    if ($('search-scope').value === 'here' && before !== convKey(search.here)) searchChanged();
    const people = $('search-people');
    clear(people);
    for (const p of state.people.values()) people.append(h('option', { value: p.username, label: p.alias }));
  }
  $('search-input').focus();
  $('search-input').select();
}

function closeSearch(restoreFocus = true) {
  const panel = $('search-panel');
  if (panel.hidden) return;
  panel.hidden = true;
  $('search-btn').setAttribute('aria-expanded', 'false');
  const back = search.returnFocus;
  search.returnFocus = null;
  if (!restoreFocus) return;
  if (back && back.isConnected && !back.closest('[hidden]')) back.focus();
  else $('search-btn').focus();
}

/** Signed out: nothing of the previous user's searches stays. */
export function resetSearch() {
  closeSearch(false);
  search.gen += 1;
  clearTimeout(search.timer);
  search.timer = null;
  search.next = null;
  search.here = null;
  for (const id of ['search-input', 'search-author', 'search-since', 'search-until']) $(id).value = '';
  $('search-scope').value = 'all';
  $('search-order').value = 'newest';
  showResults([], false);
  searchStatus('');
  $('jump-latest').hidden = true;
}

/** "This conversation" is the one open when the panel opened. */
function renderSearchScope() {
  search.here = state.view && !state.adminOpen ? { ...state.view } : null;
  const option = $('search-scope').querySelector('option[value="here"]');
  option.disabled = !search.here;
  if (!search.here) {
    option.textContent = 'this conversation';
    if ($('search-scope').value === 'here') $('search-scope').value = 'all';
  } else {
    option.textContent = search.here.kind === 'room' ? `#${search.here.name}` : `Private with ${aliasOf(search.here.user)}`;
  }
}

/** Midnight (local time) of an `<input type="date">` value, plus `days`. */
function dayStart(value, days) {
  const d = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || '');
  return d ? new Date(Number(d[1]), Number(d[2]) - 1, Number(d[3]) + days).getTime() : null;
}

function searchArgs() {
  const args = { query: $('search-input').value.trim(), limit: SEARCH_PAGE };
  if ($('search-scope').value === 'here' && search.here) Object.assign(args, placeArgs(search.here));
  const author = $('search-author').value.trim();
  if (author) args.author = author;
  const since = dayStart($('search-since').value, 0);
  const until = dayStart($('search-until').value, 1); // the whole "to" day
  if (since !== null) args.since = since;
  if (until !== null) args.until = until;
  if ($('search-order').value === 'relevance') args.order = 'relevance';
  return args;
}

function searchChanged() {
  search.gen += 1;
  clearTimeout(search.timer);
  search.timer = setTimeout(() => runSearch(false), SEARCH_DEBOUNCE_MS);
}

function searchStatus(text, error) {
  const el = $('search-status');
  el.textContent = text;
  el.classList.toggle('error', !!error);
}

/** Sends the search (or, `more`, the next page) unless one is in flight. */
function runSearch(more) {
  clearTimeout(search.timer);
  search.timer = null;
  if (search.busy) {
    if (!more) search.again = true;
    return;
  }
  const args = searchArgs();
  if (!args.query) {
    showResults([], false);
    searchStatus('');
    $('search-empty').hidden = true;
    return;
  }
  if (more) {
    if (!search.next) return;
    args.cursor = search.next;
  }
  const gen = search.gen;
  search.busy = true;
  $('search-more').disabled = true;
  $('search-results').setAttribute('aria-busy', 'true');
  if (!more) searchStatus('Searching…');
  request('search', args).then((data) => {
    if (!settled(gen)) return;
    const firstNew = search.count;
    const fromMore = document.activeElement === $('search-more');
    showResults(data.hits || [], more);
    // "More results" may hide itself: focus goes to the first new result.
    if (more && fromMore && data.hits && data.hits.length) $('search-results').querySelectorAll('.search-hit')[firstNew].focus();
    search.next = data.next || null;
    $('search-more').hidden = !search.next;
    $('search-empty').hidden = search.count > 0;
    searchStatus(search.count === 0 ? ''
      : `${search.count}${search.next ? '+' : ''} result${search.count === 1 ? '' : 's'}`);
  }, (err) => {
    if (!settled(gen)) return;
    if (err.code === 'rate_limited') {
      const wait = err.retry_after_ms || 1000;
      searchStatus(`Too many searches: trying again in ${Math.ceil(wait / 1000)} s.`, true);
      search.timer = setTimeout(() => runSearch(more), wait);
      return;
    }
    searchStatus(sentence(err.message || 'The search failed.'), true);
    if (!more) {
      showResults([], false);
      $('search-empty').hidden = true;
    }
  });
}

/** A reply came: true if it is still wanted; else the next search goes. */
function settled(gen) {
  search.busy = false;
  $('search-more').disabled = false;
  $('search-results').removeAttribute('aria-busy');
  if (search.again) {
    search.again = false;
    runSearch(false);
    return false;
  }
  return gen === search.gen;
}

function showResults(hits, append) {
  const list = $('search-results');
  if (!append) {
    clear(list);
    search.count = 0;
    search.next = null;
    $('search-more').hidden = true;
  }
  for (const hit of hits) list.append(hitEl(hit));
  search.count += hits.length;
}

/** The conversation of a result. */
function hitView(hit) {
  if (hit.room) {
    const r = roomInfo(hit.room);
    return { kind: 'room', name: r ? r.name : hit.room };
  }
  const mine = !!state.me && hit.from === state.me.username;
  return { kind: 'dm', user: mine ? hit.to : hit.from };
}

/** A result: where, who, when, and the snippet with the matched words in `<mark>`. */
function hitEl(hit) {
  const view = hitView(hit);
  const snippetEl = h('span', { class: 'search-snippet' });
  for (const f of hit.snippet || []) snippetEl.append(f.hit ? h('mark', { text: f.text }) : document.createTextNode(f.text));
  return h('li', { class: 'search-item' },
    h('button', { type: 'button', class: 'search-hit', 'data-id': hit.id, onclick: () => openHit(hit) },
      h('span', { class: 'search-hit-head' },
        h('span', { class: 'search-place', text: view.kind === 'room' ? `#${view.name}` : `Private with ${aliasOf(view.user)}` }),
        h('span', { class: 'search-author', title: hit.author, text: hit.alias }),
        h('time', { datetime: new Date(hit.ts).toISOString(), text: fmtFull(hit.ts) }),
        hit.edited ? h('span', { class: 'msg-edited', text: '(edited)' }) : null),
      snippetEl));
}

/** Opens a result's conversation at the message, with context on both sides. */
async function openHit(hit) {
  const view = hitView(hit);
  const c = conv(convKey(view));
  const button = document.activeElement;
  const opening = ++search.opening;
  for (let i = 0; c.loading && i < 50; i += 1) await sleep(100); // a page on its way lands first
  if (opening !== search.opening) return;
  if (!(c.loaded && c.ids.has(hit.id))) {
    let pages;
    try {
      pages = await Promise.all([
        request('history', { ...placeArgs(view), before: hit.id + 1, limit: CONTEXT_PAGE }),
        request('history', { ...placeArgs(view), after: hit.id, limit: CONTEXT_PAGE }),
      ]);
    } catch (err) {
      showError(err, 'Could not open the message');
      return;
    }
    if (opening !== search.opening || !state.signedIn) return; // another result was clicked
    const [older, newer] = pages;
    const last = c.last;
    c.windowGen = (c.windowGen || 0) + 1;
    c.msgs = [];
    c.ids = new Map();
    c.held = [];
    c.newer = false;
    addMessages(c, [...(older.messages || []), ...(newer.messages || [])]);
    c.more = !!older.more;
    c.newer = !!newer.more;
    c.windowEnd = c.msgs.length ? c.msgs[c.msgs.length - 1].id : hit.id;
    if (c.newer && last && (!c.last || last > c.last)) c.last = last;
    c.loaded = true;
    c.dirty = true;
    // Membership notices are placed after a message id: those before the window go.
    if (c.msgs.length) c.notices = c.notices.filter((n) => n.after >= c.msgs[0].id);
  }
  c.at = hit.id;
  if (narrowScreen()) closeSearch(false);
  if (shownNow(c)) {
    setPane('main');
    showView();
  } else {
    openView(view);
  }
  // Keyboard users stay in the results (desktop) or go to the message (phone).
  const li = $('message-list').querySelector(`li.msg[data-id="${hit.id}"]`);
  if (!$('search-panel').hidden && button && button.isConnected) button.focus();
  else if (li) li.focus({ preventScroll: true });
}

/** From `addMessages`: a message past the end of a window is held back. */
export function holdBack(c, m) {
  // Compared with the end recorded, not with `c.msgs`, unsorted while messages are added.
  if (!c.newer || m.id <= c.windowEnd) return false;
  if (!c.held.some((x) => x.id === m.id)) c.held.push(m);
  if (c.held.length > HELD_MAX) c.held.shift();
  if (!c.last || m.id > c.last) c.last = m.id;
  if (shownNow(c)) renderJumpBar(c);
  return true;
}

/** Shown in a search result's window, and when the list's window of drawn messages does
 *  not reach the newest ones (paged far back: conversation.js, WINDOW_MAX). */
function renderJumpBar(c) {
  $('jump-latest').hidden = !c.newer && !detached(c);
  const n = c.held && c.held.length ? c.held.length : newBelow(c);
  $('jump-latest-text').textContent = n
    ? `${n} new message${n === 1 ? '' : 's'} below.`
    : 'You are viewing older messages.';
}

/** From `renderMessages`: scrolls to the result opened, or leaves a window where it is
 *  (never "to the bottom", which is not the live end); `keep` (older messages added
 *  above) is left to it. True if it decided. */
export function windowScroll(c, keep) {
  renderJumpBar(c);
  if (c.at) {
    const li = $('message-list').querySelector(`li.msg[data-id="${c.at}"]`);
    c.at = null;
    if (li) {
      li.scrollIntoView({ block: 'center' });
      li.classList.remove('flash');
      void li.offsetWidth; // restart the animation
      li.classList.add('flash');
      setTimeout(() => li.classList.remove('flash'), 2000);
    }
    return true;
  }
  return !!c.newer && !keep;
}

/** Drops a conversation's window: it shows its latest messages when next rendered. */
function dropWindow(c) {
  if (!c || !c.newer) return false;
  c.windowGen = (c.windowGen || 0) + 1;
  c.msgs = [];
  c.ids = new Map();
  c.held = [];
  c.newer = false;
  c.loaded = false;
  c.more = true;
  c.dirty = true;
  c.at = null;
  return true;
}

/** From `showView`: the conversation shown before is left. */
export function leaveWindow(key) {
  dropWindow(key ? state.convs.get(key) : null);
  $('jump-latest').hidden = true;
}

/** Back to the live end of the conversation (a page on its way lands first). */
export function jumpToLatest(c) {
  if (!c.newer) {
    if (detached(c) && shownNow(c)) renderMessages(true); // the window back to the end
    return;
  }
  if (c.loading) {
    setTimeout(() => jumpToLatest(c), 100);
    return;
  }
  dropWindow(c);
  if (shownNow(c)) showView();
}

/** From `onScroll`: near the bottom of a window, the next page. */
export function windowOnScroll() {
  if (!state.view || state.adminOpen) return;
  const c = conv(convKey(state.view));
  const box = $('messages');
  // Only when the window drawn reaches the last message loaded (else it is drawn first).
  if (c.newer && !detached(c) && box.scrollHeight - box.scrollTop - box.clientHeight < 300) loadNewer(c, state.view);
}

async function loadNewer(c, view) {
  if (c.loadingNewer || !c.newer || !c.msgs.length) return;
  c.loadingNewer = true;
  const gen = c.windowGen;
  try {
    // No `limit`: the server's default page, as for older pages.
    const data = await request('history', { ...placeArgs(view), after: c.msgs[c.msgs.length - 1].id });
    if (c.windowGen !== gen || !c.newer) return;
    const last = c.last;
    c.newer = false;
    addMessages(c, data.messages || []);
    c.newer = !!data.more;
    c.windowEnd = c.msgs[c.msgs.length - 1].id;
    if (c.newer) {
      if (last && (!c.last || last > c.last)) c.last = last;
    } else {
      // The live end: what arrived meanwhile and is not in the page (fresher) joins.
      addMessages(c, c.held.filter((m) => !c.ids.has(m.id)));
      c.held = [];
    }
    if (shownNow(c)) {
      renderNewer(); // the reading position kept
      setTimeout(windowOnScroll, 0); // a short page may not fill the view
    }
  } catch (err) {
    showError(err, 'Could not load newer messages');
  } finally {
    c.loadingNewer = false;
  }
}

/** Up and down arrows move between results; Home and End go to the first and last. */
function onResultsKey(ev) {
  const hits = [...$('search-results').querySelectorAll('.search-hit')];
  const i = hits.indexOf(document.activeElement);
  let j = null;
  if (ev.key === 'ArrowDown') j = i < 0 ? 0 : Math.min(i + 1, hits.length - 1);
  else if (ev.key === 'ArrowUp') j = i <= 0 ? null : i - 1;
  else if (ev.key === 'Home') j = 0;
  else if (ev.key === 'End') j = hits.length - 1;
  else return;
  ev.preventDefault();
  if (ev.key === 'ArrowUp' && i === 0) $('search-input').focus();
  else if (j !== null && hits[j]) hits[j].focus();
}

export function initSearch() {
  $('search-btn').addEventListener('click', () => ($('search-panel').hidden ? openSearch() : closeSearch()));
  $('search-close').addEventListener('click', () => closeSearch());
  $('search-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    search.gen += 1;
    runSearch(false);
  });
  for (const id of ['search-input', 'search-author']) $(id).addEventListener('input', searchChanged);
  for (const id of ['search-scope', 'search-since', 'search-until', 'search-order']) $(id).addEventListener('change', searchChanged);
  $('search-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'ArrowDown') {
      const first = $('search-results').querySelector('.search-hit');
      if (first) {
        ev.preventDefault();
        first.focus();
      }
    }
  });
  $('search-results').addEventListener('keydown', onResultsKey);
  $('search-more').addEventListener('click', () => runSearch(true));
  $('search-panel').addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.preventDefault(); // a search field would clear itself
      ev.stopPropagation();
      closeSearch();
    }
  });
  $('jump-latest-btn').addEventListener('click', () => {
    if (state.view) jumpToLatest(conv(convKey(state.view)));
    $('composer-input').focus();
  });
  // Ctrl+K (⌘K) anywhere; "/" outside of text fields.
  document.addEventListener('keydown', (ev) => {
    if (!state.signedIn || ev.defaultPrevented) return;
    if (ev.key === 'Escape' && !$('search-panel').hidden && document.activeElement === document.body) {
      closeSearch(); // focus was lost (a button that hid itself)
      return;
    }
    const typing = ev.target.closest && ev.target.closest('input, textarea, select, [contenteditable="true"]');
    if ((ev.key === 'k' || ev.key === 'K') && (ev.ctrlKey || ev.metaKey) && !ev.altKey && !ev.shiftKey) {
      ev.preventDefault();
      openSearch();
    } else if (ev.key === '/' && !typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey && !document.querySelector('dialog[open]')) {
      ev.preventDefault();
      openSearch();
    }
  });
}
