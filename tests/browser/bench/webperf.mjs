// Web client benchmark (issue 15, item 8): not a test and not run in CI. Run by hand:
//   cd tests/browser && node bench/webperf.mjs [--messages 5000] [--users 1000] [--wave 150]
// (SALON_BIN and SALON_WEB_DIR as for the browser tests; docs/WEB_CLIENT.md,
// "Performance (issue 15)", records its figures.)
//
// Starts a server (the helpers' test limits), stores the messages in Général over the
// native protocol (several authors, some Markdown), registers the users, then in
// Chromium (1366×768) measures, with a PerformanceObserver of `longtask` entries:
//   1. paging back through every message (per page: time from the scroll to the top
//      until the page is drawn, and the longest task);
//   2. switching away from Général and back with everything loaded (time until the
//      list is shown and painted);
//   3. a wave of logins while People shows every user (long tasks, rows redrawn).
import os from 'node:os';
import {
  ADMIN_PASSWORD, PASSWORD, Server, launchBrowser, openPage, signIn,
} from '../helpers.mjs';
import { ProtoClient, loggedIn, registerOn } from '../proto.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const MESSAGES = arg('messages', 5000);
const USERS = arg('users', 1000);
const WAVE = arg('wave', 150);
const PROFILE = process.argv.includes('--profile');
// The whole of paging back traced: the longest main-thread tasks, on the clock and on the
// CPU (the machine's load stretches the one and not the other).
const CPU = process.argv.includes('--cpu');
const PROFILE_PAGE = arg('profile-page', 16) - 1; // the hottest functions of a page and a room switch
/** CDP sampling profiler: `start()`, then `stop(title)` prints the hottest functions. */
async function profiler(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
  return {
    start: () => cdp.send('Profiler.start'),
    async stop(title) {
      const { profile } = await cdp.send('Profiler.stop');
      const self = new Map();
      const byId = new Map(profile.nodes.map((nd) => [nd.id, nd]));
      profile.samples.forEach((id, i) => {
        const f = byId.get(id).callFrame;
        const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').pop()}:${f.lineNumber + 1}`;
        self.set(key, (self.get(key) || 0) + (profile.timeDeltas[i] || 0) / 1000);
      });
      console.log(`${title}, self time (ms):`);
      for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${v.toFixed(1).padStart(8)}  ${k}`);
    },
  };
}
/** The renderer main thread's tasks that did the page's work (scripts, styles, layout,
 *  paint), with their time on the clock and on the CPU, longest first. */
function mainTasks(buf) {
  const { traceEvents } = JSON.parse(buf.toString());
  const main = new Set(traceEvents.filter((e) => e.ph === 'M' && e.name === 'thread_name' && e.args.name === 'CrRendererMain')
    .map((e) => `${e.pid}:${e.tid}`));
  const onMain = traceEvents.filter((e) => e.ph === 'X' && e.dur && main.has(`${e.pid}:${e.tid}`));
  const isTask = (e) => e.name === 'ThreadControllerImpl::RunTask' || e.name === 'RunTask';
  const WORK = new Set(['FunctionCall', 'EventDispatch', 'TimerFire', 'FireAnimationFrame', 'UpdateLayoutTree', 'Layout', 'Paint', 'PrePaint', 'ParseHTML']);
  const work = onMain.filter((e) => WORK.has(e.name)).sort((a, b) => a.ts - b.ts);
  const tasks = onMain.filter(isTask).sort((a, b) => a.ts - b.ts);
  const out = [];
  let w = 0;
  for (const t of tasks) {
    while (w < work.length && work[w].ts < t.ts) w += 1;
    // A task of the page's work has some inside it (not the tracing's own messages).
    if (w < work.length && work[w].ts < t.ts + t.dur) out.push({ ms: t.dur / 1000, cpu: (t.tdur || 0) / 1000, task: t });
  }
  // What the longest ones (on the CPU) did: the main thread's work inside each, by kind.
  const longest = [...out].sort((a, b) => b.cpu - a.cpu).slice(0, 3);
  for (const l of longest) {
    const inside = new Map();
    for (const e of onMain) {
      if (e === l.task || isTask(e) || e.ts < l.task.ts || e.ts + e.dur > l.task.ts + l.task.dur) continue;
      inside.set(e.name, (inside.get(e.name) || 0) + e.dur / 1000);
    }
    l.parts = [...inside].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
  }
  return out.sort((a, b) => b.ms - a.ms);
}

/** Prints the time of the browser's main-thread work by kind (a trace's complete events). */
function traceSummary(title, buf) {
  const { traceEvents } = JSON.parse(buf.toString());
  const sum = new Map();
  for (const e of traceEvents) {
    if (e.ph !== 'X' || !e.dur) continue;
    const k = e.name === 'Layout' && e.args && e.args.beginData ? `Layout (${e.args.beginData.dirtyObjects}/${e.args.beginData.totalObjects} objects)` : e.name;
    sum.set(k, (sum.get(k) || 0) + e.dur / 1000);
  }
  console.log(`${title}, browser work (ms):`);
  for (const [k, v] of [...sum].sort((a, b) => b[1] - a[1]).slice(0, 14)) console.log(`  ${v.toFixed(1).padStart(8)}  ${k}`);
  // The three longest tasks of the main thread, and the work inside each.
  const main = new Set(traceEvents.filter((e) => e.ph === 'M' && e.name === 'thread_name' && e.args.name === 'CrRendererMain')
    .map((e) => `${e.pid}:${e.tid}`));
  const tasks = traceEvents.filter((e) => e.ph === 'X' && main.has(`${e.pid}:${e.tid}`) && (e.name === 'RunTask' || e.name === 'ThreadControllerImpl::RunTask') && e.dur > 10000)
    .sort((a, b) => b.dur - a.dur).slice(0, 3);
  for (const t of tasks) {
    const inside = new Map();
    for (const e of traceEvents) {
      if (e.ph !== 'X' || !e.dur || e === t || e.pid !== t.pid || e.tid !== t.tid) continue;
      if (e.ts < t.ts || e.ts + e.dur > t.ts + t.dur || e.name === 'RunTask' || e.name === 'ThreadControllerImpl::RunTask') continue;
      inside.set(e.name, (inside.get(e.name) || 0) + e.dur / 1000);
    }
    const parts = [...inside].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k} ${v.toFixed(1)}`);
    console.log(`  a task of ${(t.dur / 1000).toFixed(1)} ms (${((t.tdur || 0) / 1000).toFixed(1)} ms on the CPU): ${parts.join(", ")}`);
  }
}
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);

/** Runs `fn(i)` for i in 0..n-1, `width` at a time. */
async function pool(n, width, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) {
      const i = next;
      next += 1;
      await fn(i);
    }
  }));
}

const LOREM = ['Bonjour à tous', 'le **rapport** est prêt', 'voir `build.rs` ligne 12', 'on se voit à 14 h ?',
  'merci !', 'je regarde ça _tout de suite_', 'la réunion est décalée', 'ok pour moi', 'qui a la clé de la salle B ?',
  'une liste :\n- un\n- deux\n- trois'];

const server = await Server.start();
const load0 = os.loadavg();
const t00 = Date.now();
try {
  // Accounts: the authors, the viewer, and USERS more (offline until the wave).
  const name = (i) => `u${String(i).padStart(4, '0')}`;
  await pool(USERS, 12, async (i) => {
    const c = await ProtoClient.connect(server.tcpPort);
    try { await registerOn(c, name(i), PASSWORD); } finally { c.close(); }
  });
  log(`${USERS} users registered`);
  for (const u of ['viewer', 'author1', 'author2']) {
    const c = await ProtoClient.connect(server.tcpPort);
    await registerOn(c, u, PASSWORD);
    c.close();
  }
  const viewerConn = await loggedIn(server.tcpPort, 'viewer', PASSWORD);
  await viewerConn.request('join', { room: 'Blabla' });
  await viewerConn.request('send', { room: 'Blabla', text: 'Blabla' });
  viewerConn.close();

  // Messages: runs of one author (grouped), several authors.
  const authors = [
    await loggedIn(server.tcpPort, 'admin', ADMIN_PASSWORD),
    await loggedIn(server.tcpPort, 'author1', PASSWORD),
    await loggedIn(server.tcpPort, 'author2', PASSWORD),
  ];
  for (let i = 0; i < MESSAGES;) {
    const batch = [];
    for (let k = 0; k < 100 && i < MESSAGES; k += 1, i += 1) {
      const who = authors[Math.floor(i / 3) % authors.length];
      batch.push(who.request('send', { room: 'Général', text: `${i + 1}. ${LOREM[i % LOREM.length]}` }));
    }
    await Promise.all(batch);
  }
  for (const a of authors) a.close();
  log(`${MESSAGES} messages stored in Général`);
  // The viewer has read them all: Général opens at the latest page.
  const reader = await loggedIn(server.tcpPort, 'viewer', PASSWORD);
  const latest = await reader.request('history', { room: 'Général', limit: 1 });
  await reader.request('mark_read', { room: 'Général', id: latest.messages[0].id });
  reader.close();

  const browser = await launchBrowser();
  const page = await openPage(browser, server.url, { width: 1366, height: 768 });
  await page.evaluate(() => {
    window.longTasks = [];
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) window.longTasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: 'longtask', buffered: true });
  });
  await signIn(page, 'viewer');
  await page.locator('#room-list li[data-room="Général"] .room-open').click();
  await page.locator('#message-list li.msg').first().waitFor();
  await page.waitForTimeout(500);

  // 1. Paging back.
  const prof = PROFILE ? await profiler(page) : null;
  if (CPU) await browser.startTracing(page, { categories: ['devtools.timeline', 'toplevel'] });
  const pages = [];
  for (let n = 0; n < 1000; n += 1) {
    if (prof && n === PROFILE_PAGE) {
      await browser.startTracing(page, { categories: ['devtools.timeline', 'toplevel'] });
      // await prof.start();
    }
    const r = await page.evaluate(async () => {
      const frame = () => new Promise((res) => requestAnimationFrame(() => setTimeout(res, 0)));
      const box = document.getElementById('messages');
      const count = () => document.querySelectorAll('#message-list li.msg').length;
      // The list draws a window of messages (its count stays bounded): a page is drawn
      // when the first message drawn changes.
      const first = () => document.querySelector('#message-list li.msg')?.dataset.id;
      if (!document.getElementById('history-start').hidden) return null;
      const f0 = first();
      const t0 = performance.now();
      box.scrollTop = 0;
      const deadline = t0 + 30000;
      while (first() === f0 && performance.now() < deadline) await frame();
      await frame();
      const t1 = performance.now();
      const tasks = window.longTasks.filter((e) => e.start + e.duration >= t0 && e.start <= t1);
      return {
        ms: t1 - t0,
        longest: Math.max(0, ...tasks.map((e) => e.duration)),
        tasks: tasks.length,
        frozen: tasks.reduce((a, e) => a + e.duration, 0),
        shown: count(),
        nodes: document.getElementsByTagName('*').length,
      };
    });
    if (prof && n === PROFILE_PAGE) {
      // await prof.stop(`Page ${n + 1}`);
      traceSummary(`Page ${n + 1}`, await browser.stopTracing());
    }
    if (!r) break;
    pages.push(r);
    if (n % 10 === 0) log(`page ${n + 1}: ${r.ms.toFixed(0)} ms, longest task ${r.longest.toFixed(0)} ms, ${r.shown} messages drawn`);
  }

  const cpuTasks = CPU ? mainTasks(await browser.stopTracing()) : null;

  // 2. Room switch, with everything loaded.
  const switches = [];
  for (let n = 0; n < 5; n += 1) {
    if (prof && n === 4) await browser.startTracing(page, { categories: ['devtools.timeline', 'toplevel'] });
    await page.locator('#room-list li[data-room="Blabla"] .room-open').click();
    await page.locator('#chat-title').filter({ hasText: 'Blabla' }).waitFor();
    await page.waitForTimeout(300);
    switches.push(await page.evaluate(async () => {
      const frame = () => new Promise((res) => requestAnimationFrame(() => setTimeout(res, 0)));
      const t0 = performance.now();
      document.querySelector('#room-list li[data-room="Général"] .room-open').click();
      while (!document.querySelector('#message-list li.msg')
        || !document.getElementById('chat-title').textContent.includes('Général')) await frame();
      await frame();
      const t1 = performance.now();
      const tasks = window.longTasks.filter((e) => e.start + e.duration >= t0 && e.start <= t1);
      return { ms: t1 - t0, longest: Math.max(0, ...tasks.map((e) => e.duration)) };
    }));
    await page.waitForTimeout(300);
  }
  if (prof) traceSummary('Room switch', await browser.stopTracing());

  // 3. A wave of logins while People shows everyone.
  await page.evaluate(() => {
    window.peopleChanges = 0;
    new MutationObserver((ms) => {
      for (const m of ms) window.peopleChanges += m.addedNodes.length;
    }).observe(document.getElementById('people-list'), { childList: true });
  });
  const peopleRows = await page.locator('#people-list li').count();
  if (CPU) await browser.startTracing(page, { categories: ['devtools.timeline', 'toplevel'] });
  const w0 = await page.evaluate(() => performance.now());
  const waveStart = Date.now();
  const wave = [];
  await pool(WAVE, 24, async (i) => {
    // 127.0.1.x: each source address has its own connection limit.
    wave.push(await loggedIn(server.tcpPort, name(i), PASSWORD, `127.0.1.${1 + (i % 8)}`));
  });
  const waveMs = Date.now() - waveStart;
  await page.locator(`#people-list li[data-user="${name(WAVE - 1)}"][data-status="online"]`).waitFor({ timeout: 30000 });
  await page.waitForTimeout(2500); // the gathered presence events and a refresh hint's `who`
  const waveResult = await page.evaluate((t0) => {
    const tasks = window.longTasks.filter((e) => e.start + e.duration >= t0);
    return {
      tasks: tasks.length,
      longest: Math.max(0, ...tasks.map((e) => e.duration)),
      frozen: tasks.reduce((a, e) => a + e.duration, 0),
      rowsAdded: window.peopleChanges,
    };
  }, w0);
  const waveCpu = CPU ? mainTasks(await browser.stopTracing()) : null;
  for (const c of wave) c.close();
  await browser.close();

  // The table.
  const load1 = os.loadavg();
  const fmt = (x) => x.toFixed(0).padStart(7);
  const allPageTasks = pages.reduce((a, p) => a + p.tasks, 0);
  const frozen = pages.reduce((a, p) => a + p.frozen, 0);
  const total = pages.reduce((a, p) => a + p.ms, 0);
  console.log(`\nWeb client benchmark: ${MESSAGES} messages, ${USERS} users, wave of ${WAVE}; ${os.cpus().length} CPUs, load average ${load0[0].toFixed(2)} at start, ${load1[0].toFixed(2)} at end (${((Date.now() - t00) / 1000).toFixed(0)} s)\n`);
  console.log('Paging back (every 10th page, and the last):');
  console.log('   page   ms  longest task  long tasks  drawn  DOM nodes');
  pages.forEach((p, i) => {
    if (i % 10 === 0 || i === pages.length - 1) {
      console.log(`${String(i + 1).padStart(7)}${fmt(p.ms)}${fmt(p.longest)}       ${String(p.tasks).padStart(5)}    ${String(p.shown).padStart(6)}   ${String(p.nodes).padStart(7)}`);
    }
  });
  console.log(`  pages: ${pages.length}, total ${(total / 1000).toFixed(1)} s, page time ${Math.min(...pages.map((p) => p.ms)).toFixed(0)}–${Math.max(...pages.map((p) => p.ms)).toFixed(0)} ms, `
    + `${allPageTasks} long tasks (${(frozen / 1000).toFixed(1)} s), longest ${Math.max(...pages.map((p) => p.longest)).toFixed(0)} ms `
    + `(target: none over 50 ms), pages with a task over 50 ms: ${pages.filter((p) => p.longest > 50).length}`);
  if (cpuTasks) {
    const top = cpuTasks.slice(0, 5).map((t) => `${t.ms.toFixed(0)} (${t.cpu.toFixed(0)})`).join(', ');
    const byCpu = [...cpuTasks].sort((a, b) => b.cpu - a.cpu);
    console.log(`  traced: ${cpuTasks.length} tasks of the page's work; over 50 ms on the clock: ${cpuTasks.filter((t) => t.ms > 50).length}, `
      + `on the CPU: ${cpuTasks.filter((t) => t.cpu > 50).length}; longest on the clock (on the CPU): ${top}; `
      + `longest on the CPU: ${byCpu[0] ? byCpu[0].cpu.toFixed(0) : 0} ms`);
    for (const t of byCpu.slice(0, 3)) console.log(`    ${t.cpu.toFixed(0)} ms on the CPU: ${t.parts}`);
  }
  console.log(`\nRoom switch back to Général after paging back through its ${MESSAGES} messages (target: under 100 ms):`);
  console.log(`  ${switches.map((s) => `${s.ms.toFixed(0)} ms (longest task ${s.longest.toFixed(0)})`).join(', ')}`);
  console.log(`\nLogin wave: ${WAVE} logins in ${(waveMs / 1000).toFixed(1)} s, ${peopleRows} rows in People (target: no long task over 50 ms):`);
  console.log(`  ${waveResult.tasks} long tasks (${waveResult.frozen.toFixed(0)} ms), longest ${waveResult.longest.toFixed(0)} ms; People rows added or moved: ${waveResult.rowsAdded}`);
  if (waveCpu) {
    // The server hashes 150 passwords (Argon2id) on the same cores meanwhile: the clock
    // counts the browser's waits for a core, the CPU time what the client costs.
    const top = waveCpu.slice(0, 5).map((t) => `${t.ms.toFixed(0)} (${t.cpu.toFixed(0)})`).join(', ');
    console.log(`  traced: ${waveCpu.length} tasks of the page's work; over 50 ms on the clock: ${waveCpu.filter((t) => t.ms > 50).length}, `
      + `on the CPU: ${waveCpu.filter((t) => t.cpu > 50).length}; longest on the clock (on the CPU): ${top}; `
      + `longest on the CPU: ${Math.max(0, ...waveCpu.map((t) => t.cpu)).toFixed(0)} ms`);
  }
} finally {
  await server.stop();
}
