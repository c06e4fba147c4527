// components.js — reusable pieces of the UI: a post card, the composer, a paginated list.
//
// Each function returns a DOM element (built with h(), so user text is never parsed as HTML) and
// takes ctx = {me, api-level helpers from app.js}: ctx.me is the logged-in account or null,
// ctx.reportError(err, box) shows an API error in an errorBox.

import * as api from './api.js';
import { codePointLength, errorBox, h, postHref, timeElement, userHref } from './dom.js';

export const MAX_POST_CHARS = 500;

// Renders a post as an <article>. opts.onDeleted(post, article) is called after the author
// deleted it (default: the card removes itself); opts.large renders it bigger (post detail page);
// opts.hideReplyTo leaves out the "Replying to a post" link.
export function postCard(post, ctx, opts = {}) {
  const author = post.author ?? {};
  const likeCount = h('span', { class: 'count', 'data-testid': 'like-count', text: post.likes_count ?? 0 });
  const likeButton = h(
    'button',
    { type: 'button', class: 'action like', 'data-testid': 'like-button', disabled: !ctx.me },
    h('span', { class: 'icon', 'aria-hidden': 'true' }),
    h('span', { class: 'label' }),
    likeCount,
  );
  const replyCount = h('span', { class: 'count', 'data-testid': 'reply-count', text: post.replies_count ?? 0 });
  const replyLink = h(
    'a',
    { class: 'action reply', href: postHref(post.id), 'data-testid': 'reply-link' },
    h('span', { class: 'icon', 'aria-hidden': 'true', text: '↩' }),
    h('span', { class: 'label', text: 'Replies' }),
    replyCount,
  );
  const errors = errorBox('post-error');
  const actions = h('div', { class: 'actions' }, replyLink, likeButton);

  const article = h(
    'article',
    { class: opts.large ? 'post large' : 'post', 'data-testid': 'post', 'data-post-id': String(post.id) },
    h(
      'header',
      { class: 'post-head' },
      h('a', { class: 'author', href: userHref(author.username ?? ''), 'data-testid': 'post-author' },
        h('span', { class: 'display-name', text: author.display_name || author.username || '' }),
        h('span', { class: 'username', text: `@${author.username ?? ''}` })),
      h('a', { class: 'permalink', href: postHref(post.id), 'data-testid': 'post-permalink' },
        timeElement(post.created_at)),
    ),
    post.reply_to !== null && post.reply_to !== undefined && !opts.hideReplyTo
      ? h('p', { class: 'reply-to' }, h('a', { href: postHref(post.reply_to), text: 'Replying to a post' }))
      : null,
    h('p', { class: 'post-text', 'data-testid': 'post-text', text: post.text ?? '' }),
    actions,
    errors.el,
  );
  article.agoraPost = post;
  paintLike(article, post);

  likeButton.addEventListener('click', async () => {
    const current = article.agoraPost;
    likeButton.disabled = true;
    errors.clear();
    try {
      updatePost(article, await api.setLiked(current.id, !current.liked));
    } catch (err) {
      ctx.reportError(err, errors);
    } finally {
      likeButton.disabled = !ctx.me;
    }
  });

  if (ctx.me && author.username === ctx.me.username) {
    actions.appendChild(deleteButton(article, ctx, errors, opts.onDeleted));
  }
  return article;
}

// Two-step delete: the first click asks, the second deletes. The question resets after a while.
function deleteButton(article, ctx, errors, onDeleted) {
  let armed = false;
  let timer = 0;
  const button = h('button', { type: 'button', class: 'action delete', 'data-testid': 'delete-button', text: 'Delete' });
  const disarm = () => {
    armed = false;
    button.textContent = 'Delete';
    button.classList.remove('armed');
  };
  button.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      button.textContent = 'Really delete?';
      button.classList.add('armed');
      clearTimeout(timer);
      timer = setTimeout(disarm, 5000);
      return;
    }
    clearTimeout(timer);
    button.disabled = true;
    errors.clear();
    try {
      await api.deletePost(article.agoraPost.id);
      article.remove();
      if (onDeleted) onDeleted(article.agoraPost, article);
    } catch (err) {
      ctx.reportError(err, errors);
      button.disabled = false;
      disarm();
    }
  });
  return button;
}

function paintLike(article, post) {
  const button = article.querySelector('[data-testid="like-button"]');
  const liked = Boolean(post.liked);
  button.setAttribute('aria-pressed', String(liked));
  button.classList.toggle('liked', liked);
  button.querySelector('.icon').textContent = liked ? '♥' : '♡';
  button.querySelector('.label').textContent = liked ? 'Unlike' : 'Like';
  button.title = liked ? 'Unlike' : 'Like';
}

// Updates an existing post card in place from a fresh copy of the post.
export function updatePost(article, post) {
  article.agoraPost = post;
  article.querySelector('[data-testid="like-count"]').textContent = String(post.likes_count ?? 0);
  article.querySelector('[data-testid="reply-count"]').textContent = String(post.replies_count ?? 0);
  paintLike(article, post);
}

// The composer. opts: {replyTo, label, placeholder, submitText, onPosted(post)}.
export function composer(ctx, opts = {}) {
  const id = opts.replyTo !== undefined ? 'reply-text' : 'compose-text';
  const counterId = `${id}-count`;
  const textarea = h('textarea', {
    id,
    name: 'text',
    rows: opts.replyTo !== undefined ? 2 : 3,
    placeholder: opts.placeholder ?? "What's happening?",
    'aria-describedby': counterId,
    'data-testid': 'compose-text',
    required: true,
  });
  const counter = h('span', { id: counterId, class: 'counter', 'data-testid': 'char-count' });
  const submit = h('button', { type: 'submit', class: 'primary', 'data-testid': 'compose-submit', text: opts.submitText ?? 'Post' });
  const errors = errorBox('compose-error');
  let busy = false;
  // One idempotency key per draft: a retry of the same text after a failure cannot post twice.
  let draft = { text: null, key: null };

  const refresh = () => {
    const n = codePointLength(textarea.value);
    counter.textContent = `${n} / ${MAX_POST_CHARS}`;
    counter.classList.toggle('near', n > MAX_POST_CHARS - 20 && n <= MAX_POST_CHARS);
    counter.classList.toggle('over', n > MAX_POST_CHARS);
    submit.disabled = busy || textarea.value.trim() === '' || n > MAX_POST_CHARS;
  };
  textarea.addEventListener('input', refresh);
  textarea.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
  });

  const form = h(
    'form',
    { class: 'composer card', 'data-testid': opts.replyTo !== undefined ? 'reply-form' : 'compose-form', novalidate: true },
    h('label', { for: id, class: 'visually-hidden', text: opts.label ?? 'New post' }),
    textarea,
    h('div', { class: 'composer-foot' }, counter, submit),
    errors.el,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    busy = true;
    refresh();
    errors.clear();
    try {
      if (draft.text !== textarea.value) draft = { text: textarea.value, key: api.newIdempotencyKey() };
      const post = await api.createPost(textarea.value, opts.replyTo, draft.key);
      draft = { text: null, key: null };
      textarea.value = '';
      if (opts.onPosted) opts.onPosted(post);
    } catch (err) {
      ctx.reportError(err, errors);
    } finally {
      busy = false;
      refresh();
    }
  });
  refresh();
  return form;
}

// A list that loads pages on demand. fetchPage(next) resolves to {items, next}; render(item, list)
// returns an element; key(item) identifies an item so that one already shown (e.g. just posted)
// is not shown twice. Returns {el, load(), prependItem(item), appendItem(item), removed()}: load()
// fetches the first page, removed() is called when a shown item went away. The "Load more"
// button is shown while the server announces a next page (Link rel="next").
export function pagedList(ctx, { fetchPage, render, key = (item) => String(item.id), emptyText, testid, label }) {
  const list = h('div', { class: 'list', 'data-testid': testid, 'aria-busy': 'true' });
  const empty = h('p', { class: 'empty', 'data-testid': `${testid}-empty`, text: emptyText, hidden: true });
  const more = h('button', { type: 'button', class: 'more', 'data-testid': 'load-more', text: 'Load more', hidden: true });
  const errors = errorBox(`${testid}-error`);
  const status = h('p', { class: 'loading', text: 'Loading…' });
  const shown = new Set();
  let next = null;
  let count = 0;
  let self = null;

  const syncEmpty = () => {
    empty.hidden = count > 0 || !status.hidden;
  };
  const add = (item, atTop) => {
    const k = key(item);
    if (shown.has(k)) return;
    shown.add(k);
    const el = render(item, self);
    if (atTop) list.prepend(el);
    else list.appendChild(el);
    count += 1;
  };
  const loadPage = async (url) => {
    more.disabled = true;
    errors.clear();
    list.setAttribute('aria-busy', 'true');
    try {
      const page = await fetchPage(url);
      if (!ctx.isCurrent()) return;
      for (const item of page.items) add(item, false);
      next = page.next;
      more.hidden = !next;
    } catch (err) {
      if (!ctx.isCurrent()) return;
      ctx.reportError(err, errors);
      more.hidden = url === undefined; // a failed later page can be retried with the button
    } finally {
      more.disabled = false;
      status.hidden = true;
      list.setAttribute('aria-busy', 'false');
      syncEmpty();
    }
  };
  more.addEventListener('click', () => loadPage(next ?? undefined));

  self = {
    el: h('section', { class: 'paged', 'aria-label': label }, list, status, empty, errors.el, more),
    load: () => loadPage(undefined),
    prependItem(item) {
      add(item, true);
      syncEmpty();
    },
    appendItem(item) {
      add(item, false);
      syncEmpty();
    },
    removed() {
      count = Math.max(0, count - 1);
      syncEmpty();
    },
  };
  return self;
}
