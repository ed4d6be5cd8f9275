// The web client against a cluster (issue 16): two `salon serve` nodes sharing a fresh
// PostgreSQL database and NATS. The administrator's Connected users card shows each
// session's node; a message sent on one node reaches the page open on the other; and a
// page whose node goes away reconnects to another node with its token (as behind a load
// balancer), without signing in again.
//
// Needs PostgreSQL on 127.0.0.1:5432 (psql, trust auth) and NATS on 127.0.0.1:4222:
// skipped with a loud message when either is missing, unless SALON_REQUIRE_SERVICES=1.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_PASSWORD, Server, launchBrowser, openPage, openRoom, register, send, signIn, until, viaSocket,
} from './helpers.mjs';

function reachable(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

const name = `salon_browser_${process.pid}_${Date.now() % 1_000_000}`;
let missing = null;
let nodes = [];
let browser;

before(async () => {
  for (const [what, port] of [['PostgreSQL', 5432], ['NATS', 4222]]) {
    if (!(await reachable(port))) missing = `${what} on 127.0.0.1:${port}`;
  }
  if (missing) {
    if (process.env.SALON_REQUIRE_SERVICES === '1') throw new Error(`${missing} is unreachable and SALON_REQUIRE_SERVICES=1`);
    console.error(`\n=== SKIPPED: the cluster browser test needs ${missing} ===\n`);
    return;
  }
  execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', 'test', '-qc', `CREATE DATABASE ${name} ENCODING 'UTF8'`]);
  for (const node of [1, 2]) {
    nodes.push(await Server.start([
      `database_url = "postgres://postgres@127.0.0.1:5432/${name}"`,
      `node_id = ${node}`,
      '[cluster]',
      'nats_urls = ["nats://127.0.0.1:4222"]',
      `name = "${name}"`,
    ].join('\n')));
  }
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const n of nodes) await n.stop();
  if (!missing) {
    execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', 'test', '-qc', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
  }
});

test('Connected users shows the node of each session; messages cross nodes; a page whose node stops reconnects to another', async (t) => {
  if (missing) return t.skip(`needs ${missing}`);
  const [one, two] = nodes;
  // Alice registers and stays signed in on node 2; the administrator is on node 1.
  const alice = await openPage(browser, two.url);
  await register(alice, 'alice');
  const admin = await openPage(browser, one.url);
  await signIn(admin, 'admin', ADMIN_PASSWORD);
  await admin.getByRole('button', { name: /^Administration/ }).click();
  await admin.getByRole('tab', { name: /^Connected/ }).click();
  await admin.locator('#conn-refresh').click();
  await until(admin, () => [...document.querySelectorAll('#conn-list > li')]
    .some((li) => /alice/.test(li.textContent) && / on node 2 /.test(li.textContent)));
  const adminRow = await admin.locator('#conn-list > li', { hasText: '(you)' }).textContent();
  assert.match(adminRow, / on node 1 /);

  // A message sent through node 1 reaches alice's page on node 2.
  await openRoom(admin, 'Général');
  await openRoom(alice, 'Général');
  await viaSocket(admin, 'admin', [['send', { room: 'Général', text: 'bonjour du nœud 1' }]], { password: ADMIN_PASSWORD });
  await until(alice, () => [...document.querySelectorAll('#message-list li.msg .msg-text')].some((e) => e.textContent === 'bonjour du nœud 1'));

  // Node 2 stops; alice's page is sent on to node 1 (what a load balancer does: here the
  // page is pointed there) and resumes with its token: no sign-in screen.
  const token = await alice.evaluate(() => sessionStorage.getItem('salon.token') || localStorage.getItem('salon.token'));
  assert.ok(token, 'the page keeps a resume token');
  await two.stop();
  nodes = [one];
  const moved = await openPage(browser, one.url);
  await moved.evaluate((tok) => { sessionStorage.setItem('salon.token', tok); }, token);
  await moved.reload();
  await moved.locator('body[data-screen="app"]').waitFor();
  await openRoom(moved, 'Général');
  await send(moved, 'de retour par le nœud 1');
  await until(admin, () => [...document.querySelectorAll('#message-list li.msg .msg-text')].some((e) => e.textContent === 'de retour par le nœud 1'));
});
