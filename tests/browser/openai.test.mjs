// The official `openai` npm package, unmodified, against Konnect: only its base URL and API key
// change. Konnect forwards live keys to a fake OpenAI-compatible backend and answers test keys
// with its mock, so every answer here is predictable.
//
//   cd tests/browser && npm ci && KONNECT_BIN=../../build/konnect node --test openai.test.mjs
//
// Environment:
//   KONNECT_BIN   the konnect binary (default: build/konnect in this repository)
//
// One fake backend (tests/integration/fake_backend.py) and one server, each on a free port, serve
// every test in this file; the server gets a fresh data directory and must exit 0 on SIGTERM at
// the end. Every wait is bounded. Nothing secret is printed: assertion messages never carry a
// secret, and server output is redacted before it is shown.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import OpenAI from 'openai';

import { fetchT, freePort, konnectBin, redact, sleep } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FAKE_BACKEND = path.join(HERE, '..', 'integration', 'fake_backend.py');
const START_MS = 15_000; // a process start
const STEP_MS = 10_000; // any one wait
const TEST_MS = 60_000; // a whole test
const KEY_RE = /^sk_(test|live)_[0-9A-Za-z]{38}$/;
const EMAIL = 'sdk@example.com';
const PROMPT = 'Hello from the SDK';

const run = promisify(execFile);
// A sleep that does not keep the process alive: a race's losing timer must not delay the exit.
const deadlineOf = (ms) => new Promise((r) => setTimeout(r, ms).unref());

// Polls fn until it returns a truthy value or ms pass; then throws with message.
async function until(fn, message, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${message}`);
    await sleep(100);
  }
}

// A child process whose output is kept (bounded) and whose exit can be awaited.
function start(cmd, args, env) {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { child, log: '', spawnError: null };
  proc.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  child.on('error', (e) => {
    proc.spawnError = e;
  });
  const keep = (chunk) => {
    proc.log = (proc.log + chunk.toString('utf8')).slice(-1_000_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  return proc;
}

const running = (proc) => proc.child.exitCode === null && proc.child.signalCode === null;

// SIGTERM, then SIGKILL after 8 s; resolves to the exit, with signal 'SIGKILL after 8 s' then.
async function stop(proc) {
  if (!running(proc)) return proc.exited;
  proc.child.kill('SIGTERM');
  const exit = await Promise.race([proc.exited, deadlineOf(8_000).then(() => null)]);
  if (exit) return exit;
  proc.child.kill('SIGKILL');
  await Promise.race([proc.exited, deadlineOf(2_000)]);
  return { code: null, signal: 'SIGKILL after 8 s' };
}

// The environment without any KONNECT_ setting of the caller's, plus these.
function konnectEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KONNECT_')) env[k] = v;
  return { ...env, ...extra };
}

// ------------------------------------------------------------------------------------------------
// Fixture: the fake backend, a konnect server in front of it, an account with a live and a test
// key. Cleanup is registered before anything can fail.

const fx = { secrets: new Set() };

async function cli(...args) {
  try {
    const { stdout } = await run(fx.bin, args, {
      env: konnectEnv({ KONNECT_DATA_DIR: fx.dataDir }), timeout: 30_000, maxBuffer: 16 << 20,
    });
    return stdout;
  } catch (e) {
    throw new Error(`konnect ${args.join(' ')} failed (${e.code ?? e.signal}): ${redact(String(e.stderr || e.message))}`);
  }
}

async function createKey(mode) {
  const out = await cli('key', 'create', '--account', EMAIL, '--mode', mode, '--name', 'sdk');
  const lines = out.split('\n').filter((l) => l !== '');
  assert.ok(lines.length === 1 && KEY_RE.test(lines[0]), `key create --mode ${mode} prints exactly one secret`);
  assert.ok(lines[0].startsWith(`sk_${mode}_`), `a ${mode} key starts with sk_${mode}_`);
  fx.secrets.add(lines[0]);
  return lines[0];
}

// The id of the key with this secret, found by its hint as `key list` shows it.
async function keyId(secret) {
  const keys = JSON.parse(await cli('key', 'list', '--account', EMAIL, '--json'));
  const k = keys.find((x) => x.hint.startsWith(secret.slice(0, 8)) && x.hint.endsWith(secret.slice(-4)));
  assert.ok(k, 'key list shows the key');
  return k.id;
}

async function backendStats() {
  const r = await fetchT(`${fx.backendRoot}/_fake/stats`);
  assert.equal(r.status, 200, 'the fake backend answers its stats');
  return r.json();
}

before(async () => {
  fx.bin = konnectBin();
  if (!fx.bin || !existsSync(fx.bin)) throw new Error('set KONNECT_BIN to the konnect binary (none found at build/konnect)');
  fx.dataDir = await mkdtemp(path.join(tmpdir(), 'konnect-sdk-'));

  // The fake backend: wait for its one "listening on URL" line.
  fx.backend = start('python3', [FAKE_BACKEND, '--port', String(await freePort())], process.env);
  fx.backendUrl = await until(() => {
    if (fx.backend.spawnError) throw new Error(`could not start the fake backend: ${fx.backend.spawnError.message}`);
    const m = /^listening on (http:\/\/127\.0\.0\.1:\d+\/v1)$/m.exec(fx.backend.log);
    if (!m && !running(fx.backend)) throw new Error(`the fake backend exited:\n${fx.backend.log.slice(-2000)}`);
    return m && m[1];
  }, 'the fake backend prints "listening on"', START_MS).catch((e) => {
    throw new Error(`${e.message}\n${fx.backend.log.slice(-2000)}`);
  });
  fx.backendRoot = fx.backendUrl.replace(/\/v1$/, '');

  // A model catalogue of one model, so that every other name is a 404 the SDK raises as such.
  await writeFile(path.join(fx.dataDir, 'plans.json'), JSON.stringify({
    currency: 'usd', models: [{ name: 'fake-model' }], plans: [{ name: 'default' }],
  }));
  // An account and its keys, made before the server starts so that it loads them at once.
  await cli('account', 'create', '--email', EMAIL);
  fx.live = await createKey('live');
  fx.test = await createKey('test');
  fx.liveId = await keyId(fx.live);

  const port = await freePort();
  fx.base = `http://127.0.0.1:${port}`;
  fx.server = start(fx.bin, ['serve', '--listen', `127.0.0.1:${port}`, '--threads', '2'], konnectEnv({
    KONNECT_DATA_DIR: fx.dataDir,
    KONNECT_MODEL_URL: fx.backendUrl,
    KONNECT_MODEL: 'fake-model',
    KONNECT_ACCESS_LOG: 'off',
  }));
  const deadline = Date.now() + START_MS;
  for (;;) {
    if (fx.server.spawnError) throw new Error(`could not start ${fx.bin}: ${fx.server.spawnError.message}`);
    if (!running(fx.server)) {
      throw new Error(`konnect serve exited (${fx.server.child.exitCode ?? fx.server.child.signalCode}) before answering /healthz:\n${redact(fx.server.log.slice(-2000))}`);
    }
    try {
      const r = await fetchT(`${fx.base}/healthz`, {}, 1_000);
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`konnect serve did not answer /healthz within ${START_MS} ms`);
    await sleep(50);
  }
}, { timeout: 60_000 });

// Stops both processes before judging either. The server must exit 0 on SIGTERM and must never
// have printed a secret it was shown.
after(async () => {
  const exits = {};
  try {
    if (fx.server) exits.server = await stop(fx.server);
    if (fx.backend) exits.backend = await stop(fx.backend);
  } finally {
    if (fx.dataDir) await rm(fx.dataDir, { recursive: true, force: true });
  }
  if (exits.server && exits.server.code !== 0) {
    throw new Error(`konnect serve did not exit 0 on SIGTERM (${exits.server.code ?? exits.server.signal}):\n${redact(fx.server.log.slice(-3000))}`);
  }
  if (exits.backend && exits.backend.code !== 0) {
    throw new Error(`the fake backend did not exit 0 on SIGTERM (${exits.backend.code ?? exits.backend.signal}):\n${fx.backend.log.slice(-3000)}`);
  }
  for (const secret of fx.secrets) {
    if (fx.server && (fx.server.log.includes(secret) || fx.server.log.includes(secret.slice(8)))) {
      throw new Error('the server printed a secret key in its output');
    }
  }
}, { timeout: 30_000 });

// The SDK as an application would configure it for Konnect: only the key and base URL differ.
function sdk(apiKey) {
  return new OpenAI({ apiKey, baseURL: `${fx.base}/v1`, maxRetries: 0, timeout: 10_000 });
}

// Every string in a JSON document, values and field names alike.
function stringsIn(v, out = []) {
  if (typeof v === 'string') {
    out.push(v);
  } else if (Array.isArray(v)) {
    for (const x of v) stringsIn(x, out);
  } else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      out.push(k);
      stringsIn(x, out);
    }
  }
  return out;
}

const ask = (extra = {}) => ({ model: 'fake-model', messages: [{ role: 'user', content: PROMPT }], ...extra });

// The backend must never see a customer's secret: Konnect authenticates to it with its own.
async function assertBackendNeverSawSecrets() {
  const stats = await backendStats();
  const seen = JSON.stringify(stats);
  for (const secret of fx.secrets) {
    assert.ok(!seen.includes(secret.slice(8)), 'no customer secret reached the model backend');
  }
  return stats;
}

// ------------------------------------------------------------------------------------------------
// Tests

test('a live key: chat.completions.create returns the backend\'s answer and usage', { timeout: TEST_MS }, async () => {
  const calls = (await backendStats()).requests;
  const completion = await sdk(fx.live).chat.completions.create(ask());
  assert.equal(completion.choices[0].message.content, `Echo: ${PROMPT}`);
  assert.equal(completion.choices[0].message.role, 'assistant');
  assert.equal(completion.choices[0].finish_reason, 'stop');
  assert.ok(completion.usage.prompt_tokens > 0, 'usage.prompt_tokens > 0');
  assert.ok(completion.usage.completion_tokens > 0, 'usage.completion_tokens > 0');

  const stats = await assertBackendNeverSawSecrets();
  assert.equal(stats.requests, calls + 1, 'the backend was called once');
  assert.deepEqual(stats.bodies.at(-1).messages, [{ role: 'user', content: PROMPT }], 'the backend got the messages as sent');
});

test('a live key: a streamed completion arrives in pieces, with usage last', { timeout: TEST_MS }, async () => {
  const stream = await sdk(fx.live).chat.completions.create(ask({ stream: true, stream_options: { include_usage: true } }));
  let text = '';
  let chunks = 0;
  let last = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    chunks += 1;
    last = chunk;
  }
  assert.equal(text, `Echo: ${PROMPT}`);
  assert.ok(chunks > 2, 'the answer came in several chunks');
  assert.ok(last && last.usage, 'the last chunk carries usage');
  assert.ok(last.usage.completion_tokens > 0, 'usage.completion_tokens > 0');
  assert.ok(last.usage.prompt_tokens > 0, 'usage.prompt_tokens > 0');
  await assertBackendNeverSawSecrets();
});

test('a test key: Konnect\'s mock answers, streamed or not, and the backend is not called', { timeout: TEST_MS }, async () => {
  const calls = (await backendStats()).requests;
  const client = sdk(fx.test);
  const completion = await client.chat.completions.create(ask());
  const content = completion.choices[0].message.content;
  assert.ok(content.startsWith('[mock response'), `a test key gets the mock answer, got: ${JSON.stringify(content.slice(0, 60))}`);
  assert.ok(completion.usage, 'the mock answer has usage');

  const stream = await client.chat.completions.create(ask({ stream: true }));
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.ok(text.startsWith('[mock response'), `a streamed test-key answer is the mock, got: ${JSON.stringify(text.slice(0, 60))}`);

  assert.equal((await backendStats()).requests, calls, 'no test-key request reached the backend');
});

test('models.list names the plan\'s models; an unknown model is a NotFoundError; costly parameters a BadRequestError', { timeout: TEST_MS }, async () => {
  for (const key of [fx.live, fx.test]) {
    const ids = [];
    for await (const m of sdk(key).models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['fake-model'], 'models.list() lists the catalogue\'s models');
    assert.equal((await sdk(key).models.retrieve('fake-model')).id, 'fake-model');
    await assert.rejects(sdk(key).chat.completions.create(ask({ model: 'gpt-4o' })), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `a NotFoundError, got ${err && err.constructor && err.constructor.name}`);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
      return true;
    });
    await assert.rejects(sdk(key).chat.completions.create(ask({ n: 2 })), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `a BadRequestError, got ${err && err.constructor && err.constructor.name}`);
      assert.equal(err.code, 'unsupported_parameter');
      assert.equal(err.param, 'n');
      return true;
    });
  }
});

test('a wrong key is an AuthenticationError; the live key\'s usage is recorded', { timeout: TEST_MS }, async () => {
  const calls = (await backendStats()).requests;
  const wrong = `sk_live_${'A'.repeat(38)}`;
  await assert.rejects(sdk(wrong).chat.completions.create(ask()), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, `an AuthenticationError, got ${err && err.constructor && err.constructor.name}: ${redact(String(err && err.message))}`);
    assert.equal(err.status, 401);
    const said = `${err.message} ${JSON.stringify(err.error ?? null)}`;
    assert.ok(/key/i.test(said), `the error is about the API key: ${redact(said)}`);
    assert.ok(!said.includes(wrong.slice(8)), 'the error does not repeat the key');
    return true;
  });
  assert.equal((await backendStats()).requests, calls, 'a refused request never reaches the backend');

  // The shape of the usage report is not settled: it must be JSON that names the live key
  // somewhere (as a value or a field name), once the server has recorded its requests.
  // A command that fails, or prints something other than JSON, fails the test at once; only the
  // key's appearance is waited for.
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    const out = await cli('usage', '--account', EMAIL, '--json');
    let report;
    try {
      report = JSON.parse(out);
    } catch {
      throw new Error(`konnect usage --json did not print JSON: ${redact(out.slice(0, 300))}`);
    }
    if (stringsIn(report).includes(fx.liveId)) break;
    if (Date.now() > deadline) {
      throw new Error(`konnect usage --json did not name the live key ${fx.liveId} within ${STEP_MS} ms: ${redact(out.slice(0, 600))}`);
    }
    await sleep(200);
  }
});
