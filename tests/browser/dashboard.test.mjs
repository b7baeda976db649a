// Browser tests of the Konnect dashboard: the real konnect binary, Debian's Chromium, and the
// product page's five steps done literally by clicking.
//
//   cd tests/browser && npm ci && KONNECT_BIN=../../build/konnect node --test
//
// Environment:
//   KONNECT_BIN          the konnect binary (default: build/konnect in this repository)
//   KONNECT_TEST_OUTPUT  where full-page screenshots go (default: tests/browser/output/)
//
// Every test starts its own server on a free port with a fresh data directory and stops it with
// SIGTERM at the end. Every wait is bounded. Nothing secret is printed: assertions about a secret
// never carry the secret in their message, and screenshots mask the field that shows it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHmac } from 'node:crypto';
import { chromium } from 'playwright-core';

import { fetchT, freePort, konnectBin, redact, sleep } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const OUTPUT = path.resolve(process.env.KONNECT_TEST_OUTPUT || path.join(HERE, 'output'));
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const STEP_MS = 10_000; // any one UI wait
const START_MS = 15_000; // server start
const TEST_MS = 120_000; // a whole test
const KEY_RE = /^sk_(test|live|admin)_[0-9A-Za-z]{38}$/;

const rand = () => Math.random().toString(36).slice(2, 10);

// Polls fn until it returns a truthy value or ms pass; then throws with message.
async function until(fn, message, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${message}`);
    await sleep(100);
  }
}

// The fake OpenAI-compatible model backend of the integration tests, as a process of its own.
// Resolves with its URL once it listens; teardown stops it.
async function startFakeBackend(env) {
  const port = await freePort();
  const proc = spawn('python3', [path.join(REPO, 'tests', 'integration', 'fake_backend.py'), '--port', String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  env.helpers.push(proc);
  let out = '';
  proc.stdout.on('data', (c) => {
    out += c.toString('utf8');
  });
  proc.stderr.on('data', (c) => {
    out += c.toString('utf8');
  });
  await until(() => {
    if (proc.exitCode !== null) throw new Error(`fake_backend.py exited: ${out}`);
    return /listening on (\S+)/.test(out);
  }, 'the fake model backend listens', START_MS);
  return out.match(/listening on (\S+)/)[1];
}

// ------------------------------------------------------------------------------------------------
// Fixture: a server, a browser, a page. Cleanup is registered before anything can fail.
// Options: backend (start the fake model backend and point KONNECT_MODEL_URL at it), plans (an
// object written as the data directory's plans.json).

async function setup(t, opts = {}) {
  const env = { shots: 0, problems: [], serverLog: '', secrets: new Set(), helpers: [] };
  t.after(() => teardown(env));
  const bin = konnectBin();
  if (!bin || !existsSync(bin)) throw new Error('set KONNECT_BIN to the konnect binary (none found at build/konnect)');

  env.slug = t.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60);
  env.outDir = path.join(OUTPUT, env.slug);
  await rm(env.outDir, { recursive: true, force: true });
  await mkdir(env.outDir, { recursive: true });

  env.dataDir = await mkdtemp(path.join(tmpdir(), 'konnect-browser-'));
  const port = await freePort();
  env.port = port;
  env.base = `http://127.0.0.1:${port}`;
  const childEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KONNECT_')) childEnv[k] = v;
  childEnv.KONNECT_DATA_DIR = env.dataDir;
  if (opts.plans) await writeFile(path.join(env.dataDir, 'plans.json'), JSON.stringify(opts.plans));
  if (opts.backend) childEnv.KONNECT_MODEL_URL = await startFakeBackend(env);
  env.server = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--threads', '2'], {
    env: childEnv, stdio: ['ignore', 'pipe', 'pipe'],
  });
  env.exited = new Promise((resolve) => env.server.on('exit', (code, signal) => resolve({ code, signal })));
  env.server.on('error', (e) => {
    env.spawnError = e;
  });
  const keep = (chunk) => {
    env.serverLog = (env.serverLog + chunk.toString('utf8')).slice(-4_000_000);
  };
  env.server.stdout.on('data', keep);
  env.server.stderr.on('data', keep);

  // Wait for /healthz; fail at once if the server dies.
  const deadline = Date.now() + START_MS;
  for (;;) {
    if (env.spawnError) throw new Error(`could not start ${bin}: ${env.spawnError.message}`);
    if (env.server.exitCode !== null || env.server.signalCode !== null) {
      throw new Error(`konnect serve exited (${env.server.exitCode ?? env.server.signalCode}) before answering /healthz:\n${redact(env.serverLog.slice(-2000))}`);
    }
    try {
      const r = await fetchT(`${env.base}/healthz`, {}, 1_000);
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`konnect serve did not answer /healthz within ${START_MS} ms`);
    await sleep(50);
  }

  // Fail fast, with a clear reason, when this build has no dashboard.
  const page = await fetchT(`${env.base}/signin`);
  const html = await page.text();
  if (page.status !== 200 || !html.includes('/assets/app.js')) {
    throw new Error(`this konnect build does not serve the dashboard: GET /signin answered ${page.status} without the app`);
  }
  const sess = await fetchT(`${env.base}/dashboard/api/session`);
  if (sess.status !== 401) throw new Error(`GET /dashboard/api/session without a cookie answered ${sess.status}, expected 401`);

  env.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  env.context = await newContext(env);
  env.page = await newPage(env, env.context);
  return env;
}

async function newContext(env) {
  const context = await env.browser.newContext({ viewport: { width: 1360, height: 860 }, locale: 'en-US', timezoneId: 'UTC' });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: env.base });
  return context;
}

async function newPage(env, context) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.setDefaultNavigationTimeout(15_000);
  page.on('pageerror', (e) => env.problems.push(`page error: ${redact(String(e && e.message))}`));
  page.on('console', (m) => {
    const text = m.text();
    if (/Content Security Policy|Refused to (load|execute|apply|connect|frame)/i.test(text)) env.problems.push(`CSP: ${redact(text)}`);
  });
  return page;
}

// Stops everything the test started. Then the server must have exited 0 on SIGTERM (as the README
// promises; a sanitizer report would make it fail) and printed none of the secrets the test saw.
async function teardown(env) {
  let exit = null;
  try {
    // The last state of every open page, which is what a failure needs.
    if (env.context && env.outDir) {
      for (const p of env.context.pages()) await shot(env, p, 'final').catch(() => {});
    }
    if (env.browser) await Promise.race([env.browser.close().catch(() => {}), sleep(10_000)]);
    if (env.server && env.server.exitCode === null && env.server.signalCode === null) {
      env.server.kill('SIGTERM');
      exit = await Promise.race([env.exited, sleep(8_000).then(() => null)]);
      if (!exit) {
        env.server.kill('SIGKILL');
        await Promise.race([env.exited, sleep(2_000)]);
        exit = { code: null, signal: 'SIGKILL after 8 s' };
      }
    }
  } finally {
    for (const p of env.helpers) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    if (env.dataDir) await rm(env.dataDir, { recursive: true, force: true });
  }
  if (exit && exit.code !== 0) {
    throw new Error(`konnect serve did not exit 0 on SIGTERM (${exit.code ?? exit.signal}):\n${redact(env.serverLog.slice(-3000))}`);
  }
  for (const secret of env.secrets) {
    if (env.serverLog.includes(secret) || env.serverLog.includes(secret.slice(8))) {
      throw new Error('the server printed a secret key in its output');
    }
  }
}

// The page's own problems (uncaught errors, CSP violations) fail the test.
function assertCleanPage(env) {
  assert.deepEqual(env.problems, [], 'no uncaught page errors and no Content-Security-Policy violations');
}

// A full-page screenshot; any field that shows a secret or an invite link is masked.
async function shot(env, page, name) {
  const file = path.join(env.outDir, `${String(++env.shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({
    path: file, fullPage: true, animations: 'disabled', timeout: STEP_MS,
    mask: [page.locator('input[readonly]')], maskColor: '#cbd5e1',
  });
}

// ------------------------------------------------------------------------------------------------
// Steps

function newUser() {
  return { email: `owner-${rand()}@example.com`, password: `correct horse ${rand()} battery` };
}

async function signUp(env, page, user) {
  await page.goto(`${env.base}/signup`);
  await page.getByRole('heading', { level: 1, name: 'Create your Konnect account' }).waitFor();
  await shot(env, page, 'signup');
  await page.getByLabel('Email', { exact: true }).fill(user.email);
  await page.getByLabel('Password', { exact: true }).fill(user.password);
  await page.getByRole('button', { name: 'Create account', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor();
  await page.waitForURL(`${env.base}/`);
  await page.locator('.stat').first().waitFor();
  await shot(env, page, 'dashboard');
}

async function openApiKeys(env, page) {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Settings', exact: true }).click();
  await page.waitForURL(`${env.base}/settings`);
  await page.getByRole('heading', { level: 1, name: 'Settings' }).waitFor();
  await shot(env, page, 'settings');
  await page.getByRole('navigation', { name: 'Settings' }).getByRole('link', { name: 'API Keys', exact: true }).click();
  await page.waitForURL(`${env.base}/settings/api-keys`);
  await page.locator('section[aria-label="Your API keys"]:not([aria-busy])').waitFor();
  await shot(env, page, 'api-keys');
}

// Reads the secret shown in the open dialog through its Copy button and the clipboard.
async function copySecretFromDialog(env, page, dialog, shotName) {
  await dialog.getByText("Copy your key now — it won't be shown again.", { exact: true }).waitFor();
  await shot(env, page, shotName);
  await dialog.getByRole('button', { name: 'Copy', exact: true }).click();
  await dialog.getByText('Copied to clipboard.').waitFor();
  const secret = await page.evaluate(() => navigator.clipboard.readText());
  assert.ok(KEY_RE.test(secret), 'the clipboard holds a whole secret key after Copy');
  env.secrets.add(secret);
  return secret;
}

// Create new secret key → name → Create → Copy. Options: mode 'test'|'live', expiry label,
// allowlist text.
async function createKey(env, page, name, opts = {}) {
  await page.getByRole('button', { name: 'Create new secret key', exact: true }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByRole('heading', { name: 'Create new secret key' }).waitFor();
  await dialog.getByLabel('Name', { exact: true }).fill(name);
  if (opts.mode === 'live') await dialog.getByRole('radio', { name: /^Live/ }).check();
  if (opts.expiry) await dialog.getByLabel('Expires', { exact: true }).selectOption({ label: opts.expiry });
  if (opts.allowlist) await dialog.getByLabel('IP allowlist (optional)').fill(opts.allowlist);
  if (opts.beforeCreate) await opts.beforeCreate(dialog);
  await dialog.getByRole('button', { name: 'Create', exact: true }).click();
  const secret = await copySecretFromDialog(env, page, dialog, opts.shotName || 'key-created-masked');
  return { secret, dialog };
}

async function closeSecretDialog(page, dialog) {
  await dialog.getByRole('button', { name: 'Done', exact: true }).click();
  await dialog.waitFor({ state: 'detached' });
}

const hintOf = (secret) => `${secret.slice(0, secret.indexOf('_', 3) + 1)}…${secret.slice(-4)}`;
const keyRow = (page, secret) => page.locator('table.keys-table tbody tr').filter({ hasText: hintOf(secret) });

async function rowText(row) {
  return (await row.innerText({ timeout: STEP_MS })).replace(/\s+/g, ' ');
}

// The secret appears nowhere in the page, its fields, its storage or its address.
async function assertSecretGone(page, secret) {
  const html = await page.content();
  assert.ok(!html.includes(secret), 'the secret is absent from page.content()');
  assert.ok(!html.includes(secret.slice(8)), 'no part of the secret body is in page.content()');
  const found = await page.evaluate((s) => {
    const inValues = [...document.querySelectorAll('input, textarea')].some((e) => e.value.includes(s));
    const inText = document.body.innerText.includes(s);
    const inStorage = [localStorage, sessionStorage].some((st) =>
      Array.from({ length: st.length }, (_, i) => st.key(i)).some((k) => k.includes(s) || String(st.getItem(k)).includes(s)));
    const inUrl = location.href.includes(s);
    const dialogs = document.querySelectorAll('dialog').length;
    return { inValues, inText, inStorage, inUrl, dialogs };
  }, secret);
  assert.deepEqual(found, { inValues: false, inText: false, inStorage: false, inUrl: false, dialogs: 0 },
    'the secret is in no field, text, storage or URL, and no dialog is left');
}

async function chat(env, secret) {
  const r = await fetchT(`${env.base}/v1/chat`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ message: 'Hello' }),
  }, 10_000);
  const body = await r.json().catch(() => null);
  return { status: r.status, code: body && body.error ? body.error.code : null };
}

// A same-origin call from the page, as the app makes it but with headers of the test's choosing.
function pageFetch(page, method, url, body, headers = {}) {
  return page.evaluate(async ({ method, url, body, headers }) => {
    const r = await fetch(url, {
      method, credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
    let json = null;
    try {
      json = await r.json();
    } catch {
      json = null;
    }
    return { status: r.status, code: json && json.error ? json.error.code : null, json };
  }, { method, url, body, headers });
}

// ------------------------------------------------------------------------------------------------
// Tests

test('the product page steps create a key that works, and revoking it in the UI refuses it', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  await signUp(env, page, newUser());

  // 1. Navigate to your Dashboard Settings. 2. Click on the "API Keys" section.
  await openApiKeys(env, page);
  await page.getByText('No API keys yet').waitFor();
  await page.getByText('Never expose keys in client-side code').waitFor();
  await shot(env, page, 'api-keys-empty');

  // 3. Click "Create new secret key".
  await page.getByRole('button', { name: 'Create new secret key', exact: true }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByRole('heading', { name: 'Create new secret key' }).waitFor();
  await shot(env, page, 'create-dialog');

  // 4. Give your key a name and click "Create".
  await dialog.getByLabel('Name', { exact: true }).fill('Seed example key');
  await dialog.getByRole('button', { name: 'Create', exact: true }).click();

  // 5. Copy your key immediately - it won't be shown again.
  const secret = await copySecretFromDialog(env, page, dialog, 'create-secret-shown-masked');
  assert.ok(secret.startsWith('sk_test_'), 'a new key is a test key by default');

  // The key works at once, from server-side code.
  assert.deepEqual(await chat(env, secret), { status: 200, code: null }, 'POST /v1/chat with the new key');

  await closeSecretDialog(page, dialog);
  await assertSecretGone(page, secret);

  const row = keyRow(page, secret);
  await row.waitFor();
  const text = await rowText(row);
  for (const want of ['Seed example key', hintOf(secret), 'Test', 'Development', 'Active', 'never']) {
    assert.ok(text.includes(want), `the key's row shows ${JSON.stringify(want)}`);
  }
  await shot(env, page, 'api-keys-one-key');

  // Revoke it in the UI: confirmation, then the row turns grey with its status.
  await row.getByRole('button', { name: 'Revoke', exact: true }).click();
  const confirm = page.getByRole('dialog');
  await confirm.getByRole('heading', { name: 'Revoke API key' }).waitFor();
  await shot(env, page, 'revoke-confirm');
  await confirm.getByRole('button', { name: 'Revoke key', exact: true }).click();
  await confirm.waitFor({ state: 'detached' });
  await until(async () => (await rowText(row)).includes('Revoked'), 'the row shows Revoked');
  assert.match((await row.getAttribute('class')) || '', /is-inactive/, 'a revoked key is greyed out');
  assert.equal(await row.getByRole('button').count(), 0, 'a revoked key offers no actions');
  await shot(env, page, 'api-keys-revoked');

  // Refused from the very next request.
  assert.deepEqual(await chat(env, secret), { status: 401, code: 'api_key_revoked' }, 'POST /v1/chat with the revoked key');
  await assertSecretGone(page, secret);
  assertCleanPage(env);
});

test('rolling a key with a one-hour grace period keeps both keys working', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  await signUp(env, page, newUser());
  await openApiKeys(env, page);

  const { secret: oldSecret, dialog } = await createKey(env, page, 'Backend server');
  await closeSecretDialog(page, dialog);
  const oldRow = keyRow(page, oldSecret);
  await oldRow.waitFor();

  await oldRow.getByRole('button', { name: 'Roll key', exact: true }).click();
  const roll = page.getByRole('dialog');
  await roll.getByRole('heading', { name: 'Roll key' }).waitFor();
  for (const label of ['Now', '1 hour', '24 hours', '7 days']) {
    await roll.getByRole('radio', { name: label, exact: true }).waitFor();
  }
  await roll.getByRole('radio', { name: '1 hour', exact: true }).check();
  await shot(env, page, 'roll-dialog');
  await roll.getByRole('button', { name: 'Roll key', exact: true }).click();
  const newSecret = await copySecretFromDialog(env, page, roll, 'roll-secret-shown-masked');
  assert.ok(newSecret !== oldSecret, 'rolling gives a different secret');
  assert.ok(newSecret.startsWith('sk_test_'), 'the replacement keeps the mode');
  await closeSecretDialog(page, roll);
  await assertSecretGone(page, newSecret);
  await assertSecretGone(page, oldSecret);

  assert.deepEqual(await chat(env, oldSecret), { status: 200, code: null }, 'the old key works during its grace period');
  assert.deepEqual(await chat(env, newSecret), { status: 200, code: null }, 'the new key works');

  await until(async () => /expires in (\d+ (h|min))/.test(await rowText(oldRow)), 'the old key shows "expires in …"');
  const oldText = await rowText(oldRow);
  assert.match(oldText, /expires in (1 h|[1-6]?\d min)/, 'the old key expires in about an hour');
  assert.ok(oldText.includes('Rolled'), 'the old key is marked Rolled');
  assert.equal(await oldRow.getByRole('button', { name: 'Roll key', exact: true }).count(), 0, 'a rolled key cannot be rolled again');
  const newText = await rowText(keyRow(page, newSecret));
  assert.ok(newText.includes('Backend server') && newText.includes('Active') && newText.includes('never'),
    'the replacement has the same name, is active and does not expire');
  await shot(env, page, 'api-keys-rolled');

  // Rename the new key.
  await keyRow(page, newSecret).getByRole('button', { name: 'Edit', exact: true }).click();
  const rename = page.getByRole('dialog');
  await rename.getByLabel('Name', { exact: true }).fill('Backend server (2025)');
  await rename.getByRole('button', { name: 'Save', exact: true }).click();
  await rename.waitFor({ state: 'detached' });
  await until(async () => (await rowText(keyRow(page, newSecret))).includes('Backend server (2025)'), 'the renamed key shows its new name');
  await shot(env, page, 'api-keys-renamed');
  assertCleanPage(env);
});

test('the create dialog: type, environment, expiry, IP allowlist and restrictions', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  await signUp(env, page, newUser());
  await openApiKeys(env, page);

  // A name is required, and is checked before anything is sent.
  await page.getByRole('button', { name: 'Create new secret key', exact: true }).click();
  let dialog = page.getByRole('dialog');
  const env_ = dialog.getByLabel('Environment', { exact: true });
  assert.equal(await env_.inputValue(), 'development', 'a test key defaults to development');
  await dialog.getByRole('radio', { name: /^Live/ }).check();
  assert.equal(await env_.inputValue(), 'production', 'a live key defaults to production');
  await dialog.getByRole('radio', { name: /^Test/ }).check();
  assert.equal(await env_.inputValue(), 'development');
  await dialog.getByRole('button', { name: 'Create', exact: true }).click();
  await dialog.getByText('Give your key a name.').waitFor();
  await dialog.getByLabel('Expires', { exact: true }).selectOption({ label: 'On a date…' });
  await dialog.getByLabel('Expiry date').waitFor();
  await shot(env, page, 'create-dialog-validation');
  await dialog.getByRole('button', { name: 'Cancel', exact: true }).click();
  await dialog.waitFor({ state: 'detached' });

  // An admin key, chosen in the same dialog: sk_admin_, for the management API, never /v1/chat.
  await page.getByRole('button', { name: 'Create new secret key', exact: true }).click();
  dialog = page.getByRole('dialog');
  await dialog.getByLabel('Name', { exact: true }).fill('Provisioning');
  await dialog.getByRole('radio', { name: /^Admin/ }).check();
  await dialog.getByRole('button', { name: 'Create', exact: true }).click();
  const admin = await copySecretFromDialog(env, page, dialog, 'admin-key-created');
  assert.ok(admin.startsWith('sk_admin_'), 'choosing Admin makes an admin key');
  await closeSecretDialog(page, dialog);
  assert.ok((await rowText(keyRow(page, admin))).includes('Admin'), 'the row says it is an admin key');
  assert.deepEqual(await chat(env, admin), { status: 403, code: 'insufficient_scope' });
  const listed = await fetchT(`${env.base}/v1/keys`, { headers: { Authorization: `Bearer ${admin}` } }, 10_000);
  assert.equal(listed.status, 200, 'the admin key lists the keys through the management API');

  // A live key for production: the live badge; no model backend yet, so 503.
  let made = await createKey(env, page, 'Production API', { mode: 'live' });
  const live = made.secret;
  assert.ok(live.startsWith('sk_live_'), 'choosing Live makes a live key');
  await closeSecretDialog(page, made.dialog);
  let text = await rowText(keyRow(page, live));
  assert.ok(text.includes('Live') && text.includes('Production'), 'the live key shows its badge and environment');
  assert.deepEqual(await chat(env, live), { status: 502, code: 'model_backend_error' });

  // 30 days: a date in the Expires column.
  made = await createKey(env, page, 'Thirty days', { expiry: '30 days' });
  const thirty = made.secret;
  await closeSecretDialog(page, made.dialog);
  const in30 = new Date(Date.now() + 30 * 86400 * 1000);
  const dateText = new Intl.DateTimeFormat('en-US', { dateStyle: 'medium', timeZone: 'UTC' }).format(in30);
  text = await rowText(keyRow(page, thirty));
  assert.ok(text.includes(dateText) || text.includes(new Intl.DateTimeFormat('en-US', { dateStyle: 'medium', timeZone: 'UTC' }).format(new Date(in30.getTime() + 86400000))),
    'a 30-day key shows its expiry date');

  // An allowlist without this machine's address: the key is refused from here.
  made = await createKey(env, page, 'Office only', { allowlist: '203.0.113.7\n198.51.100.0/24' });
  const fenced = made.secret;
  await closeSecretDialog(page, made.dialog);
  text = await rowText(keyRow(page, fenced));
  assert.ok(text.includes('Allowed: 2 ranges'), 'the row says the key has an allowlist');
  assert.deepEqual(await chat(env, fenced), { status: 401, code: 'ip_not_allowed' });

  // A restricted key: one model (not the default one) and its own rate.
  made = await createKey(env, page, 'One model', {
    beforeCreate: async (dialog) => {
      await dialog.getByLabel('Models (optional)').fill('other-model');
      await dialog.getByLabel('Requests per minute (optional)').fill('2');
    },
  });
  const narrow = made.secret;
  await closeSecretDialog(page, made.dialog);
  text = await rowText(keyRow(page, narrow));
  assert.ok(text.includes('Models: other-model') && text.includes('2 requests/min'), 'the row shows the restrictions');
  assert.deepEqual(await chat(env, narrow), { status: 403, code: 'model_not_allowed' });

  // Edit lifts the restrictions of an existing key: all models, no own rate; then the allowlist.
  await keyRow(page, narrow).getByRole('button', { name: 'Edit', exact: true }).click();
  let edit = page.getByRole('dialog');
  assert.equal(await edit.getByLabel('Models', { exact: true }).inputValue(), 'other-model', 'the dialog shows the key\'s models');
  assert.equal(await edit.getByLabel('Requests per minute', { exact: true }).inputValue(), '2', 'and its own rate');
  await edit.getByLabel('Requests per minute', { exact: true }).fill('0');
  await edit.getByRole('button', { name: 'Save', exact: true }).click();
  assert.ok((await edit.innerText()).includes('A whole number from 1 to 1,000,000'), 'a bad rate is explained in the dialog');
  await edit.getByLabel('Models', { exact: true }).fill('');
  await edit.getByLabel('Requests per minute', { exact: true }).fill('');
  await edit.getByRole('button', { name: 'Save', exact: true }).click();
  await edit.waitFor({ state: 'detached' });
  await until(async () => !(await rowText(keyRow(page, narrow))).includes('Models:'), 'the row no longer shows restrictions');
  await until(async () => (await chat(env, narrow)).status === 200, 'the key may use every model again');
  await keyRow(page, fenced).getByRole('button', { name: 'Edit', exact: true }).click();
  edit = page.getByRole('dialog');
  await edit.getByLabel('IP allowlist', { exact: true }).fill('');
  await edit.getByRole('button', { name: 'Save', exact: true }).click();
  await edit.waitFor({ state: 'detached' });
  await until(async () => (await chat(env, fenced)).status === 200, 'the allowlist is lifted');

  // A bad allowlist entry is explained in the dialog, which stays open.
  await page.getByRole('button', { name: 'Create new secret key', exact: true }).click();
  dialog = page.getByRole('dialog');
  await dialog.getByLabel('Name', { exact: true }).fill('Bad allowlist');
  await dialog.getByLabel('IP allowlist (optional)').fill('not-an-address');
  await dialog.getByRole('button', { name: 'Create', exact: true }).click();
  await until(async () => (await dialog.locator('.field-error:not([hidden]), .alert-error:not([hidden])').count()) > 0, 'the dialog shows why the allowlist is refused');
  await shot(env, page, 'create-dialog-bad-allowlist');
  await dialog.getByRole('button', { name: 'Cancel', exact: true }).click();
  await dialog.waitFor({ state: 'detached' });

  // Closing with Escape also wipes the secret (the first Escape is held back with a warning).
  await page.getByRole('button', { name: 'Create new secret key', exact: true }).click();
  dialog = page.getByRole('dialog');
  await dialog.getByLabel('Name', { exact: true }).fill('Escape hatch');
  await dialog.getByRole('button', { name: 'Create', exact: true }).click();
  await dialog.getByText("Copy your key now — it won't be shown again.", { exact: true }).waitFor();
  const hidden = await dialog.getByLabel('Secret key').inputValue();
  assert.ok(KEY_RE.test(hidden), 'the dialog shows the whole key');
  env.secrets.add(hidden);
  await page.keyboard.press('Escape');
  await dialog.getByText(/Copy your key first/).waitFor();
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });
  await assertSecretGone(page, hidden);
  await until(async () => (await page.locator('table.keys-table tbody tr').count()) === 6, 'the list shows all six keys (the admin key among them)');
  await shot(env, page, 'api-keys-several');
  for (const s of [live, thirty, fenced, narrow, hidden]) await assertSecretGone(page, s);
  assertCleanPage(env);
});

test('sign-in is throttled after repeated wrong passwords, with a clear message', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  const user = newUser();
  await signUp(env, page, user);
  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await page.waitForURL(`${env.base}/signin`);
  await page.getByText('You have signed out.').waitFor();
  await shot(env, page, 'signed-out');

  // Signed out, a settings page sends you to sign in.
  await page.goto(`${env.base}/settings/api-keys`);
  await page.waitForURL(/\/signin\?next=%2Fsettings%2Fapi-keys$/);

  const statuses = [];
  const alert = page.getByRole('alert');
  for (let i = 1; i <= 6; i++) {
    await page.getByLabel('Email', { exact: true }).fill(user.email);
    await page.getByLabel('Password', { exact: true }).fill(`wrong password ${i}`);
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/dashboard/api/signin') && r.request().method() === 'POST'),
      page.getByRole('button', { name: 'Sign in', exact: true }).click(),
    ]);
    statuses.push(resp.status());
    await alert.waitFor();
    if (i === 1) {
      assert.ok((await alert.innerText()).trim().length > 0, 'a wrong password shows a message');
      await shot(env, page, 'signin-wrong-password');
    }
  }
  assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429], 'five wrong passwords, then too_many_attempts');
  await until(async () => /too many/i.test(await alert.innerText()), 'the message mentions too many attempts');
  await shot(env, page, 'signin-throttled');
  assert.equal(page.url(), `${env.base}/signin?next=%2Fsettings%2Fapi-keys`, 'still on the sign-in page');
  assertCleanPage(env);
});

test('state-changing calls without the CSRF token are refused', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  await signUp(env, page, newUser());
  await openApiKeys(env, page);

  const body = { name: 'csrf probe', mode: 'test', environment: 'development' };
  const bare = await pageFetch(page, 'POST', '/dashboard/api/keys', body);
  assert.deepEqual([bare.status, bare.code], [403, 'csrf_failed'], 'POST /dashboard/api/keys without X-CSRF-Token');
  const wrong = await pageFetch(page, 'POST', '/dashboard/api/keys', body, { 'X-CSRF-Token': 'not-the-token' });
  assert.deepEqual([wrong.status, wrong.code], [403, 'csrf_failed'], 'POST /dashboard/api/keys with a wrong X-CSRF-Token');
  const list = await pageFetch(page, 'GET', '/dashboard/api/keys');
  assert.equal(list.status, 200);
  assert.equal(list.json.data.length, 0, 'no key was created by the refused calls');

  // The dashboard itself sends the token, so the same call from the UI works.
  const { secret, dialog } = await createKey(env, page, 'With token');
  await closeSecretDialog(page, dialog);
  await keyRow(page, secret).waitFor();

  // Sign-in from another origin is refused too.
  const r = await fetchT(`${env.base}/dashboard/api/signin`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Origin: 'https://evil.example' },
    body: JSON.stringify({ email: 'x@example.com', password: 'whatever-password' }),
  });
  const j = await r.json().catch(() => null);
  assert.deepEqual([r.status, j && j.error && j.error.code], [403, 'csrf_failed'], 'cross-origin sign-in');
  await shot(env, page, 'api-keys-after-csrf');
  assertCleanPage(env);
});

test('members: an invite link lets a new person join the account', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  const owner = newUser();
  await signUp(env, page, owner);
  await page.goto(`${env.base}/settings/members`);
  await page.getByRole('heading', { name: 'Members', level: 2 }).waitFor();
  await page.getByRole('cell', { name: owner.email }).waitFor();
  await shot(env, page, 'members');

  const invitee = `teammate-${rand()}@example.com`;
  await page.getByLabel('Email address', { exact: true }).fill(invitee);
  await page.getByRole('button', { name: 'Create invite link', exact: true }).click();
  const link = page.getByLabel(`Invite link for ${invitee}`);
  await link.waitFor();
  const url = await link.inputValue();
  assert.ok(url.startsWith(`${env.base}/invite#token=`), 'the invite link is an absolute /invite#token=… address');
  await page.getByRole('button', { name: 'Copy', exact: true }).click();
  assert.ok((await page.evaluate(() => navigator.clipboard.readText())) === url, 'Copy puts the link on the clipboard');
  await page.getByRole('cell', { name: invitee }).waitFor();
  await shot(env, page, 'members-invited');

  // The invitee, in a browser of their own.
  const context2 = await newContext(env);
  const page2 = await newPage(env, context2);
  await page2.goto(url);
  await page2.getByRole('heading', { level: 1, name: 'Join a Konnect account' }).waitFor();
  assert.equal(page2.url(), `${env.base}/invite`, 'the token is taken out of the address bar');
  await shot(env, page2, 'invite-accept');
  await page2.getByLabel('Password', { exact: true }).fill(`teammate ${rand()} password`);
  await page2.getByRole('button', { name: 'Accept invite', exact: true }).click();
  await page2.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor();
  await page2.getByText(`Signed in as ${invitee}`).waitFor();
  await page2.goto(`${env.base}/settings/members`);
  await page2.getByRole('cell', { name: owner.email }).waitFor();
  await page2.getByRole('cell', { name: invitee }).first().waitFor();
  await shot(env, page2, 'members-as-invitee');
  await context2.close();
  assertCleanPage(env);
});

// The operator's CLI against the test's data directory and listen address, as in the README.
function cli(env, ...args) {
  const childEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KONNECT_')) childEnv[k] = v;
  childEnv.KONNECT_DATA_DIR = env.dataDir;
  childEnv.KONNECT_LISTEN = `127.0.0.1:${env.port}`;
  const p = spawnSync(konnectBin(), args, { env: childEnv, encoding: 'utf8', timeout: 30_000 });
  assert.equal(p.status, 0, `konnect ${args.join(' ')} failed: ${redact(p.stderr || '')}`);
  return p;
}

test('an operator-made owner gets in with the link; members join signed in and are removed', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  const ownerEmail = `boss-${rand()}@example.com`;
  const ownerPassword = `boss ${rand()} password`;
  const made = cli(env, 'account', 'create', '--email', ownerEmail);
  const m = /(http:\/\/\S+\/set-password#token=\S+)/.exec(made.stderr);
  assert.ok(m, 'account create prints a set-password link');
  assert.ok(m[1].startsWith(`${env.base}/set-password#token=`), 'on the listen address');

  await page.goto(m[1]);
  await page.getByRole('heading', { level: 1, name: 'Choose your password' }).waitFor();
  assert.equal(page.url(), `${env.base}/set-password`, 'the token is taken out of the address bar');
  await shot(env, page, 'set-password');
  await page.getByLabel('New password', { exact: true }).fill(ownerPassword);
  await page.getByRole('button', { name: 'Set password', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor();
  await page.getByText(`Signed in as ${ownerEmail}`).waitFor();

  // A teammate who already has a user of their own (their own account).
  const mate = newUser();
  const context2 = await newContext(env);
  const page2 = await newPage(env, context2);
  await signUp(env, page2, mate);

  await page.goto(`${env.base}/settings/members`);
  await page.getByLabel('Email address', { exact: true }).fill(mate.email);
  await page.getByRole('button', { name: 'Create invite link', exact: true }).click();
  const url = await page.getByLabel(`Invite link for ${mate.email}`).inputValue();

  // Signed in as the invited user: one click, no password.
  await page2.goto(url);
  await page2.getByRole('button', { name: `Join as ${mate.email}`, exact: true }).click();
  await page2.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor();
  await page2.goto(`${env.base}/settings/members`);
  await page2.getByRole('cell', { name: ownerEmail }).waitFor();
  await page2.getByText('Only the account\'s owner can invite or remove people.').waitFor();
  assert.equal(await page2.getByRole('button', { name: 'Create invite link' }).count(), 0, 'a member cannot invite');
  await shot(env, page2, 'members-as-member');
  await page2.goto(`${env.base}/settings/api-keys`);
  await page2.getByRole('button', { name: 'Create new secret key', exact: true }).click();
  const dialog = page2.getByRole('dialog');
  assert.ok(await dialog.getByRole('radio', { name: /^Live/ }).isDisabled(), 'a member cannot choose a live key');
  await shot(env, page2, 'create-key-as-member');
  await dialog.getByRole('button', { name: 'Cancel', exact: true }).click();

  // The owner removes the member: their session in the account ends at once.
  await page.reload();
  const row = page.locator('tr').filter({ hasText: mate.email });
  await row.getByRole('button', { name: 'Remove', exact: true }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Remove member', exact: true }).click();
  await until(async () => (await page.locator('tr').filter({ hasText: mate.email }).count()) === 0, 'the member is gone from the list');
  await shot(env, page, 'member-removed');
  const after = await pageFetch(page2, 'GET', '/dashboard/api/keys');
  assert.deepEqual([after.status, after.code], [401, 'not_signed_in'], 'the removed member is signed out at once');
  await context2.close();
  assertCleanPage(env);
});

test('security: the audit log pages with Load more, and sign out of all sessions', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  const user = newUser();
  await signUp(env, page, user);

  // 55 keys through the API, with the session's CSRF token, to fill more than one page of the log.
  const made = await page.evaluate(async () => {
    const s = await (await fetch('/dashboard/api/session', { credentials: 'same-origin' })).json();
    const secrets = [];
    for (let i = 0; i < 55; i++) {
      const r = await fetch('/dashboard/api/keys', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token },
        body: JSON.stringify({ name: `bulk ${i}`, mode: 'test', environment: 'development' }),
      });
      if (r.status === 201) secrets.push((await r.json()).secret);
    }
    return secrets;
  });
  assert.equal(made.length, 55, '55 keys created');
  for (const secret of made) env.secrets.add(secret);

  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Settings', exact: true }).click();
  await page.getByRole('navigation', { name: 'Settings' }).getByRole('link', { name: 'Security', exact: true }).click();
  await page.waitForURL(`${env.base}/settings/security`);
  const rows = page.locator('table.audit-table tbody tr');
  await until(async () => (await rows.count()) === 50, 'the first page of the audit log has 50 entries');
  for (const col of ['Time', 'Actor', 'Action', 'Target', 'IP', 'Result', 'Detail']) {
    await page.getByRole('columnheader', { name: col, exact: true }).waitFor();
  }
  assert.ok((await rowText(rows.first())).includes(user.email), 'entries name the actor');
  await shot(env, page, 'security');
  const more = page.getByRole('button', { name: 'Load more', exact: true });
  await more.click();
  await until(async () => (await rows.count()) > 50, 'Load more appends older entries');
  await until(async () => !(await more.isVisible()), 'Load more disappears at the end of the log');
  const html = await page.content();
  assert.ok(!/sk_(test|live)_[0-9A-Za-z]{38}/.test(html), 'no audit entry holds a secret');
  await shot(env, page, 'security-all-entries');

  await page.getByRole('button', { name: 'Sign out of all sessions', exact: true }).click();
  const confirm = page.getByRole('dialog');
  await confirm.getByRole('button', { name: 'Sign out everywhere', exact: true }).click();
  await page.waitForURL(`${env.base}/signin`);
  await page.getByText('You have been signed out of all sessions.').waitFor();
  const sess = await pageFetch(page, 'GET', '/dashboard/api/session');
  assert.equal(sess.status, 401, 'the session has ended');
  await shot(env, page, 'signed-out-everywhere');

  // Signing in again goes back to where you were going.
  await page.goto(`${env.base}/settings/security`);
  await page.waitForURL(/\/signin\?next=/);
  await page.getByLabel('Email', { exact: true }).fill(user.email);
  await page.getByLabel('Password', { exact: true }).fill(user.password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(`${env.base}/settings/security`);
  await page.getByRole('heading', { name: 'Security', level: 2 }).waitFor();

  // Changing the password: a wrong current one is said at its field; the right one changes it,
  // and the new password is the one that signs in.
  const pwCard = page.locator('section[aria-labelledby="pw-title"]');
  const newPassword = `another horse ${rand()} staple`;
  await pwCard.getByLabel('Current password', { exact: true }).fill('not my password at all');
  await pwCard.getByLabel('New password', { exact: true }).fill(newPassword);
  await pwCard.getByRole('button', { name: 'Change password', exact: true }).click();
  await until(async () => (await pwCard.innerText()).includes('The current password is wrong.'), 'a wrong current password is said at its field');
  await pwCard.getByLabel('Current password', { exact: true }).fill(user.password);
  await pwCard.getByLabel('New password', { exact: true }).fill(newPassword);
  await pwCard.getByRole('button', { name: 'Change password', exact: true }).click();
  await page.getByText('Your password was changed. Your other sessions have ended.').waitFor();
  await shot(env, page, 'password-changed');
  assert.equal((await pageFetch(page, 'GET', '/dashboard/api/session')).status, 200, 'this session goes on');
  const oldSignin = await fetchT(`${env.base}/dashboard/api/signin`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: user.email, password: user.password }),
  }, 10_000);
  assert.equal(oldSignin.status, 401, 'the old password no longer signs in');
  const newSignin = await fetchT(`${env.base}/dashboard/api/signin`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: user.email, password: newPassword }),
  }, 10_000);
  assert.equal(newSignin.status, 200, 'the new one does');
  assertCleanPage(env);
});

// ------------------------------------------------------------------------------------------------
// Layout: a laptop's 1280 px and a phone's 390 px

test('at 1280 px every key\'s Revoke is in view, and at 390 px no page is wider than the screen', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  const user = newUser();
  await signUp(env, page, user);
  // Keys of every kind and state, with long names, through the session's API.
  await page.evaluate(async () => {
    const s = await (await fetch('/dashboard/api/session', { credentials: 'same-origin' })).json();
    const post = (body) => fetch('/dashboard/api/keys', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token },
      body: JSON.stringify(body),
    });
    await post({ name: 'Production web servers in eu-west-1', mode: 'live', environment: 'production', ip_allowlist: ['203.0.113.0/24'] });
    await post({ name: 'Staging', mode: 'test', environment: 'staging' });
    await post({ name: 'Nightly batch jobs', mode: 'live', environment: 'production' });
  });
  for (const [width, height] of [[1280, 800], [390, 844]]) {
    await page.setViewportSize({ width, height });
    await page.goto(`${env.base}/settings/api-keys`);
    await page.locator('table.keys-table tbody tr').first().waitFor();
    if (width === 1280) {
      const region = page.getByRole('region', { name: 'API keys table' });
      const box = await region.boundingBox();
      const [sw, cw] = await region.evaluate((el) => [el.scrollWidth, el.clientWidth]);
      assert.ok(sw <= cw + 1, `at 1280 px the keys table needs no sideways scrolling (${sw} px in ${cw})`);
      for (const b of await page.getByRole('button', { name: 'Revoke', exact: true }).all()) {
        const r = await b.boundingBox();
        assert.ok(r && r.x >= box.x && r.x + r.width <= box.x + box.width + 1 && r.x + r.width <= width,
          `a Revoke button is in view at 1280 px (${JSON.stringify(r)} in ${JSON.stringify(box)})`);
      }
      await shot(env, page, 'api-keys-1280');
      await page.goto(`${env.base}/settings/billing`);
      await page.getByRole('heading', { name: 'Usage & Billing', level: 2 }).waitFor();
      await shot(env, page, 'billing-1280');
    } else {
      for (const [path, name] of [['/', 'dashboard'], ['/settings/api-keys', 'api-keys'], ['/settings/billing', 'billing'],
        ['/settings/members', 'members'], ['/settings/security', 'security']]) {
        await page.goto(`${env.base}${path}`);
        await page.locator('h1').first().waitFor();
        await page.waitForTimeout(300);
        await shot(env, page, `${name}-390`);
        const [over, widest] = await page.evaluate(() => {
          let w = null;
          for (const el of document.querySelectorAll('body *')) {
            const r = el.getBoundingClientRect();
            if (r.right > window.innerWidth + 1 && !el.closest('.table-scroll') && (!w || r.right > w.r)) w = { r: r.right, tag: el.tagName, cls: el.className };
          }
          return [document.documentElement.scrollWidth - window.innerWidth, w];
        });
        assert.ok(over <= 0, `${path} is no wider than a 390 px screen (it is ${over} px wider: ${JSON.stringify(widest)})`);
      }
    }
  }
  assertCleanPage(env);
});

// ------------------------------------------------------------------------------------------------
// Two-factor sign-in

// RFC 6238's code for a base32 secret at step offset `ahead` from now, as an app computes it.
function totp(secret, ahead = 0) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/\s+/g, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000) + ahead));
  const mac = createHmac('sha1', key).update(msg).digest();
  const off = mac[mac.length - 1] & 15;
  return String((mac.readUInt32BE(off) & 0x7fffffff) % 1000000).padStart(6, '0');
}

test('two-factor sign-in: set up with a computed code, recovery codes shown once, sign-in asks for the code', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t);
  const { page } = env;
  const user = newUser();
  await signUp(env, page, user);
  await page.goto(`${env.base}/settings/security`);
  await page.getByRole('heading', { name: 'Two-factor sign-in', level: 3, exact: true }).waitFor();
  await page.getByText('Off. Signing in needs only your password.').waitFor();
  await page.getByRole('button', { name: 'Set up two-factor sign-in', exact: true }).click();
  const dlg = page.getByRole('dialog');
  await dlg.getByLabel('Password', { exact: true }).fill(user.password);
  await dlg.getByRole('button', { name: 'Continue', exact: true }).click();
  const key = dlg.getByRole('textbox', { name: 'Setup key' });
  await key.waitFor();
  const secret = (await key.inputValue()).replace(/\s+/g, '');
  assert.match(secret, /^[A-Z2-7]{32}$/, 'the setup key is base32');
  assert.match(await dlg.getByRole('link', { name: 'Open in an authenticator app' }).getAttribute('href'),
    /^otpauth:\/\/totp\/Konnect:/, 'an otpauth:// link for the app');
  await shot(env, page, 'two-factor-setup');
  await dlg.getByLabel('The 6-digit code your app shows').fill('000000');
  await dlg.getByRole('button', { name: 'Turn on', exact: true }).click();
  await dlg.getByText('That code is wrong or expired', { exact: false }).waitFor();
  await dlg.getByLabel('The 6-digit code your app shows').fill(totp(secret));
  await dlg.getByRole('button', { name: 'Turn on', exact: true }).click();
  const codes = dlg.getByRole('list', { name: 'Recovery codes' }).locator('code');
  await until(async () => (await codes.count()) === 10, 'ten recovery codes are shown');
  const recovery = await codes.allTextContents();
  await shot(env, page, 'two-factor-recovery-codes');
  await dlg.getByRole('button', { name: "I've saved them", exact: true }).click();
  await page.getByText('On. 10 recovery codes left.').waitFor();
  assert.ok(!(await page.content()).includes(recovery[0]), 'the codes are gone once the dialog closes');
  // Now on for the owner, it can be required of every member.
  const require = page.getByLabel('Every member of this account must sign in with a code from an authenticator app');
  await until(async () => !(await require.isDisabled()), 'the requirement can be set once two-factor sign-in is on');
  await require.check();
  await page.getByText('Every member must now sign in with a code.').waitFor();
  const sess = await pageFetch(page, 'GET', '/dashboard/api/session');
  assert.equal(sess.json.two_factor.required, true, 'the account requires two-factor sign-in');
  await shot(env, page, 'two-factor-on');

  // Signing in again: the password, then the code (the next step's: this one was used).
  await page.getByRole('button', { name: 'Sign out of all sessions', exact: true }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Sign out everywhere', exact: true }).click();
  await page.waitForURL(`${env.base}/signin`);
  await page.getByLabel('Email', { exact: true }).fill(user.email);
  await page.getByLabel('Password', { exact: true }).fill(user.password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  const codeField = page.getByLabel('Authentication code', { exact: true });
  await codeField.waitFor();
  await shot(env, page, 'two-factor-signin');
  await codeField.fill(totp(secret, 1));
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor();

  // A recovery code works once, from the sign-in page too.
  await page.goto(`${env.base}/settings/security`);
  await page.getByRole('button', { name: 'Sign out of all sessions', exact: true }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Sign out everywhere', exact: true }).click();
  await page.waitForURL(`${env.base}/signin`);
  await page.getByLabel('Email', { exact: true }).fill(user.email);
  await page.getByLabel('Password', { exact: true }).fill(user.password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByLabel('Authentication code', { exact: true }).fill(recovery[0]);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor();
  await page.goto(`${env.base}/settings/security`);
  await page.getByText('On. 9 recovery codes left.').waitFor();
  assertCleanPage(env);
});

// ------------------------------------------------------------------------------------------------
// Usage & Billing

const BILLING_PLANS = {
  currency: 'usd',
  default_plan: 'pro',
  seller: { name: 'Example Models Ltd', address: '1 Main Street\nDublin D01 X2Y3', email: 'billing@example.com', tax_id: 'IE1234567X' },
  plans: [
    { name: 'free', requests_per_month: 100 },
    {
      name: 'pro', requests_per_month: 1000, tokens_per_month: 1000000,
      price_per_request_micros: 2500, price_per_million_input_tokens_micros: 1500000,
      price_per_million_output_tokens_micros: 6000000,
    },
  ],
};

// What Konnect charges for one request on a plan: integer micro-units, halves rounded up.
function priceOf(plan, usage) {
  const t = usage.input_tokens * (plan.price_per_million_input_tokens_micros || 0) +
    usage.output_tokens * (plan.price_per_million_output_tokens_micros || 0);
  return (plan.price_per_request_micros || 0) + Math.floor((t + 500000) / 1000000);
}

// The dashboard's money format: at least two decimals, more for non-zero micro-units.
function dollars(micros) {
  let frac = String(micros % 1000000).padStart(6, '0');
  while (frac.length > 2 && frac.endsWith('0')) frac = frac.slice(0, -1);
  return `$${String(Math.floor(micros / 1000000)).replace(/\B(?=(\d{3})+(?!\d))/g, ',')}.${frac}`;
}

async function liveChat(env, secret, message) {
  const r = await fetchT(`${env.base}/v1/chat`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ message }),
  }, 10_000);
  const body = await r.json();
  assert.equal(r.status, 200, `a live request through the fake backend answers 200 (${body.error ? body.error.code : ''})`);
  return body.usage;
}

test('usage & billing: charts, quotas, cost and invoices match the live requests sent', { timeout: TEST_MS }, async (t) => {
  const env = await setup(t, { backend: true, plans: BILLING_PLANS });
  const { page } = env;
  const owner = newUser();
  await signUp(env, page, owner);
  await openApiKeys(env, page);

  // Two live keys made in the UI: production and staging.
  let made = await createKey(env, page, 'Production API', { mode: 'live' });
  const prod = made.secret;
  await closeSecretDialog(page, made.dialog);
  made = await createKey(env, page, 'Staging box', {
    mode: 'live',
    beforeCreate: async (dialog) => {
      await dialog.getByLabel('Environment', { exact: true }).selectOption('staging');
      await dialog.getByLabel('Requests per month (optional)').fill('5');
    },
  });
  const staging = made.secret;
  await closeSecretDialog(page, made.dialog);

  // Live requests through the fake model backend; a test key's requests are never billed.
  const pro = BILLING_PLANS.plans[1];
  const sent = [];
  for (const msg of ['Hello', 'Tell me about the weather in Lisbon', 'one two three four five six seven']) {
    sent.push({ key: 'prod', usage: await liveChat(env, prod, msg) });
  }
  for (const msg of ['staging check', 'x'.repeat(500)]) sent.push({ key: 'staging', usage: await liveChat(env, staging, msg) });
  const cost = (list) => list.reduce((n, s) => n + priceOf(pro, s.usage), 0);
  const tokens = (list) => list.reduce((n, s) => n + s.usage.input_tokens + s.usage.output_tokens, 0);
  const total = cost(sent);
  const prodSent = sent.filter((s) => s.key === 'prod');
  assert.ok(total > 0, 'the plan charges for live requests');

  // The API Keys list shows this month's usage of each live key.
  await page.reload();
  await page.locator('section[aria-label="Your API keys"]:not([aria-busy])').waitFor();
  const prodRow = keyRow(page, prod);
  await until(async () => (await rowText(prodRow)).includes('3 req'), 'the production key shows 3 requests this month');
  assert.ok((await rowText(prodRow)).includes(dollars(cost(prodSent))), "the production key's row shows its cost this month");
  assert.ok((await rowText(prodRow)).includes(`${tokens(prodSent)} tokens`), "the production key's row shows its tokens");
  assert.ok((await rowText(keyRow(page, staging))).includes('2 req'), 'the staging key shows 2 requests');
  assert.ok((await rowText(keyRow(page, staging))).includes('5 requests/month'), "the row shows the key's own monthly quota");
  await shot(env, page, 'api-keys-with-usage');

  // Lowered in the Edit dialog to what it has used, the key's own quota refuses the next request
  // (unbilled), naming the key's quota; the account's other key goes on.
  await keyRow(page, staging).getByRole('button', { name: 'Edit', exact: true }).click();
  const edit = page.getByRole('dialog');
  assert.equal(await edit.getByLabel('Requests per month', { exact: true }).inputValue(), '5');
  await edit.getByLabel('Requests per month', { exact: true }).fill('2');
  await edit.getByRole('button', { name: 'Save', exact: true }).click();
  await edit.waitFor({ state: 'detached' });
  await until(async () => (await rowText(keyRow(page, staging))).includes('2 requests/month'), 'the row shows the lowered quota');
  assert.deepEqual(await chat(env, staging), { status: 429, code: 'insufficient_quota' });
  // The refused request is labelled apart: the month's requests stay the billed ones.
  await until(async () => {
    await page.reload();
    await page.locator('section[aria-label="Your API keys"]:not([aria-busy])').waitFor();
    return (await rowText(keyRow(page, staging))).includes('1 refused');
  }, 'the row says the key had a request refused');
  assert.ok((await rowText(keyRow(page, staging))).includes('2 req'), 'its billed requests are still 2');
  // The home page: requests are the billed ones, the refused one said apart.
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Dashboard', exact: true }).click();
  const homeStat = page.locator('[data-stat="requests-this-month"]');
  await homeStat.waitFor();
  assert.equal(await homeStat.locator('.stat-value').innerText(), '5', 'the home page counts the billed requests');
  assert.ok((await homeStat.innerText()).includes('1 refused by a limit or quota'), 'and says the refused one apart');
  await shot(env, page, 'home-requests-and-refused');
  await openApiKeys(env, page);

  // Usage & Billing, from the settings menu.
  await page.getByRole('navigation', { name: 'Settings' }).getByRole('link', { name: 'Usage & Billing', exact: true }).click();
  await page.waitForURL(`${env.base}/settings/billing`);
  await page.getByRole('heading', { level: 2, name: 'Usage & Billing' }).waitFor();
  await page.locator('[data-charts="ready"]').waitFor();

  // The figures.
  const statValue = (key) => page.locator(`[data-stat="${key}"] .stat-value`).innerText();
  assert.equal(await statValue('cost'), dollars(total), 'cost so far this month');
  assert.equal(await statValue('requests'), '5', 'billed requests this month');
  assert.equal(await statValue('tokens'), tokens(sent).toLocaleString('en-US'), 'tokens this month');
  assert.equal(await statValue('plan'), 'pro');
  const reqQuota = (await page.locator('[data-quota="requests"]').innerText()).replace(/\s+/g, ' ');
  assert.ok(reqQuota.includes('5 of 1,000 used') && reqQuota.includes('995 remaining'), 'the request quota bar says what is used and left');
  assert.match(reqQuota, /resets on \w{3} 1, \d{4} \(UTC\)/, 'the quota says when it resets');
  assert.equal(await page.locator('[data-quota="requests"] [role="progressbar"]').getAttribute('aria-valuenow'), '5');
  const tokQuota = (await page.locator('[data-quota="tokens"]').innerText()).replace(/\s+/g, ' ');
  assert.ok(tokQuota.includes(`${tokens(sent).toLocaleString('en-US')} of 1,000,000 used`), 'the token quota bar');

  // The charts: two canvases drawn by Chart.js, stacked by key, one bar per day so far.
  const chartData = () => page.evaluate(() => {
    const read = (id) => {
      const c = window.Chart && window.Chart.getChart(document.getElementById(id));
      if (!c) return null;
      return {
        type: c.config.type,
        days: c.data.labels.length,
        series: c.data.datasets.map((d) => ({ label: d.label, sum: d.data.reduce((a, b) => a + b, 0), last: d.data[d.data.length - 1] })),
        width: c.width,
      };
    };
    return { requests: read('chart-requests'), tokens: read('chart-tokens') };
  });
  let charts = await chartData();
  const today = new Date().getUTCDate();
  for (const name of ['requests', 'tokens']) {
    assert.ok(charts[name], `the ${name} chart is a Chart.js chart`);
    assert.equal(charts[name].type, 'bar');
    assert.equal(charts[name].days, today, `the ${name} chart has a bar for every day of the month so far`);
    assert.ok(charts[name].width > 100, `the ${name} chart has been laid out`);
  }
  assert.deepEqual(charts.requests.series.map((s) => [s.label.split(' (')[0], s.sum, s.last]),
    [['Production API', 3, 3], ['Staging box', 2, 2]], 'requests per day, stacked by key');
  assert.deepEqual(charts.tokens.series.map((s) => s.sum), [tokens(prodSent), tokens(sent) - tokens(prodSent)], 'tokens per day, by key');
  await shot(env, page, 'billing-by-key');

  await page.getByText('By environment', { exact: true }).click();
  await until(async () => (await chartData()).requests.series[0].label === 'Production', 'the charts switch to environments');
  charts = await chartData();
  assert.deepEqual(charts.requests.series.map((s) => [s.label, s.sum]), [['Production', 3], ['Staging', 2]], 'requests per day, by environment');
  await shot(env, page, 'billing-by-environment');

  // Per key.
  const keysTableText = (await page.locator('table.usage-keys-table').innerText()).replace(/\s+/g, ' ');
  assert.ok(keysTableText.includes('Production API') && keysTableText.includes(dollars(cost(prodSent))), 'the per-key table');

  // Invoices: this month's, open, with the same total; its lines in a dialog.
  const month = new Date().toISOString().slice(0, 7);
  const invRow = page.locator(`table.invoices-table tbody tr[data-month="${month}"]`);
  const invText = (await invRow.innerText()).replace(/\s+/g, ' ');
  assert.ok(invText.includes('Open') && invText.includes('Draft') && invText.includes(dollars(total)) && invText.includes('5'), 'the invoice row');
  await invRow.getByRole('button', { name: 'View', exact: true }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByRole('heading', { name: /^Draft invoice, / }).waitFor();
  await dialog.locator('[data-total]').waitFor();
  assert.equal(await dialog.locator('[data-total]').getAttribute('data-total'), String(total), 'the invoice total, in micro-units');
  assert.equal(await dialog.locator('table.invoice-table tbody tr').count(), 2, 'one line per model and key');
  // Billed at the plan's prices: the plan and each line's unit prices.
  assert.ok((await dialog.locator('dl.details').innerText()).includes('pro'), 'the plan on the invoice');
  const seller = (await dialog.locator('.seller').innerText()).replace(/\s+/g, ' ');
  assert.equal(seller, 'Example Models Ltd 1 Main Street Dublin D01 X2Y3 billing@example.com Tax id IE1234567X', "the operator's details as the invoice's seller");
  assert.equal(await dialog.locator('.unit-prices').count(), 2, 'unit prices on every line');
  assert.match(await dialog.locator('.unit-prices').first().innerText(), /^\$0\.0025\d* per request · \$1\.50*\d* per 1M input · \$6\.0\d* per 1M output tokens$/, 'the unit prices');
  await shot(env, page, 'invoice-dialog');
  // At 1280 px every column is in view: the lines' box does not scroll sideways, and the Amount
  // column ends inside the dialog.
  await page.setViewportSize({ width: 1280, height: 860 });
  const fit = await dialog.evaluate((d) => {
    const box = d.querySelector('.invoice-lines');
    const amount = d.querySelector('.invoice-table thead th:last-child').getBoundingClientRect();
    return { overflow: box.scrollWidth - box.clientWidth, amountRight: amount.right, dialogRight: d.getBoundingClientRect().right };
  });
  assert.ok(fit.overflow <= 0, `the invoice lines fit at 1280 px (overflow ${fit.overflow} px)`);
  assert.ok(fit.amountRight <= fit.dialogRight, 'the Amount column is inside the dialog');
  await shot(env, page, 'invoice-dialog-1280');
  await page.setViewportSize({ width: 1360, height: 860 });
  await dialog.getByRole('button', { name: 'Close', exact: true }).click();
  await dialog.waitFor({ state: 'detached' });

  // The CSV download.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    invRow.getByRole('link', { name: 'Download CSV', exact: true }).click(),
  ]);
  assert.equal(download.suggestedFilename(), `konnect-invoice-${month}-draft.csv`);
  const file = path.join(env.outDir, download.suggestedFilename());
  await download.saveAs(file);
  const csv = await readFile(file, 'utf8');
  const rows = csv.split('\r\n').filter(Boolean).map((line) => line.split(','));
  const header = rows[0];
  assert.deepEqual(header.slice(0, 3), ['type', 'invoice', 'month']);
  const col = (name) => header.indexOf(name);
  const items = rows.filter((r) => r[0] === 'item');
  const totalRow = rows.find((r) => r[0] === 'total');
  assert.equal(items.length, 2, 'one CSV row per line item');
  assert.equal(items.reduce((n, r) => n + Number(r[col('amount_micros')]), 0), total, 'the CSV lines add up to the total');
  assert.equal(Number(totalRow[col('amount_micros')]), total, 'the CSV total');
  assert.equal(Number(totalRow[col('requests')]), 5);
  assert.equal(totalRow[col('month')], month);

  await shot(env, page, 'billing');

  // A quota used up: a banner says so on the home page and under Usage & Billing.
  cli(env, 'account', 'set-quota', '--account', owner.email, '--requests', '5');
  const r = await fetchT(`${env.base}/v1/chat`, {
    method: 'POST', headers: { Authorization: `Bearer ${prod}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ message: 'one more' }),
  }, 10_000);
  assert.equal(r.status, 429, 'a live request past the quota is refused');
  await page.goto(`${env.base}/`);
  const banner = page.getByRole('alert').filter({ hasText: 'Monthly quota used up' });
  await banner.waitFor();
  assert.match(await banner.innerText(), /5 live requests/, 'the banner names the quota');
  await shot(env, page, 'quota-banner-home');
  await page.goto(`${env.base}/settings/billing`);
  await page.getByRole('alert').filter({ hasText: 'Monthly quota used up' }).waitFor();
  for (const s of [prod, staging]) await assertSecretGone(page, s);
  assertCleanPage(env);
});
