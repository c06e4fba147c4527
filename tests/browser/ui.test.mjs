// End-to-end test of agora's web UI in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core). It starts the whole system with `build/agora up` (a balancer and 3 web
// servers on 127.0.0.1), then two people use it in two browser contexts: alice on a 360x740
// phone screen, bob on a desktop screen. Bob follows alice, alice posts, bob sees the post on his
// home timeline (with "load more" pagination), likes it and replies, and alice sees the like and
// the reply. The system is always stopped with SIGTERM at the end, also when a step fails.
//
// Run from the repository root: node --test tests/browser/   (or scripts/run-browser.sh)
// AGORA_BIN may name another agora binary (default: build/agora).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { eventually as waitFor, freePortRange, sleep, stepsWith } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const AGORA = process.env.AGORA_BIN || path.join(ROOT, 'build', 'agora');
const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT_DIR = path.join(ROOT, 'build', 'screenshots');
const SERVERS = 3;
const STEP_TIMEOUT_MS = 15_000; // Playwright actions and waits
const START_TIMEOUT_MS = 30_000; // until /health answers 200
const STOP_TIMEOUT_MS = 15_000; // after SIGTERM

const ALICE = { username: 'alice', password: 'alice-secret-pw-1', displayName: 'Alice Ådahl' };
const BOB = { username: 'bob', password: 'bob-secret-pw-2', displayName: 'Bob Brown' };
const BULK_POSTS = 21; // with the composed post: 22 = one full page of 20 + 2 more
const PAGE_SIZE = 20;
const POST_TEXT = 'Hello from Alice 👋'; // 18 code points, 19 UTF-16 units
const REPLY_TEXT = 'Welcome, Alice! <img src=x onerror="window.__xss=1"> <b>not bold</b>';

const sys = { proc: null, output: '', exit: null, dataDir: null, port: 0, base: '' };
const ui = { browser: null, alice: null, bob: null, pageErrors: [], servedBy: new Set() };
let postId = null;

// ---- helpers ----------------------------------------------------------------------------------

// eventually() with this file's step timeout.
const eventually = (fn, timeoutMs = STEP_TIMEOUT_MS) => waitFor(fn, timeoutMs);

async function api(method, urlPath, body, token) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(sys.base + urlPath, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  return { status: resp.status, data };
}

function diagnostics() {
  return `\n--- agora output ---\n${sys.output.slice(-4000)}\n--- page errors ---\n${ui.pageErrors.join('\n')}`;
}

// Sends SIGTERM and waits for agora to exit; kills its whole process group if it will not.
async function stopSystem() {
  const proc = sys.proc;
  if (!proc) return null;
  if (sys.exit === null) {
    proc.kill('SIGTERM');
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (sys.exit === null && Date.now() < deadline) await sleep(50);
  }
  try {
    process.kill(-proc.pid, 0); // anything left of the process group it led?
    process.kill(-proc.pid, 'SIGKILL');
  } catch {
    // the group is gone: everything stopped
  }
  sys.proc = null;
  return sys.exit;
}

async function newUser(viewport, extra = {}) {
  const context = await ui.browser.newContext({ viewport, ...extra });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  page.on('pageerror', (err) => ui.pageErrors.push(`${err.name}: ${err.message}`));
  page.on('response', (resp) => {
    if (new URL(resp.url()).pathname.startsWith('/api/')) ui.servedBy.add(resp.headers()['x-served-by'] ?? '(none)');
  });
  return { context, page };
}

const byTestId = (scope, id) => scope.locator(`[data-testid="${id}"]`);
const text = async (locator) => (await locator.textContent())?.trim();

async function expectText(locator, expected) {
  await eventually(async () => assert.equal(await text(locator), expected, `text of ${locator}`));
}

// Runs the steps in order; once one fails, the later ones are skipped (they depend on it).
const step = stepsWith(diagnostics);

async function signUp(page, user) {
  await page.goto(`${sys.base}/`);
  await page.waitForURL(/#\/login$/);
  await byTestId(page, 'nav-signup').click();
  await page.waitForURL(/#\/signup$/);
  await page.getByLabel('Username', { exact: true }).fill(user.username);
  await page.getByLabel('Display name (optional)', { exact: true }).fill(user.displayName);
  await page.getByLabel('Password', { exact: true }).fill(user.password);
  await byTestId(page, 'signup-form-submit').click();
  await page.waitForURL(/#\/home$/);
  await expectText(byTestId(page, 'nav-me'), `@${user.username}`);
}

// ---- the system under test --------------------------------------------------------------------

before(async () => {
  assert.ok(fs.existsSync(AGORA), `${AGORA} does not exist: run make build first`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} does not exist: install Debian's chromium`);
  sys.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agora-ui-'));
  sys.port = await freePortRange(SERVERS + 1); // balancer + web servers
  sys.base = `http://127.0.0.1:${sys.port}`;
  sys.proc = spawn(AGORA, ['up', '--listen', `127.0.0.1:${sys.port}`, '--servers', String(SERVERS), '--data', sys.dataDir], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so that nothing it started can outlive the test
  });
  const collect = (chunk) => {
    sys.output += chunk.toString();
  };
  sys.proc.stdout.on('data', collect);
  sys.proc.stderr.on('data', collect);
  sys.proc.on('exit', (code, signal) => {
    sys.exit = { code, signal };
  });

  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = 'no answer yet';
  for (;;) {
    if (sys.exit !== null) throw new Error(`agora up exited early (${JSON.stringify(sys.exit)})${diagnostics()}`);
    try {
      const resp = await fetch(`${sys.base}/health`, { signal: AbortSignal.timeout(2000) });
      await resp.arrayBuffer();
      if (resp.status === 200) break;
      last = `HTTP ${resp.status}`;
    } catch (err) {
      last = err.message;
    }
    if (Date.now() > deadline) throw new Error(`GET /health did not answer 200 within ${START_TIMEOUT_MS} ms (${last})${diagnostics()}`);
    await sleep(100);
  }

  ui.browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  ui.alice = await newUser({ width: 360, height: 740 }, { deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  ui.bob = await newUser({ width: 1100, height: 900 });
});

after(async () => {
  try {
    if (ui.browser) await ui.browser.close();
  } finally {
    await stopSystem();
    if (sys.dataDir) fs.rmSync(sys.dataDir, { recursive: true, force: true });
  }
});

// ---- the steps ----------------------------------------------------------------------------------

step('alice (phone) and bob (desktop) sign up and land on their empty home timelines', async () => {
  assert.ok(sys.output.includes(`http://127.0.0.1:${sys.port}`), `agora up printed the URL to open${diagnostics()}`);
  await signUp(ui.alice.page, ALICE);
  await signUp(ui.bob.page, BOB);
  for (const { page } of [ui.alice, ui.bob]) {
    await expectText(byTestId(page, 'timeline-empty'),
      'Your home timeline is empty. Write something, or follow people to see their posts here.');
    assert.equal(await byTestId(page, 'post').count(), 0);
  }
  // Nothing on the phone screen is wider than the screen.
  const width = await ui.alice.page.evaluate(() => document.documentElement.scrollWidth);
  assert.equal(width, 360);
});

step('signing up with a taken name or logging in with a wrong password shows the API error', async () => {
  const anon = await newUser({ width: 800, height: 700 }); // logged out: a context of its own
  try {
    const taken = await api('POST', '/api/v1/accounts', { username: ALICE.username, password: 'another-password-9' });
    assert.ok(taken.status >= 400 && typeof taken.data?.error === 'string', JSON.stringify(taken));
    await anon.page.goto(`${sys.base}/#/signup`);
    await anon.page.getByLabel('Username', { exact: true }).fill(ALICE.username);
    await anon.page.getByLabel('Password', { exact: true }).fill('another-password-9');
    await byTestId(anon.page, 'signup-form-submit').click();
    await expectText(byTestId(anon.page, 'form-error'), taken.data.error);

    const wrong = await api('POST', '/api/v1/sessions', { username: ALICE.username, password: 'not-the-password' });
    assert.equal(wrong.status, 401, JSON.stringify(wrong));
    await byTestId(anon.page, 'nav-login').click();
    await anon.page.waitForURL(/#\/login$/);
    await anon.page.getByLabel('Username', { exact: true }).fill(ALICE.username);
    await anon.page.getByLabel('Password', { exact: true }).fill('not-the-password');
    await byTestId(anon.page, 'login-form-submit').click();
    await expectText(byTestId(anon.page, 'form-error'), wrong.data.error);
    assert.match(anon.page.url(), /#\/login$/);
  } finally {
    await anon.context.close();
  }
});

step('bob follows alice from her page', async () => {
  const { page } = ui.bob;
  await page.goto(`${sys.base}/#/u/alice`);
  await expectText(byTestId(page, 'profile-display-name'), ALICE.displayName);
  await expectText(byTestId(page, 'profile-username'), '@alice');
  await expectText(byTestId(page, 'profile-followers-count'), '0');
  await expectText(byTestId(page, 'profile-following-count'), '0');
  await expectText(byTestId(page, 'profile-posts-count'), '0');
  const follow = byTestId(page, 'follow-button');
  await expectText(follow, 'Follow');
  await follow.click();
  await expectText(follow, 'Unfollow');
  await expectText(byTestId(page, 'profile-followers-count'), '1');
  // Still following after a fresh load of the page.
  await page.reload();
  await expectText(byTestId(page, 'follow-button'), 'Unfollow');
  await expectText(byTestId(page, 'profile-followers-count'), '1');
});

step('alice writes a post; the counter counts code points and stops posts over 500', async () => {
  // Older posts first, through the API, so that the timeline has more than one page.
  const login = await api('POST', '/api/v1/sessions', { username: ALICE.username, password: ALICE.password });
  assert.equal(login.status, 200, JSON.stringify(login.data));
  for (let i = 1; i <= BULK_POSTS; i += 1) {
    const created = await api('POST', '/api/v1/posts', { text: `Bulk post ${i}` }, login.data.token);
    assert.equal(created.status, 201, JSON.stringify(created.data));
  }

  const { page } = ui.alice;
  await page.goto(`${sys.base}/#/home`);
  const box = byTestId(byTestId(page, 'compose-form'), 'compose-text');
  const counter = byTestId(page, 'char-count');
  const submit = byTestId(page, 'compose-submit');
  await expectText(counter, '0 / 500');
  assert.equal(await submit.isDisabled(), true);
  await box.fill('é'.repeat(501));
  await expectText(counter, '501 / 500');
  assert.equal(await submit.isDisabled(), true);
  await box.fill('😀'.repeat(500)); // 1000 UTF-16 units, 500 code points: allowed
  await expectText(counter, '500 / 500');
  assert.equal(await submit.isDisabled(), false);
  await box.fill(POST_TEXT);
  await expectText(counter, '18 / 500');
  await submit.click();

  const first = byTestId(page, 'post').first();
  await expectText(byTestId(first, 'post-text'), POST_TEXT);
  await expectText(counter, '0 / 500');
  assert.equal(await box.inputValue(), '');
  postId = await first.getAttribute('data-post-id');
  assert.ok(postId, 'the new post carries its id');
});

step('bob sees the post first on his home timeline and loads the older ones', async () => {
  const { page } = ui.bob;
  await byTestId(page, 'nav-home').click();
  await page.waitForURL(/#\/home$/);
  const posts = byTestId(byTestId(page, 'timeline'), 'post');
  await eventually(async () => assert.equal(await posts.count(), PAGE_SIZE));
  const first = posts.first();
  assert.equal(await first.getAttribute('data-post-id'), postId);
  await expectText(byTestId(first, 'post-text'), POST_TEXT);
  await expectText(first.locator('.display-name'), ALICE.displayName);
  await expectText(first.locator('.username'), '@alice');
  await expectText(byTestId(first, 'like-count'), '0');
  await expectText(byTestId(first, 'reply-count'), '0');
  await expectText(byTestId(posts.nth(PAGE_SIZE - 1), 'post-text'), `Bulk post ${BULK_POSTS + 1 - (PAGE_SIZE - 1)}`);

  const more = byTestId(page, 'load-more');
  await more.click();
  await eventually(async () => assert.equal(await posts.count(), BULK_POSTS + 1));
  await expectText(byTestId(posts.last(), 'post-text'), 'Bulk post 1');
  await eventually(async () => assert.equal(await more.isHidden(), true));
});

step('bob likes the post and replies to it', async () => {
  const { page } = ui.bob;
  const card = page.locator(`[data-testid="post"][data-post-id="${postId}"]`);
  const like = byTestId(card, 'like-button');
  assert.equal(await like.getAttribute('aria-pressed'), 'false');
  await like.click();
  await expectText(byTestId(card, 'like-count'), '1');
  assert.equal(await like.getAttribute('aria-pressed'), 'true');

  await byTestId(card, 'reply-link').click();
  await page.waitForURL(new RegExp(`#/p/${postId}$`));
  const main = page.locator('.focus [data-testid="post"]');
  await expectText(byTestId(main, 'post-text'), POST_TEXT);
  await expectText(byTestId(main, 'like-count'), '1');
  await expectText(byTestId(page, 'replies-empty'), 'No replies yet.');
  const form = byTestId(page, 'reply-form');
  await byTestId(form, 'compose-text').fill(REPLY_TEXT);
  await byTestId(form, 'compose-submit').click();
  const reply = byTestId(byTestId(page, 'replies'), 'post');
  await eventually(async () => assert.equal(await reply.count(), 1));
  await expectText(byTestId(reply, 'post-text'), REPLY_TEXT);
  await expectText(byTestId(main, 'reply-count'), '1');
});

step("alice's page shows her counts and her posts (after a reload: the session cookie holds)", async () => {
  const { page } = ui.alice;
  await page.reload();
  await page.waitForURL(/#\/home$/);
  await expectText(byTestId(page, 'nav-me'), '@alice');
  await byTestId(page, 'nav-me').click();
  await page.waitForURL(/#\/u\/alice$/);
  await expectText(byTestId(page, 'profile-posts-count'), String(BULK_POSTS + 1));
  await expectText(byTestId(page, 'profile-followers-count'), '1');
  await expectText(byTestId(page, 'profile-following-count'), '0');
  const posts = byTestId(byTestId(page, 'user-posts'), 'post');
  await eventually(async () => assert.equal(await posts.count(), PAGE_SIZE));
  assert.equal(await byTestId(page, 'follow-button').count(), 0, 'no follow button on your own page');
  const first = posts.first();
  assert.equal(await first.getAttribute('data-post-id'), postId);
  await expectText(byTestId(first, 'post-text'), POST_TEXT);
  await expectText(byTestId(first, 'like-count'), '1');
  await expectText(byTestId(first, 'reply-count'), '1');
  assert.equal(await byTestId(first, 'like-button').getAttribute('aria-pressed'), 'false');
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'ui-profile.png') });

  await byTestId(page, 'load-more').click();
  await eventually(async () => assert.equal(await posts.count(), BULK_POSTS + 1));
  await expectText(byTestId(posts.last(), 'post-text'), 'Bulk post 1');
  await eventually(async () => assert.equal(await byTestId(page, 'load-more').isHidden(), true));
});

step('alice opens her post and reads the like count and the reply', async () => {
  const { page } = ui.alice;
  const card = page.locator(`[data-testid="user-posts"] [data-testid="post"][data-post-id="${postId}"]`);
  await byTestId(card, 'post-permalink').click();
  await page.waitForURL(new RegExp(`#/p/${postId}$`));
  const main = page.locator('.focus [data-testid="post"]');
  await expectText(byTestId(main, 'post-text'), POST_TEXT);
  await expectText(byTestId(main, 'like-count'), '1');
  await expectText(byTestId(main, 'reply-count'), '1');
  const reply = byTestId(byTestId(page, 'replies'), 'post');
  await eventually(async () => assert.equal(await reply.count(), 1));
  await expectText(byTestId(reply, 'post-text'), REPLY_TEXT);
  await expectText(reply.locator('.username'), '@bob');
  await expectText(reply.locator('.display-name'), BOB.displayName);
  // The reply's markup-looking text stayed text.
  assert.equal(await reply.locator('img, b').count(), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  // Nothing on the phone screen is wider than the screen.
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth), 360);
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'ui.png'), fullPage: true });
});

step('the footer shows which web server answered', async () => {
  const backends = new Set(Array.from({ length: SERVERS }, (_, i) => `127.0.0.1:${sys.port + 1 + i}`));
  for (const { page } of [ui.alice, ui.bob]) {
    const value = await text(byTestId(page, 'served-by'));
    assert.match(value, /^127\.0\.0\.1:\d+$/);
    assert.ok(backends.has(value), `${value} is one of ${[...backends].join(', ')}`);
    assert.equal(await text(page.locator('.site-footer')), `agora · served by ${value}`);
  }
  // Every API answer the pages received named one of the web servers.
  assert.ok(ui.servedBy.size > 0);
  for (const value of ui.servedBy) assert.ok(backends.has(value), `X-Served-By ${value} is one of ${[...backends].join(', ')}`);
});

step('bob unlikes, unfollows and logs out', async () => {
  const { page } = ui.bob;
  const main = page.locator('.focus [data-testid="post"]');
  await byTestId(main, 'like-button').click();
  await expectText(byTestId(main, 'like-count'), '0');

  await page.goto(`${sys.base}/#/u/alice`);
  const follow = byTestId(page, 'follow-button');
  await expectText(follow, 'Unfollow');
  await follow.click();
  await expectText(follow, 'Follow');
  await expectText(byTestId(page, 'profile-followers-count'), '0');

  await byTestId(page, 'logout').click();
  await page.waitForURL(/#\/login$/);
  await expectText(byTestId(page, 'nav-login'), 'Log in');
  const status = await page.evaluate(async () => (await fetch('/api/v1/sessions')).status);
  assert.equal(status, 401);
});

step('no uncaught JavaScript errors in the pages', async () => {
  assert.deepEqual(ui.pageErrors, []);
});

step('agora stops cleanly on SIGTERM', async () => {
  await ui.browser.close();
  ui.browser = null;
  const exit = await stopSystem();
  assert.deepEqual(exit, { code: 0, signal: null }, `agora up exited with ${JSON.stringify(exit)}${diagnostics()}`);
});
