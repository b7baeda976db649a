// Routing: rendering the page for the address (the route table comes from app.js), the top bar,
// in-app links, history and signing out.

import { clearSession, state } from './state.js';
import { $main, $topbar, $userEmail, alertBox, h, setBusy, toast } from './dom.js';
import { api, errorText } from './api.js';
import { destroyCharts } from './charts.js';

// path → {auth, title, nav, section, render}. app.js fills the table in with setRoutes, so that
// this module needs no page module (the pages import navigate from here).
let routes = {};
let notFound = () => {};

export function setRoutes(table, notFoundPage) {
  routes = table;
  notFound = notFoundPage;
}

export function navigate(path, opts = {}) {
  if (opts.replace) history.replaceState(null, '', path);
  else if (path !== location.pathname + location.search) history.pushState(null, '', path);
  render();
}

export function normalPath() {
  const p = location.pathname.replace(/\/+$/, '');
  return p === '' ? '/' : p;
}

function closeAllDialogs() {
  for (const d of document.querySelectorAll('dialog')) {
    if (d.dismiss) d.dismiss();
    else d.remove();
  }
}

export async function render() {
  const seq = ++state.renderSeq;
  closeAllDialogs();
  destroyCharts();
  const path = normalPath();
  const route = routes[path];
  if (!route) {
    showChrome(null);
    renderPage('Page not found', notFound);
    return;
  }
  if (route.auth === true && !state.session) {
    const next = path === '/' ? '' : `?next=${encodeURIComponent(path)}`;
    history.replaceState(null, '', `/signin${next}`);
    return render();
  }
  const tf = state.session && state.session.two_factor;
  if (route.auth === true && tf && tf.required && !tf.enabled && path !== '/settings/security') {
    // The owner requires two-factor sign-in: until it is on, setting it up is all there is.
    history.replaceState(null, '', '/settings/security');
    return render();
  }
  if (route.auth === false && state.session) {
    history.replaceState(null, '', nextPath() || '/');
    return render();
  }
  showChrome(route);
  document.title = `${route.title} · Konnect`;
  const page = h('div', { class: 'page' });
  $main.replaceChildren(page);
  try {
    await route.render(page, () => seq === state.renderSeq);
  } catch (e) {
    if (seq !== state.renderSeq) return;
    const box = alertBox('error');
    box.show('Something went wrong', errorText(e));
    page.append(box);
  }
}

function renderPage(title, fn) {
  document.title = `${title} · Konnect`;
  const page = h('div', { class: 'page' });
  $main.replaceChildren(page);
  fn(page);
}

export function nextPath() {
  const next = new URLSearchParams(location.search).get('next');
  return next && routes[next] && routes[next].auth === true ? next : null;
}

function showChrome(route) {
  const signedIn = Boolean(state.session);
  $topbar.hidden = !signedIn;
  document.body.classList.toggle('is-auth-page', !signedIn);
  if (signedIn) {
    $userEmail.textContent = state.session.user ? state.session.user.email : '';
    for (const a of $topbar.querySelectorAll('[data-nav]')) {
      if (route && a.dataset.nav === route.nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
  }
}

export function focusHeading(page) {
  const h1 = page.querySelector('h1');
  if (h1) {
    h1.setAttribute('tabindex', '-1');
    h1.focus({ preventScroll: true });
  }
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest && ev.target.closest('a[data-link]');
  if (!a || ev.defaultPrevented || ev.button !== 0) return;
  if (ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener('popstate', () => render());

document.getElementById('signout').addEventListener('click', async (ev) => {
  const btn = ev.currentTarget;
  setBusy(btn, true);
  try {
    await api('POST', '/signout');
  } catch (e) {
    if (e.status !== 401) {
      setBusy(btn, false);
      toast(errorText(e));
      return;
    }
  }
  setBusy(btn, false);
  clearSession();
  state.pendingNotice = { kind: 'info', text: 'You have signed out.' };
  navigate('/signin');
});
