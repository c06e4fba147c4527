// End-to-end test of the balancer's live dashboard (GET /dashboard on the admin listener) in
// headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core). It starts three
// build/testbackend processes and `build/agora lb` in front of them (round-robin, health checks
// every 300 ms, slow start 1 s, a known admin token), opens /dashboard#token=..., and checks what
// an operator would: three servers up; traffic shows as requests per second and latency; a
// backend killed with SIGKILL shows down within the health-check time; draining a server with
// its button stops its traffic (the balancer's counters and the backends' X-Backend say so);
// enabling and re-weighting from the buttons; the timeline of events; no script errors and no
// CSP violations. A screenshot goes to build/screenshots/dashboard.png. Processes are always
// stopped at the end, also when a step fails.
//
// Run from the repository root: node --test tests/browser/   (or scripts/run-browser.sh)
// AGORA_BIN may name another agora binary (default: build/agora).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { eventually as waitFor, freePortRange, sleep, stepsWith } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const AGORA = process.env.AGORA_BIN || path.join(ROOT, 'build', 'agora');
const BACKEND = path.join(ROOT, 'build', 'testbackend');
const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT_DIR = path.join(ROOT, 'build', 'screenshots');
const STEP_TIMEOUT_MS = 15_000;
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 15_000;
// Health checks: every 300 ms, 300 ms timeout, down after 2 failures. A dead server is down
// after at most 2 intervals + a timeout (connect is refused at once on loopback, so less); the
// page polls once a second. So the tile must say "down" within this bound:
const HEALTH_INTERVAL_MS = 300;
const HEALTH_FALL = 2;
const DOWN_BOUND_MS = HEALTH_FALL * HEALTH_INTERVAL_MS + 300 + 1000 + 1000; // + 1 s poll + 1 s slack

const TOKEN = crypto.randomBytes(24).toString('hex');
const sys = { lb: null, backends: [], output: '', lbExit: null, port: 0, admin: 0, ports: [] };
const ui = { browser: null, context: null, page: null, pageErrors: [], consoleErrors: [] };

// eventually() with this file's step timeout.
const eventually = (fn, timeoutMs = STEP_TIMEOUT_MS) => waitFor(fn, timeoutMs);

function diagnostics() {
  return `\n--- agora lb output ---\n${sys.output.slice(-4000)}\n--- page errors ---\n${ui.pageErrors.join('\n')}` +
    `\n--- console errors ---\n${ui.consoleErrors.join('\n')}`;
}

function start(cmd, args, collect) {
  const proc = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.exitInfo = null;
  proc.on('exit', (code, signal) => {
    proc.exitInfo = { code, signal };
  });
  if (collect) {
    proc.stdout.on('data', (c) => { sys.output += c.toString(); });
    proc.stderr.on('data', (c) => { sys.output += c.toString(); });
  } else {
    proc.stdout.resume();
    proc.stderr.resume();
  }
  return proc;
}

async function stop(proc, signal = 'SIGTERM') {
  if (!proc || proc.exitInfo) return proc?.exitInfo ?? null;
  proc.kill(signal);
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (!proc.exitInfo && Date.now() < deadline) await sleep(20);
  if (!proc.exitInfo) proc.kill('SIGKILL');
  while (!proc.exitInfo) await sleep(20);
  return proc.exitInfo;
}

async function waitListening(port) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port}${diagnostics()}`);
    await sleep(50);
  }
}

// The admin API, as a script would use it.
async function admin(method, urlPath, body) {
  const headers = { Authorization: `Bearer ${TOKEN}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(`http://127.0.0.1:${sys.admin}${urlPath}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(5000),
  });
  return { status: resp.status, data: await resp.json() };
}

async function serverStats() {
  const { status, data } = await admin('GET', '/servers');
  assert.equal(status, 200);
  return Object.fromEntries(data.servers.map((s) => [s.address, s]));
}

// One request through the balancer; returns the X-Backend of the answer.
async function proxied() {
  const resp = await fetch(`http://127.0.0.1:${sys.port}/`, { signal: AbortSignal.timeout(5000) });
  await resp.arrayBuffer();
  assert.equal(resp.status, 200);
  return resp.headers.get('x-backend');
}

// Background traffic, about 25 requests a second, until stopped.
const traffic = { on: false, done: null, sent: 0 };
function startTraffic() {
  traffic.on = true;
  traffic.done = (async () => {
    while (traffic.on) {
      await proxied();
      traffic.sent += 1;
      await sleep(40);
    }
  })();
}
async function stopTraffic() {
  traffic.on = false;
  await traffic.done;
}

const addr = (i) => `127.0.0.1:${sys.ports[i]}`;
const tile = (i) => ui.page.locator(`[data-testid="server"][data-address="${addr(i)}"]`);
const inTile = (i, id) => tile(i).locator(`[data-testid="${id}"]`);
const byTestId = (id) => ui.page.locator(`[data-testid="${id}"]`);
const text = async (locator) => (await locator.textContent())?.trim();
async function expectText(locator, expected, timeoutMs) {
  await eventually(async () => assert.equal(await text(locator), expected, `text of ${locator}`), timeoutMs);
}
const events = (kind, server) => ui.page.locator(`[data-testid="event"][data-kind="${kind}"][data-server="${server}"]`);

const step = stepsWith(diagnostics);

before(async () => {
  for (const f of [AGORA, BACKEND, CHROMIUM]) assert.ok(fs.existsSync(f), `${f} does not exist (make build; Debian's chromium)`);
  const base = await freePortRange(5);
  sys.port = base;
  sys.ports = [base + 1, base + 2, base + 3];
  sys.admin = base + 4;
  for (const [i, p] of sys.ports.entries()) {
    sys.backends.push(start(BACKEND, ['--port', String(p), '--name', `b${i + 1}`, '--delay-ms', '2-6'], false));
  }
  for (const p of sys.ports) await waitListening(p);
  sys.lb = start(AGORA, ['lb', '--listen', `127.0.0.1:${sys.port}`, '--admin-listen', `127.0.0.1:${sys.admin}`,
    '--admin-token', TOKEN, '--policy', 'round-robin', '--workers', '1',
    '--health-interval', `${HEALTH_INTERVAL_MS}ms`, '--health-timeout', '300ms', '--health-fall', String(HEALTH_FALL),
    '--health-rise', '1', '--slow-start', '1s',
    ...sys.ports.flatMap((p) => ['--backend', `http://127.0.0.1:${p}`])], true);
  await waitListening(sys.port);
  await waitListening(sys.admin);

  ui.browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  ui.context = await ui.browser.newContext({ viewport: { width: 1280, height: 1000 } });
  ui.context.setDefaultTimeout(STEP_TIMEOUT_MS);
  ui.page = await ui.context.newPage();
  ui.page.on('pageerror', (err) => ui.pageErrors.push(`${err.name}: ${err.message}`));
  ui.page.on('console', (msg) => {
    if (msg.type() === 'error') ui.consoleErrors.push(msg.text());
  });
});

after(async () => {
  traffic.on = false;
  try {
    if (ui.browser) await ui.browser.close();
  } finally {
    await stop(sys.lb);
    for (const b of sys.backends) await stop(b, 'SIGKILL');
  }
});

step('without a token the page asks for one, and a wrong token is refused', async () => {
  const ctx = await ui.browser.newContext();
  try {
    const page = await ctx.newPage();
    const resp = await page.goto(`http://127.0.0.1:${sys.admin}/dashboard`);
    assert.equal(resp.status(), 200);
    assert.match(resp.headers()['content-security-policy'], /script-src 'self'/);
    assert.equal(await page.locator('[data-testid="token-form"]').isVisible(), true);
    assert.equal(await page.locator('[data-testid="dashboard"]').isHidden(), true);
    await page.locator('[data-testid="token-input"]').fill('not-the-token');
    await page.locator('[data-testid="token-submit"]').click();
    await eventually(async () => assert.match(await text(page.locator('[data-testid="token-error"]')), /wrong bearer token/));
    assert.equal(await page.locator('[data-testid="dashboard"]').isHidden(), true);
    assert.equal(await page.locator('[data-testid="server"]').count(), 0);
  } finally {
    await ctx.close();
  }
});

step('the dashboard shows three servers up', async () => {
  await ui.page.goto(`http://127.0.0.1:${sys.admin}/dashboard#token=${TOKEN}`);
  // The token left the address bar at once (it stays in the tab's sessionStorage).
  await eventually(async () => assert.equal(ui.page.url(), `http://127.0.0.1:${sys.admin}/dashboard`));
  await eventually(async () => assert.equal(await byTestId('server').count(), 3));
  for (let i = 0; i < 3; i += 1) {
    await expectText(inTile(i, 'server-url'), `http://${addr(i)}`);
    await expectText(inTile(i, 'state'), 'up'); // after the 1 s of slow start
    await expectText(inTile(i, 'weight'), '1');
  }
  await expectText(byTestId('total-up'), '3 / 3');
  await expectText(byTestId('policy'), 'policy round-robin');
  assert.match(await text(byTestId('status')), /^live · \d\d:\d\d:\d\d$/);
});

step('traffic shows as requests per second, in flight and latency, also in the charts', async () => {
  startTraffic();
  await eventually(async () => {
    for (let i = 0; i < 3; i += 1) {
      assert.ok(Number(await text(inTile(i, 'rps'))) > 0, `rps of server ${i + 1}`);
      assert.match(await text(inTile(i, 'p50')), /^\d+(\.\d)? ms$/);
      assert.match(await text(inTile(i, 'p99')), /^\d+(\.\d)? ms$/);
      // the request-rate chart has a line
      assert.match(await tile(i).locator('.chart.rate path').getAttribute('d'), /^M[\d.]+ [\d.]+L/);
    }
    assert.ok(Number(await text(byTestId('total-rps'))) > 5, 'cluster requests/s');
  });
  await stopTraffic();
  const stats = await serverStats();
  for (let i = 0; i < 3; i += 1) {
    await expectText(inTile(i, 'requests'), String(stats[addr(i)].requests));
    assert.ok(stats[addr(i)].requests > 0);
  }
});

step('a killed backend shows down within the health-check time', async () => {
  const t0 = Date.now();
  await stop(sys.backends[2], 'SIGKILL');
  await expectText(inTile(2, 'state'), 'down', DOWN_BOUND_MS);
  const took = Date.now() - t0;
  assert.ok(took <= DOWN_BOUND_MS, `down after ${took} ms`);
  await eventually(async () => assert.equal(await events('down', addr(2)).count(), 1));
  assert.match(await text(events('down', addr(2)).locator('.detail')), /connect failed|timeout|closed/);
  await expectText(byTestId('total-up'), '2 / 3');
  for (let i = 0; i < 2; i += 1) await expectText(inTile(i, 'state'), 'up');
});

step('draining a server from its button stops its traffic', async () => {
  await inTile(0, 'drain').click();
  // Nothing is in flight: it is drained (parked: kept in the set, taking nothing) at once.
  await expectText(inTile(0, 'state'), 'parked');
  await eventually(async () => assert.equal(await events('draining', addr(0)).count(), 1));
  await eventually(async () => assert.equal(await events('drained', addr(0)).count(), 1));
  assert.equal(await inTile(0, 'drain').isDisabled(), true);
  assert.equal(await inTile(0, 'enable').isDisabled(), false);
  const before = await serverStats();
  assert.equal(before[addr(0)].admin, 'parked');
  const seen = {};
  for (let k = 0; k < 30; k += 1) {
    const b = await proxied();
    seen[b] = (seen[b] ?? 0) + 1;
  }
  // server 1 parked, server 3 dead: everything went to server 2, nothing to server 1
  assert.deepEqual(seen, { b2: 30 });
  const afterStats = await serverStats();
  assert.equal(afterStats[addr(0)].requests, before[addr(0)].requests);
  assert.equal(afterStats[addr(1)].requests, before[addr(1)].requests + 30);
  await expectText(inTile(0, 'rps'), '0.0');
  await expectText(inTile(1, 'requests'), String(afterStats[addr(1)].requests));
});

step('enable and re-weight from the buttons', async () => {
  await inTile(0, 'enable').click();
  await eventually(async () => assert.equal(await events('enabled', addr(0)).count(), 1));
  await expectText(inTile(0, 'state'), 'up'); // through slow start
  await inTile(1, 'weight-input').fill('3');
  await inTile(1, 'weight-set').click();
  await expectText(inTile(1, 'weight'), '3');
  await eventually(async () => assert.equal(await events('weight', addr(1)).count(), 1));
  await expectText(events('weight', addr(1)).locator('.detail'), '1 -> 3');
  assert.equal((await serverStats())[addr(1)].weight, 3);
  // round-robin with weights 1 and 3 (server 3 is down): 8 requests split 2 and 6
  const seen = {};
  for (let k = 0; k < 8; k += 1) {
    const b = await proxied();
    seen[b] = (seen[b] ?? 0) + 1;
  }
  assert.deepEqual(seen, { b1: 2, b2: 6 });
  // the form does not send a weight out of range (1 to 1000)
  await inTile(1, 'weight-input').fill('5000');
  await inTile(1, 'weight-input').evaluate((e) => e.form.requestSubmit());
  assert.equal(await inTile(1, 'weight-input').evaluate((e) => e.validity.rangeOverflow), true);
  await sleep(1200);
  await expectText(inTile(1, 'weight'), '3');
  assert.equal((await serverStats())[addr(1)].weight, 3);
});

step('the timeline lists the events newest first; a screenshot is kept', async () => {
  const kinds = await ui.page.locator('[data-testid="event"]').evaluateAll((lis) =>
    lis.map((li) => `${li.dataset.kind} ${li.dataset.server}`));
  assert.deepEqual(kinds, [
    `weight ${addr(1)}`, `enabled ${addr(0)}`, `drained ${addr(0)}`, `draining ${addr(0)}`, `down ${addr(2)}`,
  ]);
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await ui.page.screenshot({ path: path.join(SCREENSHOT_DIR, 'dashboard.png'), fullPage: true });
});

step('no uncaught errors and no CSP violations in the page', async () => {
  assert.deepEqual(ui.pageErrors, []);
  assert.deepEqual(ui.consoleErrors, []);
});

step('agora lb stops cleanly on SIGTERM', async () => {
  await ui.browser.close();
  ui.browser = null;
  const exit = await stop(sys.lb);
  assert.deepEqual(exit, { code: 0, signal: null });
});
