// Files: uploads, attachments, previews and downloads (issue 14).

import { $, clear, h, icon } from './dom.js';
import { convKey, state } from './state.js';
import { sentence } from './format.js';
import { toast } from './toast.js';
import { loadToken } from './auth.js';

// ----- Files: uploads, attachments, previews and downloads (issue 14) -------------------
//
// Uploads go to POST /api/files with the session token in the Authorization header
// (never a cookie, never the token in a URL), by XMLHttpRequest for its upload progress
// and abort. Files are read back the same way: fetch() with the header into a blob: URL
// (the page's CSP allows img-src blob:). Previews kept as blob URLs are bounded
// (PREVIEWS_KEPT) and revoked when dropped or on sign-out.

const PREVIEWS_KEPT = 120;
/** Uploads of the composer: {local, key (conversation), name, size, loaded, xhr, file, error}. */
const uploads = [];
let uploadSeq = 0;
/** File id -> Promise of a blob: URL of its preview, least recently used first. */
const previews = new Map();

function fmtSize(n) {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB'];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u += 1;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

/** The bytes of a file (or its preview) as a Blob, read with the session token. */
async function fetchFile(id, preview) {
  const token = loadToken();
  const res = await fetch(`/api/files/${encodeURIComponent(id)}${preview ? '/preview' : ''}`, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    cache: 'no-store',
    credentials: 'omit',
  });
  if (!res.ok) {
    let message = `The file cannot be read (${res.status}).`;
    try {
      const body = await res.json();
      if (body && body.message) message = body.message;
    } catch (_) { /* not JSON */ }
    const err = new Error(message);
    err.status = res.status;
    throw err;
  }
  return res.blob();
}

/** A preview's blob: URL, fetched once and kept while among the PREVIEWS_KEPT latest. */
function previewUrl(id) {
  let url = previews.get(id);
  if (url) {
    previews.delete(id);
    previews.set(id, url); // most recently used last
    return url;
  }
  url = fetchFile(id, true).then((blob) => URL.createObjectURL(blob));
  url.catch(() => previews.delete(id));
  previews.set(id, url);
  while (previews.size > PREVIEWS_KEPT) {
    const [oldest, old] = previews.entries().next().value;
    previews.delete(oldest);
    old.then((u) => URL.revokeObjectURL(u), () => {});
  }
  return url;
}

function dropPreviews() {
  for (const url of previews.values()) url.then((u) => URL.revokeObjectURL(u), () => {});
  previews.clear();
}

/** A message's files: images as previews (a click shows the full size), others as
 *  downloads with their name, size and type. */
export function attachmentsEl(m) {
  const files = m.attachments || [];
  if (!files.length) return null;
  return h('ul', { class: 'attachments', 'aria-label': 'Attached files' }, files.map((a) => {
    if (a.preview) {
      const img = h('img', { class: 'att-thumb', alt: a.name, width: thumbSize(a).w, height: thumbSize(a).h });
      previewUrl(a.id).then((u) => { img.src = u; }, () => { img.alt = `${a.name} (preview unavailable)`; });
      return h('li', { class: 'att' },
        h('button', { type: 'button', class: 'att-image', 'data-file': a.id, title: `${a.name} · ${fmtSize(a.size)} · show full size`, onclick: () => openImage(a) }, img));
    }
    return h('li', { class: 'att' },
      h('a', { class: 'att-file', href: '#', 'data-file': a.id, title: `Download ${a.name}`, onclick: (ev) => { ev.preventDefault(); downloadFile(a); } },
        h('span', { class: 'att-icon', 'aria-hidden': 'true' }, icon('file')),
        h('span', { class: 'att-name', text: a.name }),
        h('span', { class: 'att-meta', text: `${fmtSize(a.size)} · ${a.mime.split(';')[0]}` })));
  }));
}

/** The preview's size on screen (fits 320×320 like the server's), so the page does
 *  not jump when it loads. */
function thumbSize(a) {
  const w = a.width || 320;
  const hgt = a.height || 320;
  const k = Math.min(1, 320 / w, 320 / hgt);
  return { w: Math.max(1, Math.round(w * k)), h: Math.max(1, Math.round(hgt * k)) };
}

/** Saves a file: its bytes into a blob: URL, and a link with `download` clicked. */
async function downloadFile(a) {
  try {
    const blob = await fetchFile(a.id, false);
    const url = URL.createObjectURL(blob);
    const link = h('a', { href: url, download: a.name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    toast(sentence(err.message), { kind: 'error' });
  }
}

/** The full-size image in a dialog. */
async function openImage(a) {
  const dialog = $('image-dialog');
  const img = $('image-full');
  $('image-title').textContent = a.name;
  $('image-meta').textContent = `${a.width}×${a.height} · ${fmtSize(a.size)}`;
  img.alt = a.name;
  img.removeAttribute('src');
  $('image-download').onclick = () => downloadFile(a);
  dialog.showModal();
  try {
    const blob = await fetchFile(a.id, false);
    if (!dialog.open) return;
    img.src = URL.createObjectURL(blob);
  } catch (err) {
    toast(sentence(err.message), { kind: 'error' });
    dialog.close();
  }
}

function closeImage() {
  const img = $('image-full');
  if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  img.removeAttribute('src');
}

/** Starts uploading files into the composer of the open conversation. */
function attachFiles(list) {
  if (!state.view || !state.me) return;
  const key = convKey(state.view);
  for (const f of Array.from(list || [])) {
    const name = f.name || `pasted-${new Date().toISOString().replace(/[:.]/g, '-')}.${(f.type.split('/')[1] || 'bin').replace(/[^a-z0-9]/g, '')}`;
    const up = { local: ++uploadSeq, key, name, size: f.size, loaded: 0, xhr: null, file: null, error: null };
    uploads.push(up);
    if (state.uploadMax && f.size > state.uploadMax) {
      // Refused here, before sending any of it (the server would refuse it unread).
      up.error = `Too large: ${fmtSize(f.size)}, files are at most ${fmtSize(state.uploadMax)}.`;
      toast(`${up.name}: ${up.error}`, { kind: 'error' });
      continue;
    }
    startUpload(up, f);
  }
  renderAttachments();
}

function startUpload(up, blob) {
  const xhr = new XMLHttpRequest();
  up.xhr = xhr;
  xhr.open('POST', `/api/files?name=${encodeURIComponent(up.name)}`);
  xhr.setRequestHeader('Authorization', `Bearer ${loadToken() || ''}`);
  xhr.responseType = 'json';
  xhr.upload.onprogress = (ev) => {
    up.loaded = ev.loaded;
    updateProgress(up);
  };
  xhr.onload = () => {
    up.xhr = null;
    if (xhr.status === 201 && xhr.response && xhr.response.id) {
      up.file = xhr.response;
      up.loaded = up.size;
    } else {
      up.error = (xhr.response && xhr.response.message) || `Upload refused (${xhr.status}).`;
      toast(`${up.name}: ${up.error}`, { kind: 'error' });
    }
    renderAttachments();
  };
  xhr.onerror = () => {
    up.xhr = null;
    up.error = 'The upload failed (connection lost).';
    renderAttachments();
  };
  xhr.send(blob);
}

/** Cancels an upload in progress, or takes a finished one off the message and asks the
 *  server to remove it, so it no longer counts against the quota (a file some message
 *  already carries is kept: the server answers 409 and it goes with its messages). */
function removeUpload(up) {
  if (up.xhr) up.xhr.abort();
  if (up.file) {
    fetch(`/api/files/${encodeURIComponent(up.file.id)}`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${loadToken() || ''}` },
    }).catch(() => {}); // Offline: the server removes it after 24 hours anyway.
  }
  const i = uploads.indexOf(up);
  if (i >= 0) uploads.splice(i, 1);
  renderAttachments();
  $('composer-input').focus();
}

/** The files ready to go with a message of `view`; null (and a notice) while some are
 *  still uploading. */
export function readyAttachments(view) {
  const key = convKey(view);
  const mine = uploads.filter((u) => u.key === key && !u.error);
  if (mine.some((u) => !u.file)) {
    $('composer-notice-text').textContent = 'Wait for the uploads to finish (or cancel them) before sending.';
    $('composer-notice').hidden = false;
    return null;
  }
  return mine.map((u) => u.file);
}

export function clearAttachments(view) {
  const key = convKey(view);
  for (let i = uploads.length - 1; i >= 0; i--) if (uploads[i].key === key) uploads.splice(i, 1);
  renderAttachments();
}

/** A refused message's files come back to its composer. */
export function restoreAttachments(view, files) {
  const key = convKey(view);
  for (const f of files || []) {
    uploads.push({ local: ++uploadSeq, key, name: f.name, size: f.size, loaded: f.size, xhr: null, file: f, error: null });
  }
  renderAttachments();
}

function updateProgress(up) {
  const bar = document.querySelector(`#attach-list [data-upload="${up.local}"] progress`);
  if (bar) {
    bar.max = up.size || 1;
    bar.value = up.loaded;
  }
}

/** The files waiting under the message box of the open conversation. */
export function renderAttachments() {
  const list = $('attach-list');
  clear(list);
  const key = state.view ? convKey(state.view) : null;
  const mine = uploads.filter((u) => u.key === key);
  list.hidden = !mine.length;
  for (const up of mine) {
    const status = up.error ? up.error : up.file ? fmtSize(up.file.size) : 'uploading…';
    list.append(h('li', { class: `upload${up.error ? ' failed' : ''}${up.file ? ' done' : ''}`, 'data-upload': up.local },
      h('span', { class: 'upload-name', text: up.name }),
      up.file || up.error ? null : h('progress', { max: up.size || 1, value: up.loaded, 'aria-label': `Uploading ${up.name}` }),
      h('span', { class: 'upload-status', text: status }),
      h('button', {
        type: 'button',
        class: 'ghost small upload-cancel',
        'aria-label': up.file || up.error ? `Remove ${up.name}` : `Cancel the upload of ${up.name}`,
        text: '×',
        onclick: () => removeUpload(up),
      })));
  }
}

function onPaste(ev) {
  const files = ev.clipboardData ? Array.from(ev.clipboardData.files || []) : [];
  if (!files.length) return;
  ev.preventDefault();
  attachFiles(files);
}

function hasFiles(ev) {
  return !!ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes('Files');
}

export function wireFiles() {
  $('attach-btn').addEventListener('click', () => $('attach-input').click());
  $('attach-input').addEventListener('change', (ev) => {
    attachFiles(ev.target.files);
    ev.target.value = '';
  });
  $('composer-input').addEventListener('paste', onPaste);
  const zone = $('chat');
  zone.addEventListener('dragover', (ev) => {
    if (!hasFiles(ev) || !state.view) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = 'copy';
    zone.classList.add('dropping');
  });
  zone.addEventListener('dragleave', (ev) => {
    if (!zone.contains(ev.relatedTarget)) zone.classList.remove('dropping');
  });
  zone.addEventListener('drop', (ev) => {
    zone.classList.remove('dropping');
    if (!hasFiles(ev) || !state.view) return;
    ev.preventDefault();
    attachFiles(ev.dataTransfer.files);
  });
  $('image-close').addEventListener('click', () => $('image-dialog').close());
  $('image-dialog').addEventListener('close', closeImage);
}

/** Sign-out: uploads are aborted and previews released. */
export function leaveFiles() {
  for (const up of uploads.splice(0)) if (up.xhr) up.xhr.abort();
  renderAttachments();
  dropPreviews();
}
