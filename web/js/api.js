// api.js — the agora JSON API (/api/v1) as promise-returning functions.
//
// Every call resolves to the decoded JSON body (list calls: {items, next}) or rejects with an
// ApiError whose message is the server's {"error": "..."} text, or a plain explanation when the
// server could not be reached or did not answer with JSON. The session is the HttpOnly cookie the
// server sets at login; the token from the login answer is also kept in memory (never in storage)
// and sent as a Bearer header. Listeners learn which server answered each call (X-Served-By) and
// when an authenticated call was refused with 401.

export const PAGE_SIZE = 20;

const state = { token: null };
const servedByListeners = new Set();
const unauthorizedListeners = new Set();

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

// Calls fn(hostPort) with the X-Served-By value of every later API answer that carries one.
export function onServedBy(fn) {
  servedByListeners.add(fn);
}

// Calls fn() whenever a call other than a login attempt or a session probe answers 401.
export function onUnauthorized(fn) {
  unauthorizedListeners.add(fn);
}

// Returns the URL of the rel="next" link of a Link header, reduced to path and query so that it
// is always fetched from this page's origin (through the balancer), or null when there is none.
export function parseNextLink(header) {
  if (!header) return null;
  for (const part of header.split(',')) {
    const m = /^\s*<([^>]*)>(.*)$/.exec(part);
    if (!m) continue;
    const params = m[2].split(';').map((p) => p.trim());
    const isNext = params.some((p) => {
      const kv = /^rel\s*=\s*"?([^"]*)"?$/i.exec(p);
      return kv !== null && kv[1].toLowerCase().split(/\s+/).includes('next');
    });
    if (!isNext) continue;
    try {
      const url = new URL(m[1], window.location.href);
      if (!url.pathname.startsWith('/api/')) return null;
      return url.pathname + url.search;
    } catch {
      return null;
    }
  }
  return null;
}

function describeStatus(resp) {
  const text = `${resp.status} ${resp.statusText || ''}`.trim();
  if (resp.status >= 500) return `The server had a problem (${text}). Please try again.`;
  return `The request failed (${text}).`;
}

// Performs one API request. Resolves to {data, next}; rejects with ApiError.
async function request(method, path, body, { quiet401 = false, extraHeaders = {} } = {}) {
  const headers = { Accept: 'application/json', ...extraHeaders };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'Cannot reach the server. Check that agora is running and try again.');
  }
  const servedBy = resp.headers.get('X-Served-By');
  if (servedBy) servedByListeners.forEach((fn) => fn(servedBy));

  let data = null;
  const text = await resp.text().catch(() => '');
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const message =
      data && typeof data.error === 'string' && data.error ? data.error : describeStatus(resp);
    if (resp.status === 401 && !quiet401) unauthorizedListeners.forEach((fn) => fn());
    throw new ApiError(resp.status, message);
  }
  return { data, next: parseNextLink(resp.headers.get('Link')) };
}

function listPath(base, next) {
  return next ?? `${base}?limit=${PAGE_SIZE}`;
}

async function list(base, next) {
  const { data, next: following } = await request('GET', listPath(base, next));
  return { items: Array.isArray(data) ? data : [], next: following };
}

const enc = encodeURIComponent;

// --- accounts and sessions --------------------------------------------------------------------

export async function signUp(username, password, displayName) {
  const body = { username, password };
  if (displayName) body.display_name = displayName;
  return (await request('POST', '/api/v1/accounts', body, { quiet401: true })).data;
}

// Logs in; resolves to the account and remembers the token for later calls.
export async function logIn(username, password) {
  const { data } = await request('POST', '/api/v1/sessions', { username, password }, { quiet401: true });
  state.token = data && typeof data.token === 'string' ? data.token : null;
  return data && data.account ? data.account : data;
}

// Ends the session on the server (best effort) and forgets the token.
export async function logOut() {
  try {
    await request('DELETE', '/api/v1/sessions', undefined, { quiet401: true });
  } finally {
    state.token = null;
  }
}

// Resolves to the logged-in account, or null when there is no valid session.
export async function currentAccount() {
  try {
    const { data } = await request('GET', '/api/v1/sessions', undefined, { quiet401: true });
    return data && data.account ? data.account : data;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      state.token = null;
      return null;
    }
    throw err;
  }
}

// Forgets the in-memory token (after the server said the session is gone).
export function forgetToken() {
  state.token = null;
}

export async function getAccount(username) {
  return (await request('GET', `/api/v1/accounts/${enc(username)}`)).data;
}

// Follows (follow = true) or unfollows username; resolves to true when now following.
export async function setFollowing(username, follow) {
  const { data } = await request(follow ? 'POST' : 'DELETE', `/api/v1/accounts/${enc(username)}/follow`);
  return Boolean(data && data.following);
}

export function followers(username, next) {
  return list(`/api/v1/accounts/${enc(username)}/followers`, next);
}

export function following(username, next) {
  return list(`/api/v1/accounts/${enc(username)}/following`, next);
}

// --- posts ------------------------------------------------------------------------------------

// A random key for the Idempotency-Key header (32 hex digits).
export function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// Creates a post (a reply when replyTo is set). Sending the same idempotencyKey again (a retry
// after a lost answer) gives back the post made the first time instead of a second copy.
export async function createPost(text, replyTo, idempotencyKey) {
  const body = { text };
  if (replyTo !== undefined && replyTo !== null) body.reply_to = replyTo;
  const extraHeaders = idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : {};
  return (await request('POST', '/api/v1/posts', body, { extraHeaders })).data;
}

export async function getPost(id) {
  return (await request('GET', `/api/v1/posts/${enc(id)}`)).data;
}

export async function deletePost(id) {
  await request('DELETE', `/api/v1/posts/${enc(id)}`);
}

// Likes (like = true) or unlikes a post; resolves to the updated post.
export async function setLiked(id, like) {
  return (await request(like ? 'POST' : 'DELETE', `/api/v1/posts/${enc(id)}/like`)).data;
}

export function replies(id, next) {
  return list(`/api/v1/posts/${enc(id)}/replies`, next);
}

export function homeTimeline(next) {
  return list('/api/v1/timelines/home', next);
}

export function accountPosts(username, next) {
  return list(`/api/v1/accounts/${enc(username)}/posts`, next);
}
