// Drafts: what is typed belongs to its room or conversation, kept in the browser's
// storage.

import { $ } from './dom.js';
import { state } from './state.js';
import { TOKEN_KEY } from './auth.js';
import { autosize } from './compose.js';

// ----- Drafts: what is typed belongs to its room or conversation ------------------------
//
// The composer's text is kept per conversation: switching away and back restores it, and
// it never follows the user into another room (where one Enter would post it there). It
// is kept in the storage that holds the session token, so a draft survives a reload
// exactly when the session does, for the same user only; signing out forgets them all.

const DRAFTS_KEY = 'salon.drafts';
const DRAFTS_MAX = 50; // conversations with a draft kept; the oldest goes first
let drafts = null; // Map: conversation key -> text (loaded when first needed)
let draftKey = null; // the conversation the composer's text belongs to

/** The storage that holds the session token (what is kept for this user lives there). */
export function draftStorage() {
  try {
    return localStorage.getItem(TOKEN_KEY) !== null ? localStorage : sessionStorage;
  } catch {
    return null;
  }
}

function loadDrafts() {
  if (drafts) return drafts;
  drafts = new Map();
  try {
    const saved = JSON.parse(draftStorage()?.getItem(DRAFTS_KEY) || 'null');
    if (saved && state.me && saved.user === state.me.username) {
      for (const [key, text] of Object.entries(saved.drafts || {})) {
        if (typeof text === 'string') drafts.set(key, text);
      }
    }
  } catch {
    /* nothing usable stored */
  }
  return drafts;
}

export function keepDraft() {
  if (!draftKey || !state.me) return;
  const all = loadDrafts();
  const text = $('composer-input').value;
  all.delete(draftKey);
  if (text) all.set(draftKey, text);
  while (all.size > DRAFTS_MAX) all.delete(all.keys().next().value);
  try {
    draftStorage()?.setItem(DRAFTS_KEY, JSON.stringify({ user: state.me.username, drafts: Object.fromEntries(all) }));
  } catch {
    /* storage full or unavailable: the draft stays for this page only */
  }
}

/** The composer now writes in conversation `key`: its draft, or nothing. */
export function switchDraft(key) {
  if (key === draftKey) return;
  draftKey = key;
  $('composer-input').value = loadDrafts().get(key) || '';
  autosize();
}

export function dropDrafts() {
  drafts = null;
  draftKey = null;
  $('composer-input').value = '';
  try {
    sessionStorage.removeItem(DRAFTS_KEY);
    localStorage.removeItem(DRAFTS_KEY);
  } catch {
    /* nothing stored */
  }
}
