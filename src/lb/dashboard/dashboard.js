// dashboard.js — the live dashboard of `agora lb` (served by its admin API at /dashboard).
//
// No build step, no library. The token comes from the URL fragment (#token=..., never sent to the
// server; removed from the address bar at once) or the form, and is kept in sessionStorage (this
// tab only). Once a second the page asks GET /series?since=N (the per-second points it does not
// have yet, see src/lb/dashboard.h) and GET /events?since=ID (new events), with the token in the
// Authorization header, and redraws: a tile per server (state, requests/s, in flight, p50/p99,
// charts of the last 5 minutes, buttons to drain, enable and re-weight), the cluster totals and
// the timeline. Everything from the server is put in the page as text (textContent), never as
// markup.
'use strict';

const TOKEN_KEY = 'agora-lb-admin-token';
const POLL_MS = 1000;
const KEEP = 300; // points per series: the 5 minutes the balancer keeps
const MAX_EVENTS = 200;
const SVG = 'http://www.w3.org/2000/svg';

const st = {
  token: null,
  seq: 0, // last sample number received
  lastEvent: 0, // last event id received
  servers: new Map(), // address -> { info, points, tile }
  totals: { info: null, points: [] },
  timer: null,
  busy: false,
};

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- the token -------------------------------------------------------------------------------

function readToken() {
  const m = /^#token=([\x21-\x7e]+)$/.exec(window.location.hash);
  if (m) {
    let token = m[1];
    try {
      token = decodeURIComponent(token);
    } catch {
      // not percent-encoding: the token as written
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, '', window.location.pathname); // out of the address bar and history
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function askToken(message) {
  st.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(st.timer);
  $('dashboard').hidden = true;
  $('token-form').hidden = false;
  $('token-error').textContent = message || '';
  $('status').textContent = 'no token';
  $('token-input').focus();
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = $('token-input').value.trim();
  if (!t) return;
  sessionStorage.setItem(TOKEN_KEY, t);
  $('token-input').value = '';
  start(t);
});

// ---- the admin API ---------------------------------------------------------------------------

class AuthError extends Error {}

async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${st.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (resp.status === 401) throw new AuthError((data && data.error) || 'the balancer refused the token');
  if (!resp.ok) throw new Error((data && data.error) || `HTTP ${resp.status}`);
  return data;
}

// ---- formatting ------------------------------------------------------------------------------

const fmtRate = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const fmtMs = (v) => (v === null || v === undefined ? '–' : v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(1)} ms`);
const pad = (n) => String(n).padStart(2, '0');
function fmtTime(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// Columns of a point (GET /series "columns").
const SEQ = 0, RPS = 3, P50 = 5, P99 = 6, ERR = 7;

function last(points) {
  return points.length ? points[points.length - 1] : null;
}

// The latest p50/p99 of the last 5 points that had responses (a quiet second has none).
function latestLatency(points) {
  for (let i = points.length - 1; i >= 0 && i >= points.length - 5; i -= 1) {
    if (points[i][P50] !== null) return [points[i][P50], points[i][P99]];
  }
  return [null, null];
}

// ---- charts: plain SVG; x spans the last minute, growing to the 5 minutes kept ----------------

const MIN_SPAN = 60;

// Seconds the charts of these points span: from the oldest point, at least a minute, at most KEEP.
function spanOf(points) {
  const age = points.length ? st.seq - points[0][SEQ] + 1 : 0;
  return Math.min(KEEP, Math.max(MIN_SPAN, age));
}

function chart(label, cls) {
  const fig = el('figure', { class: `chart ${cls}` });
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${KEEP} 50`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  fig.append(svg, el('figcaption', {}, label));
  return { fig, svg, caption: fig.lastChild, label };
}

// A path through the points' column col (null values break the line), scaled to max.
function pathOf(points, col, seq, max, span) {
  let d = '';
  let pen = false;
  for (const p of points) {
    const v = p[col];
    const age = seq - p[SEQ];
    if (v === null || age >= span) {
      pen = false;
      continue;
    }
    const x = ((span - 1 - age) * (KEEP - 1)) / (span - 1);
    const y = 48 - (v / max) * 46;
    d += `${pen ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)}`;
    pen = true;
  }
  return d;
}

function draw(c, points, seq, series, unit) {
  const span = spanOf(points);
  let max = 0;
  for (const p of points) for (const s of series) if (p[s.col] !== null && p[s.col] > max) max = p[s.col];
  max = max > 0 ? max * 1.1 : 1;
  c.svg.replaceChildren();
  for (const s of series) {
    const path = document.createElementNS(SVG, 'path');
    path.setAttribute('d', pathOf(points, s.col, seq, max, span));
    path.setAttribute('class', s.cls);
    path.setAttribute('vector-effect', 'non-scaling-stroke');
    c.svg.append(path);
  }
  const shown = span >= 120 ? `${Math.round(span / 60)} min` : `${span} s`;
  c.caption.textContent = `${c.label}, last ${shown} · max ${unit === 'ms' ? fmtMs(max / 1.1) : fmtRate(max / 1.1)}`;
}

function charts(host) {
  const rate = chart('requests/s', 'rate');
  const lat = chart('p50 (green) and p99 (orange)', 'latency');
  host.append(rate.fig, lat.fig);
  return { rate, lat };
}

function drawCharts(c, points) {
  draw(c.rate, points, st.seq, [{ col: RPS, cls: 'rps' }], '/s');
  draw(c.lat, points, st.seq, [{ col: P99, cls: 'p99' }, { col: P50, cls: 'p50' }], 'ms');
}

// ---- tiles -----------------------------------------------------------------------------------

function figure(name, id) {
  const d = el('div');
  d.append(el('span', { class: 'label' }, name), el('span', { class: 'value', 'data-testid': id }, '–'));
  return d;
}

function makeTile(address) {
  const tile = el('article', { class: 'tile', 'data-testid': 'server', 'data-address': address });
  const head = el('header');
  head.append(el('h3', { 'data-testid': 'server-url' }), el('span', { class: 'state', 'data-testid': 'state' }));
  const figs = el('div', { class: 'figures' });
  figs.append(figure('requests/s', 'rps'), figure('in flight', 'in-flight'), figure('p50', 'p50'),
    figure('p99', 'p99'), figure('weight', 'weight'), figure('requests', 'requests'));
  const check = el('p', { class: 'check', 'data-testid': 'last-check' });
  const chartBox = el('div', { class: 'charts' });
  const c = charts(chartBox);
  const actions = el('form', { class: 'actions' });
  const drain = el('button', { type: 'button', 'data-testid': 'drain' }, 'Drain');
  const enable = el('button', { type: 'button', 'data-testid': 'enable' }, 'Enable');
  const wlabel = el('label', {}, 'weight ');
  const winput = el('input', { type: 'number', min: '1', max: '1000', step: '1', required: '', 'data-testid': 'weight-input' });
  wlabel.append(winput);
  const wset = el('button', { type: 'submit', 'data-testid': 'weight-set' }, 'Set');
  actions.append(drain, enable, wlabel, wset);
  const path = `/servers/${address}`; // host:port as the balancer shows it (the admin API does not decode paths)
  drain.addEventListener('click', () => act('POST', `${path}/drain`, { then: 'park' }));
  enable.addEventListener('click', () => act('POST', `${path}/enable`));
  actions.addEventListener('submit', (ev) => {
    ev.preventDefault();
    act('PUT', `${path}/weight`, { weight: Number(winput.value) }).then(() => {
      winput.value = '';
    });
  });
  tile.append(head, figs, check, chartBox, actions);
  return { tile, charts: c, drain, enable, winput };
}

function setText(scope, id, text) {
  const e = scope.querySelector(`[data-testid="${id}"]`);
  if (e.textContent !== text) e.textContent = text;
}

function renderTile(entry) {
  const { info, points } = entry;
  const t = entry.tile;
  const p = last(points);
  const [p50, p99] = latestLatency(points);
  setText(t.tile, 'server-url', info.url);
  const state = t.tile.querySelector('[data-testid="state"]');
  state.textContent = info.state === 'ejected' ? `ejected ${Math.ceil(info.ejected_for_ms / 1000)} s` : info.state;
  state.dataset.state = info.state;
  t.tile.dataset.state = info.state;
  setText(t.tile, 'rps', p ? fmtRate(p[RPS]) : '–');
  setText(t.tile, 'in-flight', String(info.in_flight));
  setText(t.tile, 'p50', fmtMs(p50));
  setText(t.tile, 'p99', fmtMs(p99));
  setText(t.tile, 'weight', String(info.weight));
  setText(t.tile, 'requests', String(info.requests));
  setText(t.tile, 'last-check', `last check: ${info.last_check}`);
  const active = info.state !== 'draining' && info.state !== 'parked';
  t.drain.disabled = !active;
  t.enable.disabled = active;
  drawCharts(t.charts, points);
}

function renderTotals() {
  const { info, points } = st.totals;
  const p = last(points);
  const [p50, p99] = latestLatency(points);
  $('total-up').textContent = `${info.up} / ${info.servers}`;
  $('total-rps').textContent = p ? fmtRate(p[RPS]) : '–';
  $('total-in-flight').textContent = String(info.in_flight);
  $('total-p50').textContent = fmtMs(p50);
  $('total-p99').textContent = fmtMs(p99);
  $('total-errors').textContent = p ? String(p[ERR]) : '–';
  if (!st.totals.charts) st.totals.charts = charts($('total-charts'));
  drawCharts(st.totals.charts, points);
}

function keep(points, more) {
  const all = points.concat(more);
  return all.length > KEEP ? all.slice(all.length - KEEP) : all;
}

function applySeries(doc) {
  st.seq = doc.seq;
  $('policy').textContent = `policy ${doc.policy}`;
  st.totals.info = doc.totals;
  st.totals.points = keep(st.totals.points, doc.totals.points);
  const seen = new Set();
  const box = $('servers');
  for (const s of doc.servers) {
    seen.add(s.address);
    let entry = st.servers.get(s.address);
    if (!entry) {
      entry = { info: s, points: [], tile: makeTile(s.address) };
      st.servers.set(s.address, entry);
    }
    entry.info = s;
    entry.points = keep(entry.points, s.points);
    box.append(entry.tile.tile); // in the balancer's order
    renderTile(entry);
  }
  for (const [address, entry] of st.servers) {
    if (!seen.has(address)) {
      entry.tile.tile.remove();
      st.servers.delete(address);
    }
  }
  renderTotals();
}

function applyEvents(doc) {
  const list = $('events');
  for (const e of doc.events) {
    const li = el('li', { 'data-testid': 'event', 'data-kind': e.kind, 'data-server': e.server });
    li.append(el('time', { datetime: new Date(e.time_ms).toISOString() }, fmtTime(e.time_ms)),
      el('span', { class: `kind kind-${e.kind}` }, e.kind), el('span', { class: 'server' }, e.server || 'balancer'),
      el('span', { class: 'detail' }, e.detail));
    list.prepend(li);
    st.lastEvent = e.id;
  }
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

// ---- the loop --------------------------------------------------------------------------------

async function poll() {
  if (st.busy || !st.token) return;
  st.busy = true;
  clearTimeout(st.timer);
  try {
    const [series, events] = await Promise.all([call('GET', `/series?since=${st.seq}`),
      call('GET', `/events?since=${st.lastEvent}`)]);
    applySeries(series);
    applyEvents(events);
    $('status').textContent = `live · ${fmtTime(Date.now())}`;
    $('status').dataset.ok = '1';
  } catch (err) {
    if (err instanceof AuthError) {
      st.busy = false;
      askToken(err.message);
      return;
    }
    $('status').textContent = `balancer not answering: ${err.message}`;
    $('status').dataset.ok = '0';
  }
  st.busy = false;
  st.timer = setTimeout(poll, POLL_MS);
}

async function act(method, path, body) {
  $('action-error').textContent = '';
  try {
    await call(method, path, body);
  } catch (err) {
    if (err instanceof AuthError) {
      askToken(err.message);
      return;
    }
    $('action-error').textContent = `${method} ${path}: ${err.message}`;
  }
  poll();
}

function start(token) {
  st.token = token;
  $('token-form').hidden = true;
  $('dashboard').hidden = false;
  poll();
}

const initial = readToken();
if (initial) start(initial);
else askToken();
