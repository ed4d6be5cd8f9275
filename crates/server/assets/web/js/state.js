// State: the shared `state` object (any value more than one module assigns lives
// here), conversations (`conv`, `convKey`, `addMessages`), room and alias look-ups.

import { holdBack } from './search.js';

// Message ids are integers below 2^53 (docs/PROTOCOL.md), exact as JavaScript numbers.
export const idCmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

// ----- State ----------------------------------------------------------------------------

export const state = {
  me: null, // account
  rooms: [], // RoomInfo, in the server's order
  people: new Map(), // username -> {username, alias, status}
  convs: new Map(), // key -> conversation
  view: null, // {kind: 'room', name} | {kind: 'dm', user}
  adminOpen: false,
  requests: [], // pending join requests (administrators)
  accounts: [], // accounts waiting for approval (administrators)
  registration: 'open', // the server's registration mode (hello)
  sessions: [], // connected sessions (administrators)
  signedIn: false,
  everSignedIn: false,
  maxChars: 4000,
  uploadMax: null, // the largest file the server stores, in bytes (Welcome)
  typing: new Map(), // conversation key -> Map(username -> {alias, until})
  members: new Map(), // lower-case room name -> Map(username -> alias)
  replyTo: null, // {key, quote}: the message the composer replies to
  editing: null, // {id, where: 'main' | 'thread', draft}: a message being edited
  thread: null, // the open thread panel (openThread)
  backlog: 0, // private messages received while offline still to come (Welcome)
  presenceStale: false, // disconnected: statuses are unknown until `who` answers again
};

export const convKey = (view) => (view.kind === 'room' ? `room:${view.name}` : `dm:${view.user}`);

export function conv(key) {
  let c = state.convs.get(key);
  if (!c) {
    c = {
      key,
      msgs: [],
      ids: new Map(), // id -> message (the object in msgs)
      more: true,
      loaded: false,
      loading: false,
      dirty: false, // a message already shown changed: redraw rather than append
      unread: 0, // the server's count (read state), plus live messages since
      mentions: 0,
      lastRead: 0, // id of the last message read (the server's marker)
      notify: null, // rooms: all | mentions | none
      sepAfter: null, // the "new messages" line goes after this id (set when opened)
      toSep: false, // scroll to that line at the next render with messages
      notices: [], // membership notices: {after: message id, text, ts}
      last: null,
    };
    state.convs.set(key, c);
  }
  return c;
}

/** Adds messages (any order); one already present takes the new copy's fields (a
 *  history page fetched again after a reconnect brings edits, deletions, reactions).
 *  True if any was new. */
export function addMessages(c, msgs) {
  let added = false;
  for (const m of msgs) {
    const known = c.ids.get(m.id);
    if (known) {
      if (JSON.stringify({ ...known, event: undefined }) !== JSON.stringify({ ...m, event: undefined })) {
        for (const k of Object.keys(known)) if (!(k in m)) delete known[k];
        Object.assign(known, m);
        c.dirty = true;
      }
      continue;
    }
    if (holdBack(c, m)) continue; // past the end of a search result's window (Search)
    c.ids.set(m.id, m);
    c.msgs.push(m);
    added = true;
  }
  if (added) {
    c.msgs.sort((a, b) => idCmp(a.id, b.id));
    const last = c.msgs[c.msgs.length - 1].id;
    if (!c.newer || !c.last || last > c.last) c.last = last;
  }
  return added;
}

export function roomInfo(name) {
  const lower = name.toLowerCase();
  return state.rooms.find((r) => r.name.toLowerCase() === lower) || null;
}

export function aliasOf(username) {
  const p = state.people.get(username);
  return p ? p.alias : username;
}
