// profile.js — a user's page (profile, counts, follow button, their posts) and the lists of
// followers / followed accounts. Views follow the contract described in views.js.

import * as api from './api.js';
import { pagedList } from './components.js';
import { errorBox, h, monthElement, plural, userHref } from './dom.js';
import { postList } from './views.js';

const MAX_FOLLOW_PAGES = 50;

// Resolves to whether the logged-in account follows `username`. Uses the account's `following`
// field when the server provides one, else looks through the pages of who `me` follows.
async function isFollowing(me, account) {
  if (typeof account.following === 'boolean') return account.following;
  let next;
  for (let i = 0; i < MAX_FOLLOW_PAGES; i += 1) {
    const page = await api.following(me.username, next);
    if (page.items.some((a) => a.username === account.username)) return true;
    if (!page.next) return false;
    next = page.next;
  }
  return false;
}

function stat(n, one, many, testid, href) {
  const value = h('strong', { 'data-testid': testid, text: n ?? 0 });
  const label = ` ${(n ?? 0) === 1 ? one : many}`;
  return href ? h('a', { class: 'stat', href }, value, label) : h('span', { class: 'stat' }, value, label);
}

function profileHeader(account) {
  const base = userHref(account.username);
  return [
    h('div', { class: 'avatar', 'aria-hidden': 'true', text: initial(account) }),
    h('div', { class: 'who' },
      h('h1', { 'data-testid': 'profile-display-name', tabindex: '-1', text: account.display_name || account.username }),
      h('p', { class: 'username', 'data-testid': 'profile-username', text: `@${account.username}` }),
      account.created_at ? h('p', { class: 'muted joined' }, 'Joined ', monthElement(account.created_at)) : null),
    h('p', { class: 'stats' },
      stat(account.posts_count, 'post', 'posts', 'profile-posts-count'),
      stat(account.following_count, 'following', 'following', 'profile-following-count', `${base}/following`),
      stat(account.followers_count, 'follower', 'followers', 'profile-followers-count', `${base}/followers`)),
  ];
}

function initial(account) {
  const name = account.display_name || account.username || '?';
  return [...name][0].toUpperCase();
}

export function userView(ctx, username) {
  const errors = errorBox('page-error');
  const head = h('section', { class: 'card profile', 'data-testid': 'profile' }, h('p', { class: 'loading', text: 'Loading…' }));
  const followSlot = h('div', { class: 'follow-slot' });
  const followErrors = errorBox('follow-error');
  const posts = postList(ctx, {
    testid: 'user-posts',
    label: `Posts by @${username}`,
    fetchPage: (next) => api.accountPosts(username, next),
    emptyText: 'No posts yet.',
  });
  const postsSection = h('div', { class: 'user-posts' }, h('h2', { class: 'section-title', text: 'Posts' }), posts.el);
  const el = h('div', { class: 'view user' }, errors.el, head, postsSection);

  const paintHead = (account) => {
    head.replaceChildren(...profileHeader(account), followSlot, followErrors.el);
  };

  (async () => {
    let account;
    try {
      account = await api.getAccount(username);
    } catch (err) {
      if (!ctx.isCurrent()) return;
      head.remove();
      postsSection.remove();
      ctx.reportError(err, errors);
      return;
    }
    if (!ctx.isCurrent()) return;
    paintHead(account);
    posts.load();
    if (!ctx.me || ctx.me.username === account.username) return;

    let following;
    try {
      following = await isFollowing(ctx.me, account);
    } catch (err) {
      if (ctx.isCurrent()) ctx.reportError(err, followErrors);
      return;
    }
    if (!ctx.isCurrent()) return;
    const button = h('button', { type: 'button', class: 'follow', 'data-testid': 'follow-button' });
    const paint = () => {
      button.textContent = following ? 'Unfollow' : 'Follow';
      button.setAttribute('aria-pressed', String(following));
      button.classList.toggle('primary', !following);
    };
    button.addEventListener('click', async () => {
      button.disabled = true;
      followErrors.clear();
      try {
        following = await api.setFollowing(account.username, !following);
        paint();
        const fresh = await api.getAccount(account.username);
        if (ctx.isCurrent()) paintHead(fresh);
      } catch (err) {
        if (ctx.isCurrent()) ctx.reportError(err, followErrors);
      } finally {
        button.disabled = false;
      }
    });
    paint();
    followSlot.replaceChildren(button);
  })();
  return { title: `@${username}`, el };
}

// which: "followers" or "following".
export function peopleView(ctx, username, which) {
  const heading = which === 'followers' ? `Followers of @${username}` : `Accounts @${username} follows`;
  const list = pagedList(ctx, {
    testid: `${which}-list`,
    label: heading,
    fetchPage: (next) => (which === 'followers' ? api.followers(username, next) : api.following(username, next)),
    render: (account) => h('a', { class: 'person card', href: userHref(account.username), 'data-testid': 'person' },
      h('span', { class: 'avatar small', 'aria-hidden': 'true', text: initial(account) }),
      h('span', { class: 'who' },
        h('span', { class: 'display-name', text: account.display_name || account.username }),
        h('span', { class: 'username', text: `@${account.username}` })),
      h('span', { class: 'muted count', text: plural(account.followers_count ?? 0, 'follower', 'followers') })),
    emptyText: which === 'followers' ? 'No followers yet.' : 'Not following anyone yet.',
  });
  list.load();
  const el = h('div', { class: 'view people' },
    h('p', { class: 'back' }, h('a', { href: userHref(username), text: `← @${username}` })),
    h('h1', { class: 'section-title', text: heading, tabindex: '-1' }),
    list.el);
  return { title: heading, el };
}
