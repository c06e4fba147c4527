// views.js — the pages reached by hash routes: log in, sign up, home timeline, post detail,
// not found. (Profile pages are in profile.js.)
//
// A view is a function (ctx, ...routeParams) → {title, el}: it returns its element at once and
// fills it asynchronously, checking ctx.isCurrent() before touching the page after each await,
// so a late answer never lands in a newer view.

import * as api from './api.js';
import { composer, pagedList, postCard, updatePost } from './components.js';
import { errorBox, h } from './dom.js';

function field(id, labelText, attrs) {
  return h('div', { class: 'field' },
    h('label', { for: id, text: labelText }),
    h('input', { id, name: id, ...attrs }));
}

function authForm({ testid, heading, fields, submitText, footer, onSubmit }) {
  const errors = errorBox('form-error');
  const submit = h('button', { type: 'submit', class: 'primary wide', 'data-testid': `${testid}-submit`, text: submitText });
  const form = h('form', { class: 'card auth', 'data-testid': testid, novalidate: true },
    h('h1', { text: heading, tabindex: '-1' }),
    fields,
    errors.el,
    submit,
    h('p', { class: 'muted' }, footer));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    errors.clear();
    submit.disabled = true;
    try {
      await onSubmit(new FormData(form), errors);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function loginView(ctx) {
  const el = authForm({
    testid: 'login-form',
    heading: 'Log in to agora',
    submitText: 'Log in',
    fields: [
      field('login-username', 'Username', { autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' }),
      field('login-password', 'Password', { type: 'password', autocomplete: 'current-password', required: true }),
    ],
    footer: ['New here? ', h('a', { href: '#/signup', text: 'Create an account' })],
    async onSubmit(data, errors) {
      const username = String(data.get('login-username') ?? '').trim();
      const password = String(data.get('login-password') ?? '');
      if (!username || !password) {
        errors.show('Enter your username and password.');
        return;
      }
      try {
        ctx.setMe(await api.logIn(username, password));
        ctx.navigate('#/home');
      } catch (err) {
        ctx.reportError(err, errors);
      }
    },
  });
  return { title: 'Log in', el };
}

export function signupView(ctx) {
  const el = authForm({
    testid: 'signup-form',
    heading: 'Join agora',
    submitText: 'Sign up',
    fields: [
      field('signup-username', 'Username', { autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' }),
      field('signup-display-name', 'Display name (optional)', { autocomplete: 'name' }),
      field('signup-password', 'Password', { type: 'password', autocomplete: 'new-password', required: true }),
    ],
    footer: ['Already have an account? ', h('a', { href: '#/login', text: 'Log in' })],
    async onSubmit(data, errors) {
      const username = String(data.get('signup-username') ?? '').trim();
      const displayName = String(data.get('signup-display-name') ?? '').trim();
      const password = String(data.get('signup-password') ?? '');
      if (!username || !password) {
        errors.show('Choose a username and a password.');
        return;
      }
      try {
        await api.signUp(username, password, displayName);
        ctx.setMe(await api.logIn(username, password));
        ctx.navigate('#/home');
      } catch (err) {
        ctx.reportError(err, errors);
      }
    },
  });
  return { title: 'Sign up', el };
}

// A paginated list of posts whose cards remove themselves from the count when deleted.
export function postList(ctx, options) {
  return pagedList(ctx, {
    ...options,
    render: (post, list) => postCard(post, ctx, { onDeleted: () => list.removed() }),
  });
}

export function homeView(ctx) {
  const timeline = postList(ctx, {
    testid: 'timeline',
    label: 'Home timeline',
    fetchPage: (next) => api.homeTimeline(next),
    emptyText: 'Your home timeline is empty. Write something, or follow people to see their posts here.',
  });
  const compose = composer(ctx, {
    label: 'New post',
    onPosted: (post) => timeline.prependItem(post),
  });
  timeline.load();
  const el = h('div', { class: 'view home' },
    h('h1', { class: 'visually-hidden', text: 'Home', tabindex: '-1' }),
    compose,
    h('h2', { class: 'section-title', text: 'Home timeline' }),
    timeline.el);
  return { title: 'Home', el };
}

export function postView(ctx, id) {
  const errors = errorBox('page-error');
  const parentSlot = h('div', { class: 'parent', 'data-testid': 'parent-post' });
  const postSlot = h('div', { class: 'focus' }, h('p', { class: 'loading', text: 'Loading…' }));
  const repliesSlot = h('div', { class: 'replies' });
  const el = h('div', { class: 'view post-detail' },
    h('h1', { class: 'visually-hidden', text: 'Post', tabindex: '-1' }),
    errors.el, parentSlot, postSlot, repliesSlot);

  (async () => {
    let post;
    try {
      post = await api.getPost(id);
    } catch (err) {
      if (!ctx.isCurrent()) return;
      postSlot.replaceChildren();
      ctx.reportError(err, errors);
      return;
    }
    if (!ctx.isCurrent()) return;
    const card = postCard(post, ctx, {
      large: true,
      hideReplyTo: true,
      onDeleted: () => ctx.navigate(ctx.me ? `#/u/${encodeURIComponent(ctx.me.username)}` : '#/home'),
    });
    postSlot.replaceChildren(card);

    if (post.reply_to !== null && post.reply_to !== undefined) loadParent(ctx, post.reply_to, parentSlot);

    const bump = (delta) => {
      const current = card.agoraPost;
      updatePost(card, { ...current, replies_count: Math.max(0, (current.replies_count ?? 0) + delta) });
    };
    const list = pagedList(ctx, {
      testid: 'replies',
      label: 'Replies',
      fetchPage: (next) => api.replies(post.id, next),
      render: (reply, replies) => postCard(reply, ctx, {
        hideReplyTo: true,
        onDeleted: () => {
          replies.removed();
          bump(-1);
        },
      }),
      emptyText: 'No replies yet.',
    });
    repliesSlot.append(
      ctx.me
        ? composer(ctx, {
          replyTo: post.id,
          label: 'Your reply',
          placeholder: `Reply to @${post.author?.username ?? ''}`,
          submitText: 'Reply',
          onPosted: (reply) => {
            list.appendItem(reply);
            bump(1);
          },
        })
        : h('p', { class: 'muted' }, h('a', { href: '#/login', text: 'Log in' }), ' to reply.'),
      h('h2', { class: 'section-title', text: 'Replies' }),
      list.el,
    );
    list.load();
  })();
  return { title: 'Post', el };
}

async function loadParent(ctx, parentId, slot) {
  try {
    const parent = await api.getPost(parentId);
    if (!ctx.isCurrent()) return;
    slot.replaceChildren(h('p', { class: 'context-label', text: 'In reply to' }), postCard(parent, ctx));
  } catch (err) {
    if (!ctx.isCurrent()) return;
    const text = err.status === 404 ? 'In reply to a post that was deleted.' : `In reply to a post that could not be loaded: ${err.message}`;
    slot.replaceChildren(h('p', { class: 'context-label', text }));
  }
}

export function notFoundView() {
  return {
    title: 'Not found',
    el: h('div', { class: 'card view' },
      h('h1', { text: 'Page not found', tabindex: '-1' }),
      h('p', {}, 'There is nothing here. ', h('a', { href: '#/home', text: 'Go home' }))),
  };
}
