// Drafts: what is typed belongs to its room or conversation, kept in the browser's
// storage.

import { $ } from './dom.js';
import { state } from './state.js';
import { TOKEN_KEY } from './auth.js';
import { autosize } from './compose.js';

// ----- Texts kept for the signed-in user ------------------------------------------------
//
// Kept in the storage that holds the session token, so they survive a reload exactly
// when the session does, for the same user only; signing out forgets them. Drafts (below)
// and declined join requests (rooms.js) are kept so.

/** The storage that holds the session token (what is kept for this user lives there). */
function tokenStorage() {
  try {
    return localStorage.getItem(TOKEN_KEY) !== null ? localStorage : sessionStorage;
  } catch {
    return null;
  }
}

/** Texts by key for the signed-in user, at most `max` (the oldest set goes first),
 *  stored under `storageKey` as `{ user, [field]: { key: text } }`, loaded when first
 *  needed. A function declaration (not a class): modules that import one another can
 *  make theirs while this one is still being evaluated. */
export function keptTexts(storageKey, max, field) {
  let map = null;
  const all = () => {
    if (map) return map;
    const loaded = new Map();
    if (!state.me) return loaded; // not signed in yet: nothing to load, nothing kept
    try {
      const saved = JSON.parse(tokenStorage()?.getItem(storageKey) || 'null');
      if (saved && saved.user === state.me.username) {
        for (const [key, text] of Object.entries(saved[field] || {})) {
          if (typeof text === 'string') loaded.set(key, text);
        }
      }
    } catch {
      /* nothing usable stored */
    }
    map = loaded;
    return map;
  };
  const save = () => {
    if (!state.me) return;
    try {
      tokenStorage()?.setItem(storageKey, JSON.stringify({ user: state.me.username, [field]: Object.fromEntries(all()) }));
    } catch {
      /* storage full or unavailable: kept for this page only */
    }
  };
  return {
    has: (key) => all().has(key),
    get: (key) => all().get(key),
    set(key, text) {
      const texts = all();
      texts.delete(key);
      texts.set(key, text);
      while (texts.size > max) texts.delete(texts.keys().next().value);
      save();
    },
    delete(key) {
      if (all().delete(key)) save();
    },
    /** At sign-out: forgotten here and in storage. */
    forget() {
      map = null;
      try {
        sessionStorage.removeItem(storageKey);
        localStorage.removeItem(storageKey);
      } catch {
        /* nothing stored */
      }
    },
  };
}

// ----- Drafts: what is typed belongs to its room or conversation ------------------------
//
// The composer's text is kept per conversation: switching away and back restores it, and
// it never follows the user into another room (where one Enter would post it there). It
// is kept in the storage that holds the session token, so a draft survives a reload
// exactly when the session does, for the same user only; signing out forgets them all.

const DRAFTS_MAX = 50; // conversations with a draft kept; the oldest goes first
const drafts = keptTexts('salon.drafts', DRAFTS_MAX, 'drafts'); // conversation key -> text
let draftKey = null; // the conversation the composer's text belongs to

export function keepDraft() {
  if (!draftKey || !state.me) return;
  const text = $('composer-input').value;
  if (text) drafts.set(draftKey, text);
  else drafts.delete(draftKey);
}

/** The composer now writes in conversation `key`: its draft, or nothing. */
export function switchDraft(key) {
  if (key === draftKey) return;
  draftKey = key;
  $('composer-input').value = drafts.get(key) || '';
  autosize();
}

export function dropDrafts() {
  drafts.forget();
  draftKey = null;
  $('composer-input').value = '';
}
