// The web UI over https:// with HTTP/2 in headless Chromium (issue 14 item 2). `build/agora up`
// serves HTTPS beside HTTP with its self-signed certificate for localhost; Chromium (certificate
// errors ignored: the certificate is self-signed) signs up a user through the UI and lands on the
// home timeline. Every response of the page (the document, scripts, styles, the API calls) must
// have come over h2 (the Resource Timing nextHopProtocol) with a status below 400 (but the
// logged-out session probe's 401), without a page error. A screenshot is kept in build/screenshots/h2-home.png.
//
// Run from the repository root: node --test tests/browser/   (or scripts/run-browser.sh)

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { eventually, freePortRange, sleep, stepsWith } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const AGORA = process.env.AGORA_BIN || path.join(ROOT, 'build', 'agora');
const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT_DIR = path.join(ROOT, 'build', 'screenshots');
const TIMEOUT_MS = 15_000;

const sys = { proc: null, output: '', exit: null, dataDir: null, base: '', tls: '' };
const ui = { browser: null, page: null, pageErrors: [], responses: [] };

function diagnostics() {
  return `\n--- agora output ---\n${sys.output.slice(-4000)}\n--- page errors ---\n${ui.pageErrors.join('\n')}`;
}

const step = stepsWith(diagnostics);
const byTestId = (scope, id) => scope.locator(`[data-testid="${id}"]`);

before(async () => {
  assert.ok(fs.existsSync(AGORA), `${AGORA} does not exist: run make build first`);
  sys.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agora-h2-'));
  const port = await freePortRange(3); // balancer, one web server, the TLS listener
  sys.base = `http://127.0.0.1:${port}`;
  sys.tls = `https://localhost:${port + 2}`;
  sys.proc = spawn(AGORA, ['up', '--listen', `127.0.0.1:${port}`, '--servers', '1', '--tls-listen',
    `127.0.0.1:${port + 2}`, '--data', sys.dataDir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const collect = (chunk) => {
    sys.output += chunk.toString();
  };
  sys.proc.stdout.on('data', collect);
  sys.proc.stderr.on('data', collect);
  sys.proc.on('exit', (code, signal) => {
    sys.exit = { code, signal };
  });
  await eventually(async () => {
    if (sys.exit !== null) throw new Error(`agora up exited early (${JSON.stringify(sys.exit)})${diagnostics()}`);
    const resp = await fetch(`${sys.base}/health`, { signal: AbortSignal.timeout(2000) });
    await resp.arrayBuffer();
    assert.equal(resp.status, 200);
  }, 30_000);
  ui.browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  const context = await ui.browser.newContext({ viewport: { width: 1100, height: 900 }, ignoreHTTPSErrors: true });
  context.setDefaultTimeout(TIMEOUT_MS);
  context.setDefaultNavigationTimeout(TIMEOUT_MS);
  ui.page = await context.newPage();
  ui.page.on('pageerror', (err) => ui.pageErrors.push(`${err.name}: ${err.message}`));
  ui.page.on('response', (resp) => ui.responses.push({ method: resp.request().method(), url: resp.url(), status: resp.status() }));
});

after(async () => {
  try {
    if (ui.browser) await ui.browser.close();
  } finally {
    if (sys.proc && sys.exit === null) {
      sys.proc.kill('SIGTERM');
      const deadline = Date.now() + 15_000;
      while (sys.exit === null && Date.now() < deadline) await sleep(50);
      try {
        process.kill(-sys.proc.pid, 'SIGKILL');
      } catch {
        // the group is gone
      }
    }
    if (sys.dataDir) fs.rmSync(sys.dataDir, { recursive: true, force: true });
  }
});

step('the UI over https:// signs up a user with every request on HTTP/2', async () => {
  const { page } = ui;
  await page.goto(`${sys.tls}/`);
  await page.waitForURL(/#\/login$/);
  await byTestId(page, 'nav-signup').click();
  await page.waitForURL(/#\/signup$/);
  await page.getByLabel('Username', { exact: true }).fill('carol');
  await page.getByLabel('Password', { exact: true }).fill('carol-secret-pw-3');
  await byTestId(page, 'signup-form-submit').click();
  await page.waitForURL(/#\/home$/);
  await eventually(async () => assert.equal((await byTestId(page, 'nav-me').textContent())?.trim(), '@carol'),
    TIMEOUT_MS);
  await byTestId(page, 'timeline-empty').waitFor();
  const protocols = await page.evaluate(() => [...performance.getEntriesByType('navigation'),
    ...performance.getEntriesByType('resource')].map((e) => [e.name, e.nextHopProtocol]));
  assert.ok(protocols.some(([name]) => new URL(name).pathname.startsWith('/api/')), JSON.stringify(protocols));
  for (const [name, proto] of protocols) assert.equal(proto, 'h2', `${name} came over ${proto}`);
  // Only the logged-out session probe may fail (the UI asks GET /api/v1/sessions at load: 401).
  for (const r of ui.responses) {
    const probe = r.method === 'GET' && new URL(r.url).pathname === '/api/v1/sessions' && r.status === 401;
    assert.ok(r.status < 400 || probe, `${r.method} ${r.url} answered ${r.status}`);
  }
  assert.ok(ui.responses.some((r) => r.method === 'POST' && r.status < 400), JSON.stringify(ui.responses));
  assert.deepEqual(ui.pageErrors, []);
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'h2-home.png') });
});
