// Registration the company controls: the sign-in screen shows what the server's mode
// allows, and administrators approve accounts, hand out invitations and create accounts
// from the panel.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  ADMIN_PASSWORD, PASSWORD, Server, launchBrowser, openPage, screenshot, signIn, uniqueName,
} from './helpers.mjs';

let browser;
const servers = [];

after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop();
});

async function setUp(mode) {
  const server = await Server.start(`registration = "${mode}"`);
  servers.push(server);
  browser ??= await launchBrowser();
  const admin = await openPage(browser, server.url);
  await signIn(admin, 'admin', ADMIN_PASSWORD);
  await admin.getByRole('button', { name: /^Administration/ }).click();
  // Accounts waiting, invitations and account creation are the panel's Accounts card.
  await admin.getByRole('tab', { name: /^Accounts/ }).click();
  await admin.locator('#acct-heading').waitFor();
  return { server, admin };
}

async function fillRegistration(page, who) {
  const form = page.locator('#register-form');
  await form.getByLabel('First name').fill('Régine');
  await form.getByLabel('Last name').fill('Testeur');
  await form.getByLabel(/^Username/).fill(who.username);
  await form.getByLabel(/^Alias/).fill(who.alias);
  await form.getByLabel(/^Password/).fill(PASSWORD);
  await form.getByLabel('Repeat the password').fill(PASSWORD);
  await form.getByRole('button', { name: 'Create my account' }).click();
}

test('with approval, a new account waits until an administrator approves it from the panel', async () => {
  const { server, admin } = await setUp('approval');
  const page = await openPage(browser, server.url);
  await page.getByRole('tab', { name: 'Create an account' }).click();
  await page.getByText('An administrator approves each new account').waitFor();
  const who = uniqueName('regine');
  await fillRegistration(page, who);
  await page.getByText(/waits for an administrator's approval/).waitFor();
  assert.equal(await page.locator('body').getAttribute('data-screen'), 'auth');
  // The administrator sees it live and approves it.
  const row = admin.locator(`#acct-list li[data-account="${who.username}"]`);
  await row.waitFor();
  await screenshot(admin, 'admin-account-request');
  await row.getByRole('button', { name: 'Approve' }).click();
  await row.waitFor({ state: 'detached' });
  await signIn(page, who.username);
  await page.context().close();
});

test('with invitations, a link from the panel opens the form with its code', async () => {
  const { server, admin } = await setUp('invite');
  await admin.getByRole('button', { name: 'Create an invitation' }).click();
  await admin.locator('#invite-result').filter({ hasText: '#invite=' }).waitFor();
  const shown = await admin.locator('#invite-result').textContent();
  const link = shown.match(/https?:\/\/\S+#invite=[0-9a-f]+/)[0];
  const page = await openPage(browser, server.url);
  await page.goto(link);
  await page.locator('#register-form:not([hidden])').waitFor();
  assert.match(await page.getByLabel(/^Invitation code/).inputValue(), /^[0-9a-f]{64}$/);
  const who = uniqueName('ines');
  await fillRegistration(page, who);
  await page.locator('body[data-screen="app"]').waitFor();
  // Used once: a second registration with it is refused next to the field.
  const again = await openPage(browser, server.url);
  await again.goto(link);
  await fillRegistration(again, uniqueName('ivan'));
  await again.locator('#reg-invite-error').filter({ hasText: /unknown, already used or expired/ }).waitFor();
  await page.context().close();
  await again.context().close();
});

test('closed registration hides account creation; the administrator creates accounts', async () => {
  const { server, admin } = await setUp('closed');
  const page = await openPage(browser, server.url);
  assert.equal(await page.getByRole('tab', { name: 'Create an account' }).isVisible(), false);
  await page.getByText('Accounts on this server are created by an administrator').waitFor();
  await screenshot(page, 'signin-registration-closed');
  const who = uniqueName('carla');
  await admin.getByLabel('Username', { exact: true }).fill(who.username);
  await admin.getByLabel('Alias', { exact: true }).fill(who.alias);
  await admin.locator('#adduser-first').fill('Carla');
  await admin.locator('#adduser-last').fill('Martin');
  await admin.getByRole('button', { name: 'Create the account' }).click();
  const result = admin.locator('#adduser-result');
  await result.filter({ hasText: 'password' }).waitFor();
  const password = (await result.textContent()).match(/: (\S+)$/)[1];
  await signIn(page, who.username, password);
  await page.context().close();
});
