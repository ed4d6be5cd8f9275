// Events: `onEvent` applies every event the server pushes to the state and the page;
// what becomes visible when the tab is shown again is read.

import { $ } from './dom.js';
import { fmtTime, sentence } from './format.js';
import { mentionsMe } from './markdown.js';
import { addMessages, conv, convKey, roomInfo, state } from './state.js';
import { acknowledge, conn } from './net.js';
import { toast } from './toast.js';
import { loadPeople } from './session.js';
import { onTyping, typingDone } from './typing.js';
import { declined, openDefault, ownActions, renderRooms, setRoom } from './rooms.js';
import {
  detached, noticeEl, refreshMessages, renderDms, renderHeader, renderMessages,
} from './conversation.js';
import { settleOwn } from './compose.js';
import { applyDelete, applyEdit, applyReaction, copiesOf } from './messaging.js';
import { replyArrived } from './thread.js';
import { applyReadState } from './readstate.js';
import { maybeNotify } from './notify.js';
import { schedulePeople } from './people.js';
import { onAdminPresence, renderRequests } from './admin.js';

let presenceRefresh = null; // pending `who` after a presence refresh hint

// ----- Events ---------------------------------------------------------------------------

export function onEvent(e) {
  if (!state.signedIn) return;
  switch (e.event) {
    case 'message': {
      const view = { kind: 'room', name: e.room };
      const r = roomInfo(e.room);
      if (r) view.name = r.name;
      const c = conv(convKey(view));
      typingDone(c.key, e.author);
      const mine = !!state.me && e.author === state.me.username;
      if (mine) settleOwn(view, e.text, e.attachments);
      if (!addMessages(c, [e])) return;
      replyArrived(c, e);
      if (isCurrent(c)) renderMessages(false);
      else if (!mine) {
        // One's own messages are never unread.
        c.unread += 1;
        if (mentionsMe(e)) c.mentions += 1;
        renderRooms();
      }
      if (!mine) maybeNotify(c, e);
      return;
    }
    case 'direct': {
      acknowledge(e.id);
      const mine = state.me && e.from === state.me.username;
      const other = mine ? e.to : e.from;
      if (!state.people.has(other) && !mine) {
        state.people.set(other, { username: other, alias: e.from_alias, status: 'offline' });
      }
      const c = conv(`dm:${other}`);
      typingDone(c.key, e.from);
      if (mine) settleOwn({ kind: 'dm', user: other }, e.text, e.attachments);
      // The first `offline_directs` messages after signing in are the backlog received
      // while offline: the sign-in's read state already counts them, and they are not
      // news to notify.
      const counted = !mine && state.backlog > 0;
      if (counted) state.backlog -= 1;
      if (!addMessages(c, [e])) return;
      replyArrived(c, e);
      if (isCurrent(c)) renderMessages(false);
      else if (!mine && !counted && e.id > c.lastRead) c.unread += 1;
      renderDms();
      if (!mine && !counted) maybeNotify(c, e);
      return;
    }
    case 'edited':
      applyEdit(e.id, e.text, e.edited);
      return;
    case 'deleted':
      applyDelete(e.id);
      return;
    case 'reaction': {
      if (!state.people.has(e.user)) state.people.set(e.user, { username: e.user, alias: e.alias, status: 'offline' });
      const copies = copiesOf(e.id);
      for (const m of copies) applyReaction(m, e.emoji, e.user, e.added);
      if (copies.length) refreshMessages([e.id]);
      return;
    }
    case 'read':
      applyReadState(e);
      renderRooms();
      renderDms();
      if (state.view && !state.adminOpen) renderHeader();
      return;
    case 'room_member': {
      const r = roomInfo(e.room);
      const name = r ? r.name : e.room;
      const c = conv(`room:${name}`);
      const me = !!state.me && e.user === state.me.username;
      const who = me ? 'You' : e.alias;
      const n = { after: c.last ?? -Infinity, ts: Date.now(), text: `${who} ${e.joined ? 'joined' : 'left'} the room.` };
      c.notices.push(n);
      const members = state.members.get(name.toLowerCase());
      if (members) {
        if (e.joined) members.set(e.user, e.alias);
        else members.delete(e.user);
      }
      // Added to the conversation's kept list, shown or not (issue 15, item 8), unless
      // its window does not reach the newest message (drawn with it when it does).
      if (c.list && !detached(c)) c.list.append(noticeEl(n));
      if (c.list && c.list.isConnected) {
        const box = $('messages');
        if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
      }
      return;
    }
    case 'typing':
      onTyping(e);
      return;
    case 'presence': {
      if (e.refresh) {
        // Too many changes at once to list (a wave of logins): re-read everyone, at
        // most once a second.
        if (!presenceRefresh) presenceRefresh = setTimeout(() => { presenceRefresh = null; loadPeople(); }, 1000);
        return;
      }
      // Changes come gathered: every user whose status changed, each once.
      for (const u of e.users || []) {
        state.people.set(u.username, { username: u.username, alias: u.alias, status: u.status });
        if (state.me && u.username === state.me.username && u.status !== 'offline') {
          state.me.status = u.status;
          $('status-select').value = u.status;
        }
      }
      schedulePeople();
      renderDms();
      renderHeader();
      if (state.adminOpen) onAdminPresence();
      return;
    }
    case 'membership': {
      const before = roomInfo(e.room.name);
      setRoom(e.room);
      const r = e.room;
      const own = Date.now() - (ownActions.get(r.name.toLowerCase()) || 0) < 5000;
      const changed = (!before || before.state !== r.state) && !own;
      // The server's reason says it best ("your request to join X was accepted: …").
      const say = (text, kind) => toast(e.reason ? sentence(e.reason) : text, { kind, title: r.name });
      if (r.state === 'member' && (changed || e.reason)) {
        say(`You are now a member of ${r.name}.`, 'info');
      } else if (r.state === 'can_request' && ((before && before.state === 'pending' && !own) || e.reason)) {
        say(`Your request to join ${r.name} was declined.`, 'warn');
        // Also kept in the room's row until dismissed or asked again (item 13); a
        // decision told at sign-in comes when the list already says can_request.
        if (!before || before.state !== 'member') {
          declined.set(r.name.toLowerCase(), e.reason ? sentence(e.reason) : `Your request to join ${r.name} was declined.`);
        }
      } else if (before && before.state === 'member' && r.state !== 'member' && (changed || e.reason)) {
        say(`You are no longer a member of ${r.name}.`, 'warn');
      }
      if (r.state !== 'member' && state.view && state.view.kind === 'room' && state.view.name.toLowerCase() === r.name.toLowerCase()) {
        openDefault();
      }
      renderRooms();
      if (state.view && state.view.kind === 'room' && state.view.name === r.name) renderHeader();
      return;
    }
    case 'join_request': {
      if (!state.me || !state.me.is_admin) return;
      if (!state.requests.some((q) => q.user === e.user && q.room === e.room)) {
        state.requests.push({ user: e.user, alias: e.alias, room: e.room, requested_at: e.requested_at });
        if (state.everSignedIn && Date.now() - e.requested_at < 60000) {
          toast(`${e.alias} (${e.user}) asks to join ${e.room}.`, { title: 'Join request' });
        }
      }
      renderRequests();
      return;
    }
    case 'account_request': {
      if (!state.me || !state.me.is_admin) return;
      if (!state.accounts.some((a) => a.username === e.username)) {
        state.accounts.push(e);
        if (state.everSignedIn && Date.now() - e.requested_at < 60000) {
          toast(`${e.alias} (${e.username}) registered and waits for approval.`, { title: 'New account' });
        }
      }
      renderRequests();
      return;
    }
    case 'account_request_decided': {
      if (!state.me || !state.me.is_admin) return;
      state.accounts = state.accounts.filter((a) => a.username !== e.user);
      renderRequests();
      return;
    }
    case 'join_request_decided': {
      // Decided here or by another administrator: it is no longer pending.
      if (!state.me || !state.me.is_admin) return;
      state.requests = state.requests.filter((q) => !(q.user === e.user && q.room === e.room));
      renderRequests();
      return;
    }
    case 'notice':
      toast(e.text, { kind: 'notice', title: `Notice from ${e.from_alias || e.from} · ${fmtTime(e.ts)}` });
      return;
    case 'shutdown': {
      conn.shutdownMessage = e.message;
      $('conn-banner').hidden = true; // one banner at a time (item 11)
      const b = $('shutdown-banner');
      b.textContent = e.seconds > 0
        ? `The server stops in ${e.seconds} s: ${e.message}`
        : `The server is stopping now: ${e.message}`;
      b.hidden = false;
      return;
    }
    default:
      return; // unknown events are ignored
  }
}

export function isCurrent(c) {
  return !state.adminOpen && state.view && convKey(state.view) === c.key && !document.hidden;
}

// Back to the tab: what is visible is read now.
export function watchVisibility() {
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.signedIn && state.view && !state.adminOpen) {
      renderMessages(false);
      renderRooms();
      renderDms();
    }
  });
}
