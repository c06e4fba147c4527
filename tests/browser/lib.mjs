// Helpers shared by the browser tests (ui.test.mjs, dashboard.test.mjs): waiting and free ports.

import net from 'node:net';
import { test } from 'node:test';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Retries fn (an async assertion) until it passes or timeoutMs elapses; then rethrows its error.
export async function eventually(fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

export function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

// A port p such that p .. p+n-1 are all free on 127.0.0.1. Picked in 20000-31999, below the
// kernel's ephemeral range (32768-60999): there, the outgoing connections of other tests
// (thousands, in the C10k tests) and their TIME_WAIT entries leave few runs of free neighbours.
export async function freePortRange(n) {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const p = 20000 + Math.floor(Math.random() * (12000 - n));
    let ok = true;
    for (let i = 0; i < n && ok; i += 1) ok = await portFree(p + i);
    if (ok) return p;
  }
  throw new Error(`no range of ${n} free ports found on 127.0.0.1`);
}

// A test step function for a file whose steps run in order and depend on each other: once one
// fails (its message followed by diagnostics()), the later ones are skipped.
export function stepsWith(diagnostics) {
  let broken = false;
  return function step(name, fn) {
    test(name, async (t) => {
      if (broken) {
        t.skip('an earlier step failed');
        return;
      }
      try {
        await fn(t);
      } catch (err) {
        broken = true;
        err.message += diagnostics();
        throw err;
      }
    });
  };
}
