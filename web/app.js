// app.js — entry point of agora's web UI: session state, hash router, navigation bar and the
// "served by" indicator. Routes:
//   #/home                 home timeline and composer (logged in)
//   #/login, #/signup      forms (logged out)
//   #/u/NAME               a user's page
//   #/u/NAME/followers     who follows NAME;  #/u/NAME/following  whom NAME follows
//   #/p/ID                 a post with its replies

import * as api from './js/api.js';
import { h, userHref } from './js/dom.js';
import { peopleView, userView } from './js/profile.js';
import { homeView, loginView, notFoundView, postView, signupView } from './js/views.js';

const app = {
  me: null,         // the logged-in account, or null
  generation: 0,    // bumped on every render; views check it after each await
  notice: '',       // one-shot message shown above the next view (e.g. "session expired")
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const servedBy = document.getElementById('served-by');

function navigate(hash) {
  if (window.location.hash === hash) render();
  else window.location.hash = hash;
}

function reportError(err, box) {
  box.show(err && err.message ? err.message : 'Something went wrong. Please try again.');
}

async function logOut() {
  try {
    await api.logOut();
  } catch {
    // The session is forgotten locally either way; the server's answer changes nothing here.
  }
  app.me = null;
  navigate('#/login');
}

function renderNav(route) {
  const link = (href, text, testid, current) =>
    h('a', { href, 'data-testid': testid, 'aria-current': current ? 'page' : false, text });
  if (app.me) {
    const mine = route.name === 'user' && route.params[0] === app.me.username;
    nav.replaceChildren(
      link('#/home', 'Home', 'nav-home', route.name === 'home'),
      link(userHref(app.me.username), `@${app.me.username}`, 'nav-me', mine),
      h('button', { type: 'button', class: 'link', 'data-testid': 'logout', onclick: logOut, text: 'Log out' }),
    );
  } else {
    nav.replaceChildren(
      link('#/login', 'Log in', 'nav-login', route.name === 'login'),
      link('#/signup', 'Sign up', 'nav-signup', route.name === 'signup'),
    );
  }
}

// Parses location.hash into {name, params}.
function parseRoute(hash) {
  const path = hash.replace(/^#/, '');
  const parts = path.split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts.length === 0) return { name: 'default', params: [] };
  const [head, arg, sub] = parts;
  if (parts.length === 1 && ['home', 'login', 'signup'].includes(head)) return { name: head, params: [] };
  if (head === 'u' && arg && parts.length === 2) return { name: 'user', params: [arg] };
  if (head === 'u' && arg && parts.length === 3 && (sub === 'followers' || sub === 'following')) {
    return { name: 'people', params: [arg, sub] };
  }
  if (head === 'p' && arg && parts.length === 2) return { name: 'post', params: [arg] };
  return { name: 'notfound', params: [] };
}

const views = {
  home: homeView,
  login: loginView,
  signup: signupView,
  user: userView,
  people: peopleView,
  post: postView,
  notfound: notFoundView,
};

function render() {
  const route = parseRoute(window.location.hash);
  if (route.name === 'default') return navigate(app.me ? '#/home' : '#/login');
  if (route.name === 'home' && !app.me) return navigate('#/login');
  if ((route.name === 'login' || route.name === 'signup') && app.me) return navigate('#/home');

  app.generation += 1;
  const generation = app.generation;
  const ctx = {
    me: app.me,
    isCurrent: () => generation === app.generation,
    navigate,
    reportError,
    setMe: (account) => {
      app.me = account;
    },
  };
  renderNav(route);
  const view = views[route.name](ctx, ...route.params);
  const notice = app.notice ? h('p', { class: 'notice', role: 'status', 'data-testid': 'notice', text: app.notice }) : null;
  app.notice = '';
  main.replaceChildren(...[notice, view.el].filter(Boolean));
  main.setAttribute('aria-busy', 'false');
  document.title = `${view.title} · agora`;
  window.scrollTo(0, 0);
  // Move focus into the new page (forms: their first field) so keyboard and screen-reader users
  // start there; not on the very first render, where the browser's own start is fine.
  const target = route.name === 'login' || route.name === 'signup'
    ? main.querySelector('input')
    : generation > 1 && main.querySelector('h1');
  if (target) target.focus({ preventScroll: true });
}

api.onServedBy((server) => {
  servedBy.textContent = server;
});

// A refused call while we believed we were logged in means the session ended elsewhere.
api.onUnauthorized(() => {
  if (!app.me) return;
  app.me = null;
  api.forgetToken();
  app.notice = 'Your session has ended. Please log in again.';
  navigate('#/login');
});

async function start() {
  try {
    app.me = await api.currentAccount();
  } catch (err) {
    app.notice = `Could not check your session: ${err.message}`;
  }
  window.addEventListener('hashchange', render);
  render();
}

start();
