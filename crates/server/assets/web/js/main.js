// Salon web client: speaks the native protocol (docs/PROTOCOL.md) over the WebSocket at
// /ws. Plain JavaScript in ES modules (js/*.js), no build step. Two vendored libraries
// (vendor/, classic scripts loaded before the modules): markdown-it and DOMPurify, for
// message formatting (see markdown.js).
//
// Safety rule: every string that comes from the server or from a user is put in the page
// with textContent / text nodes (see `h` in dom.js), never parsed as HTML, except a
// message's text, which markdown-it renders with raw HTML disabled and DOMPurify
// sanitizes into DOM nodes (`formatted` in markdown.js); no HTML string is ever assigned
// to the page.
//
// This module is the only one that runs code when loaded: `init` wires the page and
// connects. Every other module only declares (they import each other, cycles included,
// and nothing is called across modules while they load).

import { $, fillIcons } from './dom.js';
import { state } from './state.js';
import { conn, connect } from './net.js';
import { applyRegistration, logout, onRegister, onSignIn, selectTab, setScreen } from './auth.js';
import { keepDraft } from './drafts.js';
import { sayTyping } from './typing.js';
import { loadOlder, onFocusIn, onScroll, showView } from './conversation.js';
import { autosize, closeMentionMenu, onComposerKey, onSend, updateMentionMenu } from './compose.js';
import { cancelReply, closePicker } from './messaging.js';
import { closeThread, loadThread, onThreadSend } from './thread.js';
import { scheduleMarkRead } from './readstate.js';
import { askNotifyPermission, onNotifyLevel } from './notify.js';
import { onStatusChange, renderPeople } from './people.js';
import { watchVisibility } from './events.js';
import { onCreateChannel, openChannelDialog, renderChannelMembers } from './channels.js';
import {
  liftSanction, loadRequests, loadSessions, onAddUser, onBroadcast, onInvite, onShutdown,
  initAdmin, openAdmin, renderSessions, sessionsStale,
} from './admin.js';
import { wireFiles } from './files.js';
import { initSearch } from './search.js';
import { setPane, togglePane } from './layout.js';
import { registerServiceWorker } from './pwa.js';

// ----- Wiring ---------------------------------------------------------------------------

function init() {
  fillIcons();
  $('tab-signin').addEventListener('click', () => selectTab('signin'));
  $('tab-register').addEventListener('click', () => selectTab('register'));
  for (const tab of [$('tab-signin'), $('tab-register')]) {
    tab.addEventListener('keydown', (ev) => {
      if (ev.key === 'ArrowRight' || ev.key === 'ArrowLeft') {
        const next = tab.id === 'tab-signin' ? 'register' : 'signin';
        selectTab(next);
        $(`tab-${next}`).focus();
      }
    });
  }
  $('signin-form').addEventListener('submit', onSignIn);
  $('register-form').addEventListener('submit', onRegister);
  for (const input of document.querySelectorAll('#auth-screen input')) {
    input.addEventListener('input', () => {
      input.removeAttribute('aria-invalid');
      const err = document.getElementById(`${input.id}-error`);
      if (err) err.textContent = '';
    });
  }

  $('composer').addEventListener('submit', onSend);
  $('composer-input').addEventListener('keydown', onComposerKey);
  $('composer-input').addEventListener('input', autosize);
  $('composer-input').addEventListener('input', keepDraft);
  $('composer-input').addEventListener('input', sayTyping);
  $('composer-input').addEventListener('input', updateMentionMenu);
  $('composer-input').addEventListener('blur', () => setTimeout(closeMentionMenu, 150));
  $('reply-cancel').addEventListener('click', cancelReply);
  wireFiles();
  $('composer-notice-close').addEventListener('click', () => { $('composer-notice').hidden = true; });
  $('notify-select').addEventListener('change', onNotifyLevel);
  $('notif-btn').addEventListener('click', askNotifyPermission);
  $('thread-close').addEventListener('click', closeThread);
  $('thread-older').addEventListener('click', () => loadThread(true));
  $('thread-composer').addEventListener('submit', onThreadSend);
  $('thread-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('thread-composer').requestSubmit();
    } else if (ev.key === 'Escape') {
      closeThread();
    }
  });
  $('delete-cancel').addEventListener('click', () => $('delete-dialog').close());
  document.addEventListener('click', (ev) => {
    if (!$('emoji-picker').hidden && !ev.target.closest('#emoji-picker, [data-op="react"]')) closePicker();
  });
  $('messages').addEventListener('scroll', onScroll);
  $('messages').addEventListener('focusin', onFocusIn);
  $('load-older').addEventListener('click', loadOlder);
  $('status-select').addEventListener('change', onStatusChange);
  $('people-filter').addEventListener('input', renderPeople);
  $('logout-btn').addEventListener('click', logout);
  $('nav-toggle').addEventListener('click', () => togglePane('nav'));
  $('people-toggle').addEventListener('click', () => togglePane('people'));
  $('conn-retry').addEventListener('click', () => {
    conn.retry = 0;
    connect();
  });

  $('new-channel-btn').addEventListener('click', openChannelDialog);
  $('channel-form').addEventListener('submit', onCreateChannel);
  $('channel-cancel').addEventListener('click', () => $('channel-dialog').close());
  $('channel-filter').addEventListener('input', renderChannelMembers);

  $('admin-btn').addEventListener('click', openAdmin);
  $('admin-close').addEventListener('click', () => {
    state.adminOpen = false;
    showView();
  });
  $('admin-title').tabIndex = -1;
  initAdmin();
  $('req-refresh').addEventListener('click', loadRequests);
  $('conn-refresh').addEventListener('click', () => loadSessions());
  $('unban-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    liftSanction('unban');
  });
  $('unkick-btn').addEventListener('click', () => liftSanction('unkick'));
  $('broadcast-form').addEventListener('submit', onBroadcast);
  $('invite-form').addEventListener('submit', onInvite);
  // An invitation link opened in a tab already showing the page.
  window.addEventListener('hashchange', () => applyRegistration(state.registration));
  $('adduser-form').addEventListener('submit', onAddUser);
  $('shutdown-form').addEventListener('submit', onShutdown);
  $('conn-list').addEventListener('focusout', (ev) => {
    if (sessionsStale && !$('conn-list').contains(ev.relatedTarget)) setTimeout(() => renderSessions(), 0);
  });

  window.addEventListener('online', () => {
    if (!conn.ws) {
      conn.retry = 0;
      connect();
    }
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !$('emoji-picker').hidden) {
      closePicker();
      return;
    }
    if (ev.key === 'Escape' && $('layout').dataset.pane !== 'main') setPane('main');
  });
  window.addEventListener('focus', scheduleMarkRead);
  watchVisibility();
  initSearch();

  setScreen('loading');
  connect();
  registerServiceWorker();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
