// Shared helpers of the browser tests: a real `salon serve` process, Debian's Chromium
// driven by playwright-core, and user actions done through the page like a person would.
//
// Environment (set by scripts/browser-tests.sh; each has a default for running by hand):
//   SALON_BIN             the salon binary (default: ../../target/debug/salon)
//   SALON_URL             a running server to use (default: start one per test file)
//   SALON_DATA_DIR        that server's data directory (tests that look at what it stored)
//   SALON_ADMIN_PASSWORD  the password of `admin` on that server
//   CHROMIUM              the browser (default /usr/bin/chromium)
//   SCREENSHOT_DIR        where screenshots go (default ../../artifacts/screenshots)
//   SALON_SERVER_CPUS     benchmarks: pin the servers started here to these CPUs (taskset)

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');

export const ADMIN_PASSWORD = process.env.SALON_ADMIN_PASSWORD || 'correct horse battery staple';
export const PASSWORD = 'correct horse battery staple';
export const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || path.join(root, 'artifacts', 'screenshots');
const BIN = process.env.SALON_BIN || path.join(root, 'target', 'debug', 'salon');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const WAIT = 15000;

// ----- Servers ----------------------------------------------------------------------------

/**
 * A free loopback port for a server this process starts a moment later, and keeps across
 * `restart()`. Taken below the kernel's ephemeral range (32768 and up on Linux), where
 * neither another listener's `listen(0)` nor the browser's outgoing connections land,
 * from a counter that never hands out the same port twice in this process (the e2e
 * harness's `free_port` does the same, for the same reason).
 */
const PORT_FIRST = 20000;
const PORT_SPAN = 12000;
let portNext = process.pid % PORT_SPAN;

function canListenOn(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export async function freePort() {
  for (let i = 0; i < PORT_SPAN; i++) {
    const port = PORT_FIRST + (portNext++ % PORT_SPAN);
    if (await canListenOn(port)) return port;
  }
  throw new Error(`no free loopback port between ${PORT_FIRST} and ${PORT_FIRST + PORT_SPAN}`);
}

/** Relaxed limits: every test signs in from 127.0.0.1. */
const TEST_CONFIG = `
[limits]
auth_attempts_per_minute_per_address = 100000
registrations_per_hour_per_address = 100000
registrations_per_minute = 100000
messages_per_second = 100000
message_burst = 100000
requests_per_second = 100000
request_burst = 100000
`;

/** A `salon serve` process on free ports; `restart()` keeps its ports and data. */
export class Server {
  /** `settings`: top-level configuration lines put before the test limits; `limits`:
   *  lines added to the `[limits]` table. */
  static async start(settings = '', limits = '') {
    const s = new Server();
    s.dir = mkdtempSync(path.join(os.tmpdir(), 'salon-browser-'));
    s.config = path.join(s.dir, 'salon.toml');
    writeFileSync(s.config, `${settings}\n${TEST_CONFIG}${limits}\n`);
    s.tcpPort = await freePort();
    s.httpPort = await freePort();
    s.url = `http://127.0.0.1:${s.httpPort}`;
    await s.launch();
    return s;
  }

  /** The server's data directory. */
  get dataDir() {
    return path.join(this.dir, 'data');
  }

  async launch() {
    this.log = [];
    // SALON_SERVER_CPUS (benchmarks only, e.g. `0`): the server pinned to these CPUs
    // with taskset, so that the browser (pinned elsewhere) does not wait for them.
    const pin = process.env.SALON_SERVER_CPUS;
    this.proc = spawn(pin ? 'taskset' : BIN, [
      ...(pin ? ['-c', pin, BIN] : []),
      'serve', '--no-console', '--config', this.config,
      '--data-dir', this.dataDir,
      '--listen', `127.0.0.1:${this.tcpPort}`,
      '--http-listen', `127.0.0.1:${this.httpPort}`,
      // Several servers at once: each its own metrics port.
      '--metrics-listen', '127.0.0.1:0',
    ], {
      env: { ...process.env, SALON_ADMIN_PASSWORD: ADMIN_PASSWORD, SALON_LOG: process.env.SALON_LOG || 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (d) => { this.log.push(String(d)); };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) break;
      try {
        const r = await fetch(`${this.url}/healthz`);
        if (r.ok) return;
      } catch {
        /* not listening yet */
      }
      await sleep(100);
    }
    throw new Error(`salon did not start:\n${this.log.join('')}`);
  }

  /** Kills the process at once (like a crash or a network cut) and waits for its end. */
  async kill() {
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  async restart() {
    await this.launch();
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 15000);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The server of a test file: SALON_URL if given, else one of its own. */
export async function testServer() {
  if (process.env.SALON_URL) {
    // The server scripts/browser-tests.sh started; its data directory, if it says where.
    return { url: process.env.SALON_URL.replace(/\/$/, ''), dataDir: process.env.SALON_DATA_DIR, stop: async () => {} };
  }
  return Server.start();
}

// ----- Browser ----------------------------------------------------------------------------

/** How every test's Chromium is started. */
export const BROWSER_OPTIONS = {
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
    '--no-first-run', '--disable-component-update', '--disable-sync',
    // The HTTPS run (scripts/browser-tests.sh) uses a self-signed certificate.
    ...(process.env.SALON_BROWSER_TLS ? ['--ignore-certificate-errors'] : [])],
};

export function launchBrowser() {
  return chromium.launch(BROWSER_OPTIONS);
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 780 };

/** A fresh browser context (own storage, like another person's browser) with the page open. */
export async function openPage(browser, url, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, locale: 'en-GB', timezoneId: 'Europe/Paris' });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push(`console: ${m.text()}`); });
  await page.goto(`${url}/`);
  await page.locator('body[data-screen="auth"]').waitFor();
  return page;
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`) });
}

let counter = 0;
/** A username unique across runs on one server, with a readable alias. */
export function uniqueName(base) {
  counter += 1;
  const tag = `${Date.now().toString(36).slice(-4)}${counter}`;
  return { username: `${base}${tag}`, alias: `${base[0].toUpperCase()}${base.slice(1)} ${tag}` };
}

/** Registers through the form (which then signs in) and waits for the chat. */
export async function register(page, base, extra = {}) {
  const who = uniqueName(base);
  await page.getByRole('tab', { name: 'Create an account' }).click();
  const form = page.locator('#register-form');
  await form.getByLabel('First name').fill(extra.first_name || base[0].toUpperCase() + base.slice(1));
  await form.getByLabel('Last name').fill(extra.last_name || 'Testeur');
  await form.getByLabel(/^Username/).fill(who.username);
  await form.getByLabel(/^Alias/).fill(who.alias);
  await form.getByLabel(/^Password/).fill(PASSWORD);
  await form.getByLabel('Repeat the password').fill(PASSWORD);
  await form.getByRole('button', { name: 'Create my account' }).click();
  await page.locator('body[data-screen="app"]').waitFor();
  return who;
}

export async function signIn(page, login, password = PASSWORD) {
  await page.getByRole('tab', { name: 'Sign in' }).click();
  const form = page.locator('#signin-form');
  await form.getByLabel('Username or alias').fill(login);
  await form.getByLabel('Password', { exact: true }).fill(password);
  await form.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('body[data-screen="app"]').waitFor();
}

/** Sends a message from the composer of the open conversation. */
export async function send(page, text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

/** The messages of the open conversation, as {author, text}. */
export function messages(page) {
  return page.locator('#message-list li.msg').evaluateAll((lis) => lis.map((li) => ({
    author: li.dataset.author,
    alias: li.querySelector('.msg-author').textContent,
    time: li.querySelector('time').textContent,
    text: li.querySelector('.msg-text').textContent,
  })));
}

export function room(page, name) {
  return page.locator(`#room-list li[data-room="${name}"]`);
}

export async function openRoom(page, name) {
  await room(page, name).locator('.room-open').click();
  await page.locator('#chat-title').filter({ hasText: name }).waitFor();
}

/** Calls the protocol over a WebSocket of its own opened from inside `page` (to prepare
 *  data faster than typing it, or to act as another user without the page's UI): logs
 *  `login` in with `password`, runs `calls` (`[cmd, args]` pairs) `batch` at a time (one
 *  by one, in order, by default), then logs out; with `keep` the connection stays open
 *  and signed in (in `window.keptSockets`). In the args, a string `$N` as `reply_to` or
 *  `id` stands for the `id` in the Nth reply. Resolves with the replies' data; a refused
 *  call rejects with its command and message. */
export function viaSocket(page, login, calls, { password = PASSWORD, batch = 1, keep = false } = {}) {
  return page.evaluate(async ({ login, password, calls, batch, keep }) => {
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
    const replies = new Map();
    let n = 0;
    await new Promise((resolve, reject) => {
      ws.onerror = reject;
      ws.onmessage = (ev) => {
        const f = JSON.parse(ev.data);
        if (f.type === 'hello') resolve();
        if (f.re !== undefined) replies.get(f.re)?.(f);
      };
    });
    const call = (cmd, args) => new Promise((resolve, reject) => {
      n += 1;
      replies.set(n, (f) => (f.type === 'ok' ? resolve(f.data) : reject(new Error(`${cmd}: ${f.message}`))));
      ws.send(JSON.stringify({ id: n, cmd, args }));
    });
    await call('login', { login, password });
    const out = [];
    const withIds = (args) => {
      const a = { ...args };
      for (const k of ['reply_to', 'id']) if (typeof a[k] === 'string' && a[k].startsWith('$')) a[k] = out[Number(a[k].slice(1))].id;
      return a;
    };
    for (let i = 0; i < calls.length; i += batch) {
      out.push(...await Promise.all(calls.slice(i, i + batch).map(([cmd, args]) => call(cmd, withIds(args)))));
    }
    if (keep) (window.keptSockets ||= []).push(ws);
    else await call('logout');
    return out;
  }, { login, password, calls, batch, keep });
}

/** Waits until `fn` (run in the page) returns something truthy. */
export function until(page, fn, arg) {
  return page.waitForFunction(fn, arg, { timeout: WAIT });
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
