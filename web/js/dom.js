// dom.js — small DOM helpers. All text goes in through text nodes / textContent, never as HTML,
// so user data can never become markup.

// Creates an element. props: "class", "text" (textContent), "on<event>" (listener), anything
// else becomes an attribute (true → present and empty; false/null/undefined → absent). Children
// may be nodes, strings (added as text), arrays of those, or null/false (skipped).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

// Number of Unicode code points in s (what the 500-character limit counts).
export function codePointLength(s) {
  let n = 0;
  for (const _ of s) n += 1; // eslint-disable-line no-unused-vars
  return n;
}

// Parses an API timestamp (ISO 8601 string, or Unix seconds / milliseconds) into a Date or null.
export function parseTime(value) {
  if (value === null || value === undefined || value === '') return null;
  let d;
  if (typeof value === 'number') d = new Date(value < 1e12 ? value * 1000 : value);
  else if (/^\d+$/.test(String(value))) return parseTime(Number(value));
  else d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

// A <time> element: short relative text ("5m", "3h", "12 Mar"), the full date as its tooltip.
export function timeElement(value, now = Date.now()) {
  const d = parseTime(value);
  if (!d) return h('time', { text: '' });
  const secs = Math.max(0, Math.round((now - d.getTime()) / 1000));
  let short;
  if (secs < 45) short = 'now';
  else if (secs < 3600) short = `${Math.max(1, Math.round(secs / 60))}m`;
  else if (secs < 86400) short = `${Math.round(secs / 3600)}h`;
  else if (secs < 7 * 86400) short = `${Math.round(secs / 86400)}d`;
  else {
    const sameYear = d.getFullYear() === new Date(now).getFullYear();
    short = d.toLocaleDateString(undefined, sameYear
      ? { day: 'numeric', month: 'short' }
      : { day: 'numeric', month: 'short', year: 'numeric' });
  }
  return h('time', { datetime: d.toISOString(), title: d.toLocaleString(), text: short });
}

// A <time> element showing month and year ("November 2026"), the full date as its tooltip.
export function monthElement(value) {
  const d = parseTime(value);
  if (!d) return h('time', { text: '' });
  return h('time', {
    datetime: d.toISOString(),
    title: d.toLocaleString(),
    text: d.toLocaleDateString(undefined, { month: 'long', year: 'numeric' }),
  });
}

// "1 post", "2 posts".
export function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

// Hash-route links.
export const userHref = (username) => `#/u/${encodeURIComponent(username)}`;
export const postHref = (id) => `#/p/${encodeURIComponent(String(id))}`;

// An error paragraph announced to screen readers; empty and hidden until set.
export function errorBox(testid) {
  const el = h('p', { class: 'error', role: 'alert', 'data-testid': testid, hidden: true });
  return {
    el,
    show(message) {
      el.textContent = message;
      el.hidden = false;
    },
    clear() {
      el.textContent = '';
      el.hidden = true;
    },
  };
}
