// Konnect dashboard: a small single-page app in plain JavaScript, talking to /dashboard/api/
// (docs/dashboard-api.md). No framework, no build step.
//
// Rules this file keeps:
// - The page runs under a strict Content-Security-Policy: no inline scripts, handlers or styles.
//   Every element is built with document.createElement; user data is only ever set as text.
// - A secret key lives only in the create/roll dialog while it is open. Closing that dialog, by
//   any means, empties and removes the field and drops every reference to the secret. Nothing
//   secret goes to localStorage, sessionStorage, the URL or the console.
// - The CSRF token is kept in memory only and sent as X-CSRF-Token on every POST, PATCH and
//   DELETE made while signed in.
'use strict';

(() => {
  const API = '/dashboard/api';
  const state = {
    session: null, // {user, account, role, csrf_token}
    csrf: null,
    renderSeq: 0,
  };
  let inviteToken = null; // read from #token=… on /invite, then removed from the URL
  let passwordToken = null; // likewise on /set-password (the operator's one-time link)
  let pendingNotice = null; // one-shot message for the next page (e.g. "You have signed out.")

  const $main = document.getElementById('main');
  const $topbar = document.getElementById('topbar');
  const $userEmail = document.getElementById('user-email');
  const $toast = document.getElementById('toast');

  // ---------------------------------------------------------------------------------------------
  // DOM helpers

  let uidCounter = 0;
  const uid = (prefix) => `${prefix}-${++uidCounter}`;

  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v == null || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = v;
        else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else if (k === 'dataset') Object.assign(el.dataset, v);
        else if (v === true) el.setAttribute(k, '');
        else el.setAttribute(k, String(v));
      }
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid == null || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  function field(labelText, input, hintText) {
    if (!input.id) input.id = uid('f');
    const hint = hintText ? h('p', { class: 'field-hint', id: uid('hint') }, hintText) : null;
    const error = h('p', { class: 'field-error', id: uid('err'), hidden: true });
    const describedBy = [hint && hint.id].filter(Boolean).join(' ');
    if (describedBy) input.setAttribute('aria-describedby', describedBy);
    const wrap = h('div', { class: 'field' }, h('label', { for: input.id }, labelText), input, hint, error);
    wrap.setError = (msg) => {
      error.textContent = msg || '';
      error.hidden = !msg;
      if (msg) {
        input.setAttribute('aria-invalid', 'true');
        input.setAttribute('aria-describedby', [describedBy, error.id].filter(Boolean).join(' '));
      } else {
        input.removeAttribute('aria-invalid');
        if (describedBy) input.setAttribute('aria-describedby', describedBy);
        else input.removeAttribute('aria-describedby');
      }
    };
    return wrap;
  }

  function alertBox(kind = 'error') {
    const box = h('div', { class: `alert alert-${kind}`, role: kind === 'error' ? 'alert' : 'status', hidden: true });
    box.show = (title, message) => {
      box.replaceChildren();
      if (title) box.append(h('strong', { class: 'alert-title' }, title));
      if (message) box.append(h('span', { class: 'alert-message' }, message));
      box.hidden = false;
    };
    box.clear = () => {
      box.replaceChildren();
      box.hidden = true;
    };
    return box;
  }

  function setBusy(button, busy, busyText) {
    if (busy) {
      button.dataset.label = button.textContent;
      if (busyText) button.textContent = busyText;
      button.disabled = true;
      button.setAttribute('aria-busy', 'true');
    } else {
      if (button.dataset.label) button.textContent = button.dataset.label;
      delete button.dataset.label;
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }

  let toastTimer = null;
  function toast(message) {
    $toast.textContent = message;
    $toast.classList.add('is-visible');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      $toast.classList.remove('is-visible');
      $toast.textContent = '';
    }, 4000);
  }

  // ---------------------------------------------------------------------------------------------
  // Formatting

  const nowSec = () => Math.floor(Date.now() / 1000);
  const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
  const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'long' });
  const numFmt = new Intl.NumberFormat();

  function timeEl(ts, text) {
    const d = new Date(ts * 1000);
    return h('time', { datetime: d.toISOString(), title: fullFmt.format(d) }, text);
  }

  function span(seconds) {
    const minutes = Math.round(seconds / 60);
    if (minutes < 1) return 'less than a minute';
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.round(seconds / 3600);
    if (hours < 48) return `${hours} h`;
    const days = Math.round(seconds / 86400);
    return `${days} days`;
  }

  function ago(ts) {
    if (ts == null) return 'never';
    const s = nowSec() - ts;
    if (s < 60) return timeEl(ts, 'just now');
    if (s < 7 * 86400) return timeEl(ts, `${span(s)} ago`);
    return timeEl(ts, dateFmt.format(new Date(ts * 1000)));
  }

  const capitalize = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : '');

  // Money arrives as integer micro-units of the currency (1 USD = 1,000,000): it is formatted by
  // integer arithmetic and string work, never as a floating-point amount. At least two decimals
  // are shown, and as many more as there are non-zero micro-units ($0.003114, $12.50).
  function money(micros, currency = 'usd') {
    const n = Math.trunc(Number(micros) || 0);
    const abs = Math.abs(n);
    let frac = String(abs % 1000000).padStart(6, '0');
    while (frac.length > 2 && frac.endsWith('0')) frac = frac.slice(0, -1);
    const units = String(Math.floor(abs / 1000000)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    const code = String(currency || '').toLowerCase();
    const amount = `${units}.${frac}`;
    return `${n < 0 ? '-' : ''}${code === 'usd' ? `$${amount}` : `${amount} ${code.toUpperCase()}`}`;
  }

  // "2026-11" as "November 2026"; dates of the billing period are UTC.
  const monthFmt = new Intl.DateTimeFormat(undefined, { month: 'long', year: 'numeric', timeZone: 'UTC' });
  const utcDateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeZone: 'UTC' });
  const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
  const monthName = (m) => monthFmt.format(new Date(`${m}-01T00:00:00Z`));

  function personName(v) {
    if (v == null || v === '') return null;
    if (typeof v === 'object') return v.email || v.name || v.id || null;
    return String(v);
  }

  // ---------------------------------------------------------------------------------------------
  // API

  class ApiError extends Error {
    constructor(status, body, headers) {
      const err = (body && body.error) || {};
      super(err.message || defaultMessage(status));
      this.status = status;
      this.code = err.code || (status ? `http_${status}` : 'network_error');
      this.param = err.param || null;
      this.requestId = err.request_id || (headers && headers.get('request-id')) || null;
      const ra = headers && headers.get('Retry-After');
      this.retryAfter = ra && /^\d+$/.test(ra) ? Number(ra) : null;
    }
  }

  function defaultMessage(status) {
    if (!status) return 'Could not reach the Konnect server. Check your connection and try again.';
    if (status === 404) return 'The dashboard API is not available on this server.';
    if (status >= 500) return `The server had a problem (HTTP ${status}). Try again in a moment.`;
    return `The request failed (HTTP ${status}).`;
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const opts = { method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error' };
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body === undefined ? {} : body);
      if (state.csrf) headers['X-CSRF-Token'] = state.csrf;
    }
    let res;
    try {
      res = await fetch(API + path, opts);
    } catch {
      throw new ApiError(0, null, null);
    }
    let data = null;
    if (res.status !== 204) {
      const text = await res.text();
      if (text) {
        try {
          data = JSON.parse(text);
        } catch {
          data = null;
        }
      }
    }
    if (!res.ok) {
      const e = new ApiError(res.status, data, res.headers);
      if (res.status === 401 && e.code === 'not_signed_in' && state.session) {
        clearSession();
        pendingNotice = { kind: 'info', text: 'Your session has ended. Please sign in again.' };
        navigate('/signin', { replace: true });
      }
      throw e;
    }
    return data;
  }

  function errorText(e) {
    let msg = e.message;
    if (e.requestId && e.status >= 500) msg += ` (request ${e.requestId})`;
    return msg;
  }

  function setSession(s) {
    state.session = s;
    state.csrf = (s && s.csrf_token) || null;
  }

  function clearSession() {
    state.session = null;
    state.csrf = null;
  }

  async function loadSession() {
    try {
      const s = await api('GET', '/session');
      setSession(s);
      return true;
    } catch (e) {
      if (e.status === 401) {
        clearSession();
        return true;
      }
      throw e;
    }
  }

  // After sign-in, sign-up or accepting an invite: adopt the answer, then read the full session
  // (which also names the role).
  async function adoptSignin(answer) {
    setSession(answer);
    try {
      await loadSession();
    } catch {
      setSession(answer);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Routing

  const routes = {
    '/': { auth: true, title: 'Dashboard', nav: 'dashboard', render: renderDashboard },
    '/signin': { auth: false, title: 'Sign in', render: renderSignin },
    '/signup': { auth: false, title: 'Sign up', render: renderSignup },
    '/invite': { auth: null, title: 'Join an account', render: renderInvite },
    '/set-password': { auth: null, title: 'Choose a password', render: renderSetPassword },
    '/settings': { auth: true, title: 'Settings', nav: 'settings', render: renderSettingsHome },
    '/settings/api-keys': { auth: true, title: 'API Keys', nav: 'settings', section: 'api-keys', render: renderApiKeys },
    '/settings/members': { auth: true, title: 'Members', nav: 'settings', section: 'members', render: renderMembers },
    '/settings/security': { auth: true, title: 'Security', nav: 'settings', section: 'security', render: renderSecurity },
    '/settings/billing': { auth: true, title: 'Usage & Billing', nav: 'settings', section: 'billing', render: renderBilling },
  };

  function navigate(path, opts = {}) {
    if (opts.replace) history.replaceState(null, '', path);
    else if (path !== location.pathname + location.search) history.pushState(null, '', path);
    render();
  }

  function normalPath() {
    const p = location.pathname.replace(/\/+$/, '');
    return p === '' ? '/' : p;
  }

  function closeAllDialogs() {
    for (const d of document.querySelectorAll('dialog')) {
      if (d.dismiss) d.dismiss();
      else d.remove();
    }
  }

  async function render() {
    const seq = ++state.renderSeq;
    closeAllDialogs();
    destroyCharts();
    const path = normalPath();
    const route = routes[path];
    if (!route) {
      showChrome(null);
      renderPage('Page not found', renderNotFound);
      return;
    }
    if (route.auth === true && !state.session) {
      const next = path === '/' ? '' : `?next=${encodeURIComponent(path)}`;
      history.replaceState(null, '', `/signin${next}`);
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

  function nextPath() {
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

  function focusHeading(page) {
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
    pendingNotice = { kind: 'info', text: 'You have signed out.' };
    navigate('/signin');
  });

  // ---------------------------------------------------------------------------------------------
  // Sign in, sign up, invitations

  function authCard(page, title, subtitle) {
    const card = h('section', { class: 'auth-card', 'aria-labelledby': 'auth-title' });
    page.append(
      h('div', { class: 'auth-wrap' },
        h('div', { class: 'auth-brand' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'K'), 'Konnect'),
        card));
    card.append(h('h1', { id: 'auth-title' }, title));
    if (subtitle) card.append(h('p', { class: 'muted' }, subtitle));
    if (pendingNotice) {
      const n = alertBox(pendingNotice.kind);
      n.show(null, pendingNotice.text);
      card.append(n);
      pendingNotice = null;
    }
    return card;
  }

  function emailInput(autocomplete) {
    return h('input', { type: 'email', name: 'email', autocomplete, required: true, spellcheck: 'false', autocapitalize: 'off' });
  }

  function validateEmail(f, input) {
    const v = input.value.trim();
    if (!v) return f.setError('Enter your email address.'), false;
    if (!/^[^\s@]+@[^\s@]+$/.test(v)) return f.setError('Enter a valid email address, like name@example.com.'), false;
    f.setError('');
    return true;
  }

  function validatePassword(f, input, creating) {
    const v = input.value;
    if (!v) return f.setError('Enter your password.'), false;
    if (creating && new TextEncoder().encode(v).length < 10) return f.setError('Use at least 10 characters.'), false;
    if (creating && new TextEncoder().encode(v).length > 256) return f.setError('Use at most 256 characters.'), false;
    f.setError('');
    return true;
  }

  function showAuthError(box, e) {
    if (e.code === 'too_many_attempts') {
      let msg = e.message;
      if (e.retryAfter && !/try again/i.test(msg)) msg += ` You can try again in ${span(e.retryAfter)}.`;
      box.show('Too many sign-in attempts', msg);
    } else if (e.code === 'invalid_credentials') {
      box.show('Could not sign you in', e.message);
    } else {
      box.show(null, errorText(e));
    }
  }

  function renderSignin(page) {
    const card = authCard(page, 'Sign in to Konnect', 'Manage your API keys, members and security settings.');
    const email = emailInput('username');
    const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
    const fEmail = field('Email', email);
    const fPassword = field('Password', password);
    const err = alertBox('error');
    const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Sign in');
    const form = h('form', { class: 'form', novalidate: true }, err, fEmail, fPassword, submit);
    card.append(form, h('p', { class: 'auth-switch' }, 'New to Konnect? ', h('a', { href: '/signup', 'data-link': true }, 'Create an account')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.clear();
      const ok = validateEmail(fEmail, email) & validatePassword(fPassword, password, false);
      if (!ok) return;
      setBusy(submit, true, 'Signing in…');
      try {
        const answer = await api('POST', '/signin', { email: email.value.trim(), password: password.value });
        password.value = '';
        await adoptSignin(answer);
        navigate(nextPath() || '/');
      } catch (e) {
        setBusy(submit, false);
        password.value = '';
        showAuthError(err, e);
        password.focus();
      }
    });
    email.focus();
  }

  function renderSignup(page) {
    const card = authCard(page, 'Create your Konnect account', 'Get API keys for the Konnect chat API in a minute.');
    const email = emailInput('email');
    const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minlength: '10', maxlength: '256' });
    const fEmail = field('Email', email);
    const fPassword = field('Password', password, '10 to 256 characters.');
    const err = alertBox('error');
    const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Create account');
    const form = h('form', { class: 'form', novalidate: true }, err, fEmail, fPassword, submit);
    card.append(form, h('p', { class: 'auth-switch' }, 'Already have an account? ', h('a', { href: '/signin', 'data-link': true }, 'Sign in')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.clear();
      const ok = validateEmail(fEmail, email) & validatePassword(fPassword, password, true);
      if (!ok) return;
      setBusy(submit, true, 'Creating account…');
      try {
        const answer = await api('POST', '/signup', { email: email.value.trim(), password: password.value });
        password.value = '';
        await adoptSignin(answer);
        navigate('/');
      } catch (e) {
        setBusy(submit, false);
        if (e.param === 'password') fPassword.setError(e.message);
        else if (e.param === 'email' || e.code === 'email_taken') fEmail.setError(e.message);
        else if (e.code === 'signup_closed') err.show('Sign-up is closed', e.message);
        else err.show(null, errorText(e));
      }
    });
    email.focus();
  }

  function isOwner() {
    return !!(state.session && state.session.role === 'owner');
  }

  function renderInvite(page) {
    const card = authCard(page, 'Join a Konnect account', 'You have been invited to a team on Konnect.');
    if (!inviteToken) {
      const box = alertBox('error');
      box.show('This invite link is incomplete', 'Open the full link you were sent, or ask the person who invited you for a new one.');
      card.append(box, h('p', { class: 'auth-switch' }, h('a', { href: '/signin', 'data-link': true }, 'Go to sign in')));
      return;
    }
    const err = alertBox('error');
    const joined = async (answer) => {
      inviteToken = null;
      await adoptSignin(answer);
      navigate('/');
      toast('Welcome to the team.');
    };
    const failed = (e, submit, fPassword) => {
      setBusy(submit, false);
      if (e.code === 'password_not_set') err.show('Choose a password first', e.message);
      else if (fPassword && e.param === 'password') fPassword.setError(e.message);
      else showAuthError(err, e);
    };
    if (state.session) {
      // Signed in: the session is the proof, for the invited user only.
      const me = state.session.user.email;
      const submit = h('button', { type: 'button', class: 'btn btn-primary btn-block' }, `Join as ${me}`);
      const other = h('button', { type: 'button', class: 'btn btn-ghost btn-block' }, 'Sign out and use another user');
      card.append(err, h('p', { class: 'muted' }, `You are signed in as ${me}. The invitation is for one email address: join with this user if it is the one invited.`), submit, other);
      submit.addEventListener('click', async () => {
        err.clear();
        setBusy(submit, true, 'Joining…');
        try {
          await joined(await api('POST', '/invites/accept', { token: inviteToken }));
        } catch (e) {
          failed(e, submit, null);
        }
      });
      other.addEventListener('click', async () => {
        try {
          await api('POST', '/signout');
        } catch {
          // Signed out or not, show the password form.
        }
        clearSession();
        render();
      });
      submit.focus();
      return;
    }
    const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
    const fPassword = field('Password', password, 'If you already have a Konnect user, enter its password (or sign in first). Otherwise choose one of 10 to 256 characters.');
    const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Accept invite');
    const form = h('form', { class: 'form', novalidate: true }, err, fPassword, submit);
    card.append(form);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.clear();
      if (!validatePassword(fPassword, password, false)) return;
      setBusy(submit, true, 'Joining…');
      try {
        const answer = await api('POST', '/invites/accept', { token: inviteToken, password: password.value });
        password.value = '';
        await joined(answer);
      } catch (e) {
        password.value = '';
        failed(e, submit, fPassword);
      }
    });
    password.focus();
  }

  function renderSetPassword(page) {
    const card = authCard(page, 'Choose your password', 'Your Konnect operator made this link for you. It works once.');
    if (!passwordToken) {
      const box = alertBox('error');
      box.show('This link is incomplete', 'Open the full link you were given, or ask the operator for a new one.');
      card.append(box, h('p', { class: 'auth-switch' }, h('a', { href: '/signin', 'data-link': true }, 'Go to sign in')));
      return;
    }
    const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minlength: '10', maxlength: '256' });
    const fPassword = field('New password', password, '10 to 256 characters. Setting it signs out every other session of your user.');
    const err = alertBox('error');
    const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Set password');
    const form = h('form', { class: 'form', novalidate: true }, err, fPassword, submit);
    card.append(form);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.clear();
      if (!validatePassword(fPassword, password, true)) return;
      setBusy(submit, true, 'Saving…');
      try {
        const answer = await api('POST', '/password/set', { token: passwordToken, password: password.value });
        password.value = '';
        passwordToken = null;
        if (answer) await adoptSignin(answer);
        navigate(answer ? '/' : '/signin');
        toast('Your password is set.');
      } catch (e) {
        setBusy(submit, false);
        if (e.param === 'password') fPassword.setError(e.message);
        else showAuthError(err, e);
      }
    });
    password.focus();
  }

  function renderNotFound(page) {
    page.append(
      h('div', { class: 'empty-page' },
        h('h1', null, 'Page not found'),
        h('p', { class: 'muted' }, 'There is nothing at this address.'),
        h('a', { class: 'btn btn-primary', href: state.session ? '/' : '/signin', 'data-link': true }, state.session ? 'Go to the dashboard' : 'Sign in')));
  }

  // ---------------------------------------------------------------------------------------------
  // Dashboard overview

  async function renderDashboard(page, current) {
    const s = state.session;
    page.append(
      h('div', { class: 'page-head' },
        h('div', null, h('h1', null, 'Dashboard'), h('p', { class: 'muted' }, `Signed in as ${s.user.email}`))));
    focusHeading(page);
    const stats = h('div', { class: 'stats', 'aria-busy': 'true' });
    page.append(stats);
    const origin = location.origin;
    page.append(
      h('section', { class: 'card', 'aria-labelledby': 'qs-title' },
        h('div', { class: 'card-head' },
          h('h2', { id: 'qs-title' }, 'Quick start'),
          h('a', { class: 'btn btn-secondary btn-sm', href: '/settings/api-keys', 'data-link': true }, 'Manage keys')),
        h('p', { class: 'muted' },
          'Create a secret key under Settings, keep it in the environment variable KONNECT_API_KEY on your server, and call the chat API:'),
        h('pre', { class: 'code', tabindex: '0' },
          h('code', null,
            `curl ${origin}/v1/chat \\\n-H "Authorization: Bearer $KONNECT_API_KEY" \\\n-H "Content-Type: application/json" \\\n-d '{"message": "Hello"}'`)),
        h('p', { class: 'muted small' },
          'Test keys (sk_test_…) are limited and return mock responses. Live keys (sk_live_…) count against your usage quota and are billed accordingly.')));

    let keys;
    try {
      keys = (await api('GET', '/keys')).data || [];
    } catch (e) {
      if (!current()) return;
      stats.removeAttribute('aria-busy');
      const box = alertBox('error');
      box.show('Could not load your keys', errorText(e));
      stats.replaceWith(box);
      return;
    }
    if (!current()) return;
    const working = keys.filter((k) => k.status === 'active' || k.status === 'rolled');
    const total = keys.reduce((n, k) => n + (Number(k.requests) || 0), 0);
    const stat = (label, value, note) =>
      h('div', { class: 'stat' }, h('p', { class: 'stat-label' }, label), h('p', { class: 'stat-value' }, value), note ? h('p', { class: 'stat-note' }, note) : null);
    stats.removeAttribute('aria-busy');
    stats.append(
      stat('Active keys', numFmt.format(working.length), `${numFmt.format(keys.length)} in all`),
      stat('Live keys', numFmt.format(working.filter((k) => k.mode === 'live').length), 'Production, billed'),
      stat('Test keys', numFmt.format(working.filter((k) => k.mode === 'test').length), 'Development, mock responses'),
      stat('Requests', numFmt.format(total), 'Across all keys'));
  }

  // ---------------------------------------------------------------------------------------------
  // Settings layout

  const sections = [
    ['api-keys', 'API Keys', '/settings/api-keys'],
    ['billing', 'Usage & Billing', '/settings/billing'],
    ['members', 'Members', '/settings/members'],
    ['security', 'Security', '/settings/security'],
  ];

  function settingsLayout(page, active) {
    page.append(h('div', { class: 'page-head' }, h('h1', null, 'Settings')));
    const content = h('div', { class: 'settings-content' });
    const menu = h('nav', { class: 'side-menu', 'aria-label': 'Settings' },
      h('ul', null, sections.map(([id, label, href]) =>
        h('li', null, h('a', { href, 'data-link': true, 'aria-current': id === active ? 'page' : null }, label)))));
    page.append(h('div', { class: 'settings-layout' }, menu, content));
    return content;
  }

  function renderSettingsHome(page) {
    const content = settingsLayout(page, null);
    focusHeading(page);
    const s = state.session;
    const row = (k, v) => [h('dt', null, k), h('dd', null, v)];
    content.append(
      h('section', { class: 'card', 'aria-labelledby': 'acct-title' },
        h('h2', { id: 'acct-title' }, 'Account'),
        h('dl', { class: 'details' },
          row('Account', (s.account && s.account.email) || '—'),
          row('Account ID', h('code', null, (s.account && s.account.id) || '—')),
          row('Signed in as', s.user.email),
          row('Your role', capitalize(s.role || 'member')))),
      h('section', { class: 'card' },
        h('h2', null, 'In settings'),
        h('ul', { class: 'plain-list' },
          h('li', null, h('strong', null, 'API Keys'), ' — create, roll, rename and revoke the secret keys your servers use.'),
          h('li', null, h('strong', null, 'Usage & Billing'), ' — live usage by day, key and environment, your quotas, and invoices.'),
          h('li', null, h('strong', null, 'Members'), ' — see who can use this account and invite people.'),
          h('li', null, h('strong', null, 'Security'), ' — read the audit log and sign out of every session.'))));
  }

  function sectionHead(title, description, action) {
    return h('div', { class: 'section-head' },
      h('div', null, h('h2', null, title), description ? h('p', { class: 'muted' }, description) : null),
      action || null);
  }

  // ---------------------------------------------------------------------------------------------
  // Dialogs

  // Opens a modal <dialog>; it is removed from the page when it closes. onClose runs once.
  function openDialog({ title, labelledBy, wide, onClose }) {
    const titleId = labelledBy || uid('dlg-title');
    const body = h('div', { class: 'dialog-body' });
    const heading = h('h2', { id: titleId, class: 'dialog-title' }, title);
    const dlg = h('dialog', { class: `dialog${wide ? ' dialog-wide' : ''}`, 'aria-labelledby': titleId }, heading, body);
    let closed = false;
    const finish = () => {
      if (closed) return;
      closed = true;
      try {
        if (onClose) onClose();
      } finally {
        dlg.remove();
      }
    };
    dlg.addEventListener('close', finish);
    // Closes the dialog and cleans up at once (the native close event comes a task later).
    dlg.dismiss = () => {
      if (dlg.open) dlg.close();
      finish();
    };
    document.body.append(dlg);
    dlg.showModal();
    dlg.setTitle = (t) => {
      heading.textContent = t;
    };
    dlg.body = body;
    return dlg;
  }

  function dialogFooter(...buttons) {
    return h('div', { class: 'dialog-footer' }, ...buttons);
  }

  // Shows a new secret in dialog dlg: once, in a read-only field with a Copy button. Whatever
  // closes the dialog (Done, Escape, navigation) empties and removes the field, and the secret
  // is no longer referenced anywhere.
  function showSecret(dlg, holder, { title, intro }) {
    dlg.setTitle(title);
    const input = h('input', { type: 'text', readonly: true, class: 'input-mono', spellcheck: 'false', autocomplete: 'off', 'aria-describedby': null });
    input.value = holder.secret;
    input.addEventListener('focus', () => input.select());
    const status = h('p', { class: 'copy-status', role: 'status', 'aria-live': 'polite' });
    const copyBtn = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Copy');
    copyBtn.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(input.value);
        status.textContent = 'Copied to clipboard.';
      } catch {
        input.focus();
        input.select();
        status.textContent = 'Could not copy automatically: the key is selected, press Ctrl+C (⌘C on a Mac).';
      }
    });
    const fieldId = uid('secret');
    input.id = fieldId;
    const warning = h('p', { class: 'alert alert-warning', id: uid('warn') }, "Copy your key now — it won't be shown again.");
    input.setAttribute('aria-describedby', warning.id);
    const done = h('button', { type: 'button', class: 'btn btn-primary' }, 'Done');
    done.addEventListener('click', () => dlg.dismiss());
    const secretBlock = h('div', { class: 'secret-block' },
      warning,
      intro ? h('p', { class: 'muted' }, intro) : null,
      h('div', { class: 'field' },
        h('label', { for: fieldId }, 'Secret key'),
        h('div', { class: 'input-row' }, input, copyBtn)),
      status,
      h('p', { class: 'muted small' }, 'Keep it in an environment variable (for example KONNECT_API_KEY) on your server. Never put it in source code or in JavaScript that runs in the browser.'),
      dialogFooter(done));
    dlg.body.replaceChildren(secretBlock);
    // First Escape is held back so a stray key press does not lose an uncopied key.
    let warned = false;
    dlg.addEventListener('cancel', (ev) => {
      if (!warned && !status.textContent) {
        ev.preventDefault();
        warned = true;
        status.textContent = 'Copy your key first, then press Done. Press Escape again to close without copying.';
      }
    });
    dlg.cleanupSecret = () => {
      input.value = '';
      input.remove();
      secretBlock.remove();
      holder.secret = null;
    };
    copyBtn.focus();
  }

  function confirmDialog({ title, message, confirmLabel, danger, action, onDone }) {
    const dlg = openDialog({ title });
    const err = alertBox('error');
    const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
    const ok = h('button', { type: 'button', class: `btn ${danger ? 'btn-danger' : 'btn-primary'}` }, confirmLabel);
    cancel.addEventListener('click', () => dlg.dismiss());
    ok.addEventListener('click', async () => {
      err.clear();
      setBusy(ok, true);
      try {
        const result = await action();
        dlg.dismiss();
        if (onDone) onDone(result);
      } catch (e) {
        setBusy(ok, false);
        err.show(null, errorText(e));
      }
    });
    dlg.body.append(...[].concat(message).map((m) => (m instanceof Node ? m : h('p', null, m))), err, dialogFooter(cancel, ok));
    cancel.focus();
    return dlg;
  }

  // ---------------------------------------------------------------------------------------------
  // Settings → API Keys

  const ENVIRONMENTS = ['development', 'staging', 'production'];

  function keyPath(k, suffix = '') {
    return `/keys/${encodeURIComponent(k.id)}${suffix}`;
  }

  async function renderApiKeys(page, current) {
    const content = settingsLayout(page, 'api-keys');
    focusHeading(page);
    const createBtn = h('button', { type: 'button', class: 'btn btn-primary' }, 'Create new secret key');
    content.append(sectionHead('API Keys',
      'Secret keys authenticate your servers’ requests to the Konnect API. Test keys (sk_test_…) are limited and return mock responses; live keys (sk_live_…) are billed.',
      createBtn));
    const listCard = h('section', { class: 'card card-flush', 'aria-label': 'Your API keys', 'aria-busy': 'true' },
      h('p', { class: 'loading' }, 'Loading keys…'));
    content.append(listCard, bestPractices());

    const refresh = async () => {
      let answer;
      try {
        answer = await api('GET', '/keys');
      } catch (e) {
        if (!current()) return;
        const box = alertBox('error');
        box.show('Could not load your keys', errorText(e));
        listCard.removeAttribute('aria-busy');
        listCard.replaceChildren(box);
        return;
      }
      if (!current()) return;
      listCard.removeAttribute('aria-busy');
      listCard.replaceChildren(keysTable(answer.data || [], refresh, answer.currency));
    };
    createBtn.addEventListener('click', () => createKeyDialog(refresh));
    await refresh();
  }

  function bestPractices() {
    const item = (title, text) => h('li', null, h('strong', null, title), h('span', null, text));
    return h('section', { class: 'card note', 'aria-labelledby': 'bp-title' },
      h('h2', { id: 'bp-title' }, 'Security Best Practices'),
      h('ul', { class: 'practices' },
        item('Never expose keys in client-side code', 'API keys should only be used in server-side code. Never include them in JavaScript that runs in the browser.'),
        item('Use environment variables', 'Store your API keys in environment variables, not in your source code.'),
        item('Rotate keys regularly', 'Create new keys periodically and revoke old ones to minimize risk.'),
        item('Use separate keys per environment', 'Create different keys for development, staging, and production.'),
        item('Keep your API keys secure', 'If you believe an API key has been compromised, revoke it immediately from your dashboard and create a new one.')));
  }

  function statusBadge(status) {
    const labels = { active: 'Active', rolled: 'Rolled', revoked: 'Revoked', expired: 'Expired' };
    return h('span', { class: `badge badge-status-${status}` }, labels[status] || capitalize(status));
  }

  function modeBadge(mode) {
    return h('span', { class: `badge badge-${mode === 'live' ? 'live' : 'test'}` }, mode === 'live' ? 'Live' : 'Test');
  }

  function expiresCell(k) {
    if (k.expires == null) return h('span', { class: 'muted' }, 'never');
    const left = k.expires - nowSec();
    if (k.status === 'rolled' && left > 0) return h('span', { class: 'text-warn' }, timeEl(k.expires, `expires in ${span(left)}`));
    return timeEl(k.expires, dateFmt.format(new Date(k.expires * 1000)));
  }

  function keysTable(keys, refresh, currency) {
    if (!keys.length) {
      return h('div', { class: 'empty' },
        h('p', { class: 'empty-title' }, 'No API keys yet'),
        h('p', { class: 'muted' }, 'Create a secret key to start calling the Konnect API.'));
    }
    const th = (text, cls) => h('th', { scope: 'col', class: cls || null }, text);
    const table = h('table', { class: 'table keys-table' },
      h('caption', { class: 'sr-only' }, 'API keys, newest first'),
      h('thead', null, h('tr', null,
        th('Name'), th('Key'), th('Created'), th('Last used'), th('Expires'), th('Status'), th('Requests', 'num'),
        th('This month', 'num'),
        h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      h('tbody', null, keys.map((k) => keyRow(k, refresh, currency))));
    return h('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-label': 'API keys table' }, table);
  }

  // This month's billed usage of a key: live keys only, since test keys are never billed.
  function monthCell(k, currency) {
    if (k.mode !== 'live') return h('td', { class: 'num muted', title: 'Test keys are not billed' }, '—');
    const u = k.usage || {};
    return h('td', { class: 'num', dataset: { usage: 'month' } },
      money(u.cost_micros, currency),
      h('span', { class: 'cell-sub' }, `${numFmt.format(Number(u.requests) || 0)} req · ${numFmt.format(Number(u.tokens) || 0)} tokens`));
  }

  function keyRow(k, refresh, currency) {
    const inactive = k.status === 'revoked' || k.status === 'expired';
    const nameId = uid('kname');
    const allow = Array.isArray(k.ip_allowlist) ? k.ip_allowlist : [];
    const by = personName(k.created_by);
    const actions = h('div', { class: 'row-actions' });
    if (!inactive) {
      const rename = h('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'aria-describedby': nameId }, 'Rename');
      rename.addEventListener('click', () => renameDialog(k, refresh));
      actions.append(rename);
      if (k.status === 'active' && (k.mode !== 'live' || isOwner())) {
        const roll = h('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'aria-describedby': nameId }, 'Roll key');
        roll.addEventListener('click', () => rollDialog(k, refresh));
        actions.append(roll);
      }
      const revoke = h('button', { type: 'button', class: 'btn btn-ghost btn-sm btn-danger-text', 'aria-describedby': nameId }, 'Revoke');
      revoke.addEventListener('click', () => revokeDialog(k, refresh));
      actions.append(revoke);
    }
    return h('tr', { class: inactive ? 'is-inactive' : null, dataset: { keyId: k.id, status: k.status } },
      h('td', null,
        h('span', { class: 'key-name', id: nameId }, k.name),
        allow.length ? h('span', { class: 'cell-sub', title: allow.join(', ') }, `Allowed: ${allow.length === 1 ? allow[0] : `${allow.length} ranges`}`) : null),
      h('td', null,
        h('code', { class: 'key-hint' }, k.hint),
        h('span', { class: 'key-tags' }, modeBadge(k.mode), h('span', { class: 'pill', title: 'Environment' }, capitalize(k.environment)))),
      h('td', null,
        k.created != null ? timeEl(k.created, dateFmt.format(new Date(k.created * 1000))) : '—',
        by ? h('span', { class: 'cell-sub cell-by', title: `Created by ${by}` }, `by ${by}`) : null),
      h('td', null, ago(k.last_used)),
      h('td', null, expiresCell(k)),
      h('td', null, statusBadge(k.status),
        k.status === 'revoked' && k.revoked != null ? h('span', { class: 'cell-sub' }, timeEl(k.revoked, dateFmt.format(new Date(k.revoked * 1000)))) : null),
      h('td', { class: 'num' }, numFmt.format(Number(k.requests) || 0)),
      monthCell(k, currency),
      h('td', { class: 'actions-cell' }, actions));
  }

  // A radio button in a bordered card: its name is the title, its description the text.
  function choice(group, value, checked, title, text) {
    const id = uid('choice');
    const titleEl = h('span', { class: 'choice-title', id: `${id}-t` }, title);
    const textEl = h('span', { class: 'choice-text', id: `${id}-d` }, text);
    return h('label', { class: 'choice', for: id },
      h('input', { type: 'radio', name: group, id, value, checked, 'aria-labelledby': titleEl.id, 'aria-describedby': textEl.id }),
      h('span', { class: 'choice-body' }, titleEl, textEl));
  }

  function createKeyDialog(refresh) {
    const holder = { secret: null };
    let dlg = null;
    dlg = openDialog({
      title: 'Create new secret key',
      onClose: () => {
        if (dlg.cleanupSecret) {
          dlg.cleanupSecret();
          refresh();
        }
        holder.secret = null;
      },
    });

    const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '128', autocomplete: 'off', placeholder: 'e.g. Production server' });
    const fName = field('Name', name, 'A name to recognise this key by, such as the server or app that uses it.');

    const typeName = uid('type');
    const radio = (value, title, prefix, text, checked) =>
      choice(typeName, value, checked, h('span', null, title, ' ', h('code', null, prefix)), text);
    const typeSet = h('fieldset', { class: 'field choices' },
      h('legend', null, 'Type'),
      radio('test', 'Test', 'sk_test_*', 'Test API keys for development. Requests are limited and return mock responses.', true),
      radio('live', 'Live', 'sk_live_*', isOwner()
        ? 'Live API keys for production use. Requests count against your usage quota and are billed accordingly.'
        : 'Live API keys for production use. Only the account\'s owner can create them.', false));
    if (!isOwner()) typeSet.querySelector('input[value="live"]').disabled = true;

    const env = h('select', { name: 'environment' }, ENVIRONMENTS.map((e) => h('option', { value: e }, capitalize(e))));
    env.value = 'development';
    let envTouched = false;
    env.addEventListener('change', () => {
      envTouched = true;
    });
    typeSet.addEventListener('change', () => {
      if (!envTouched) env.value = mode() === 'live' ? 'production' : 'development';
    });
    const mode = () => typeSet.querySelector('input:checked').value;
    const fEnv = field('Environment', env, 'Use separate keys for development, staging and production.');

    const expiry = h('select', { name: 'expiry' },
      h('option', { value: 'never' }, 'Never'),
      h('option', { value: '30' }, '30 days'),
      h('option', { value: '90' }, '90 days'),
      h('option', { value: 'date' }, 'On a date…'));
    const fExpiry = field('Expires', expiry);
    const date = h('input', { type: 'date', name: 'expires_at' });
    const tomorrow = new Date(Date.now() + 86400000);
    date.min = `${tomorrow.getFullYear()}-${String(tomorrow.getMonth() + 1).padStart(2, '0')}-${String(tomorrow.getDate()).padStart(2, '0')}`;
    const fDate = field('Expiry date', date, 'The key stops working at the end of this day (your time zone).');
    fDate.hidden = true;
    expiry.addEventListener('change', () => {
      fDate.hidden = expiry.value !== 'date';
      if (!fDate.hidden) date.focus();
    });

    const allow = h('textarea', { name: 'ip_allowlist', rows: '3', spellcheck: 'false', placeholder: '203.0.113.7\n198.51.100.0/24' });
    const fAllow = field('IP allowlist (optional)', allow,
      'Addresses or CIDR ranges, IPv4 or IPv6, separated by commas or new lines. Requests from anywhere else are refused. Leave empty to allow any address.');

    const err = alertBox('error');
    const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
    cancel.addEventListener('click', () => dlg.dismiss());
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create');
    const form = h('form', { class: 'form', novalidate: true },
      err, fName, typeSet, h('div', { class: 'field-row' }, fEnv, fExpiry), fDate, fAllow, dialogFooter(cancel, submit));
    dlg.body.append(form);
    name.focus();

    const fields = { name: fName, environment: fEnv, mode: typeSet, expires_in_days: fExpiry, expires_at: fDate, ip_allowlist: fAllow };
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.clear();
      for (const f of [fName, fDate, fAllow]) f.setError('');
      const body = { name: name.value.trim(), mode: mode(), environment: env.value };
      let ok = true;
      if (!body.name) {
        fName.setError('Give your key a name.');
        ok = false;
      }
      if (expiry.value === '30' || expiry.value === '90') body.expires_in_days = Number(expiry.value);
      if (expiry.value === 'date') {
        const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date.value);
        const at = m ? Math.floor(new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), 23, 59, 59).getTime() / 1000) : NaN;
        if (!m || !(at > nowSec())) {
          fDate.setError('Choose a date in the future.');
          ok = false;
        } else body.expires_at = at;
      }
      const ranges = allow.value.split(/[\s,]+/).filter(Boolean);
      if (ranges.length) body.ip_allowlist = ranges;
      if (!ok) {
        form.querySelector('[aria-invalid="true"]').focus();
        return;
      }
      setBusy(submit, true, 'Creating…');
      try {
        const answer = await api('POST', '/keys', body);
        holder.secret = answer.secret;
        answer.secret = null;
        const k = answer.key || {};
        showSecret(dlg, holder, {
          title: 'Save your secret key',
          intro: `“${k.name || body.name}” — ${k.mode === 'live' ? 'live' : 'test'} key for ${k.environment || body.environment}.`,
        });
        holder.secret = null;
      } catch (e) {
        setBusy(submit, false);
        const f = e.param && fields[e.param];
        if (f && f.setError) {
          f.setError(e.message);
          if (f === fDate) fDate.hidden = false;
          (f.querySelector('input, select, textarea') || submit).focus();
        } else {
          err.show(null, errorText(e));
        }
      }
    });
  }

  const GRACE = [
    ['0', 'Now', 'The old key stops working immediately.'],
    ['3600', '1 hour', 'Both keys work for an hour.'],
    ['86400', '24 hours', 'Both keys work for a day.'],
    ['604800', '7 days', 'Both keys work for a week.'],
  ];

  function rollDialog(k, refresh) {
    const holder = { secret: null };
    let dlg = null;
    dlg = openDialog({
      title: 'Roll key',
      onClose: () => {
        if (dlg.cleanupSecret) {
          dlg.cleanupSecret();
          refresh();
        }
        holder.secret = null;
      },
    });
    const groupName = uid('grace');
    const set = h('fieldset', { class: 'field choices choices-compact' },
      h('legend', null, 'When should the old key stop working?'),
      GRACE.map(([value, label, text]) => choice(groupName, value, value === '86400', label, text)));
    const err = alertBox('error');
    const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
    cancel.addEventListener('click', () => dlg.dismiss());
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Roll key');
    const form = h('form', { class: 'form', novalidate: true },
      h('p', null, 'Rolling creates a new secret for ', h('strong', null, k.name), ' (', h('code', null, k.hint),
        ') with the same type, environment and IP allowlist. Deploy the new key, then let the old one expire.'),
      err, set, dialogFooter(cancel, submit));
    dlg.body.append(form);
    set.querySelector('input:checked').focus();
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.clear();
      const grace = Number(set.querySelector('input:checked').value);
      setBusy(submit, true, 'Rolling…');
      try {
        const answer = await api('POST', keyPath(k, '/roll'), { grace_seconds: grace });
        holder.secret = answer.secret;
        answer.secret = null;
        const old = answer.rolled || {};
        let intro;
        if (grace === 0) intro = `The old key ${k.hint} has stopped working.`;
        else if (old.expires) intro = `The old key ${k.hint} keeps working until ${dateTimeFmt.format(new Date(old.expires * 1000))}.`;
        else intro = `The old key ${k.hint} keeps working for ${span(grace)}.`;
        showSecret(dlg, holder, { title: 'Save your new secret key', intro });
        holder.secret = null;
      } catch (e) {
        setBusy(submit, false);
        err.show(null, errorText(e));
      }
    });
  }

  function renameDialog(k, refresh) {
    let dlg = null;
    dlg = openDialog({ title: 'Rename key' });
    const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '128', autocomplete: 'off' });
    name.value = k.name;
    const fName = field('Name', name);
    const err = alertBox('error');
    const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
    cancel.addEventListener('click', () => dlg.dismiss());
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save');
    const form = h('form', { class: 'form', novalidate: true },
      h('p', { class: 'muted' }, 'Key ', h('code', null, k.hint)), err, fName, dialogFooter(cancel, submit));
    dlg.body.append(form);
    name.focus();
    name.select();
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.clear();
      const value = name.value.trim();
      if (!value) {
        fName.setError('Give your key a name.');
        name.focus();
        return;
      }
      fName.setError('');
      setBusy(submit, true, 'Saving…');
      try {
        await api('PATCH', keyPath(k), { name: value });
        dlg.dismiss();
        toast('Key renamed.');
        refresh();
      } catch (e) {
        setBusy(submit, false);
        if (e.param === 'name') fName.setError(e.message);
        else err.show(null, errorText(e));
      }
    });
  }

  function revokeDialog(k, refresh) {
    confirmDialog({
      title: 'Revoke API key',
      message: [
        h('p', null, h('strong', null, k.name), ' (', h('code', null, k.hint), ') will stop working immediately: every request with it will be refused with 401.'),
        h('p', { class: 'muted' }, 'This cannot be undone. Create a new key first if an application still needs access.'),
      ],
      confirmLabel: 'Revoke key',
      danger: true,
      action: () => api('POST', keyPath(k, '/revoke')),
      onDone: () => {
        toast(`Key “${k.name}” revoked.`);
        refresh();
      },
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Settings → Usage & Billing

  // Chart.js is served as a file of its own (/assets/chart.min.js, from Debian's libjs-chart.js)
  // and loaded the first time a chart is drawn.
  let chartLib = null;
  function loadChartJs() {
    if (window.Chart) return Promise.resolve(window.Chart);
    if (!chartLib) {
      chartLib = new Promise((resolve, reject) => {
        const script = h('script', { src: '/assets/chart.min.js' });
        script.addEventListener('load', () => (window.Chart ? resolve(window.Chart) : reject(new Error('Chart.js did not start.'))));
        script.addEventListener('error', () => {
          chartLib = null;
          script.remove();
          reject(new Error('The charts could not be loaded. Reload the page to try again.'));
        });
        document.head.append(script);
      });
    }
    return chartLib;
  }

  const charts = new Set();
  function destroyCharts() {
    for (const c of charts) c.destroy();
    charts.clear();
  }

  const PALETTE = ['#4f46e5', '#0ea5e9', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#ec4899', '#14b8a6', '#84cc16', '#64748b'];
  const ENV_COLORS = { production: '#4f46e5', staging: '#f59e0b', development: '#10b981' };

  // The stacked series of a usage report: one per key or one per environment.
  function usageSeries(u, by, metric) {
    const days = u.days || [];
    const field = by === 'environment'
      ? (metric === 'tokens' ? 'tokens_by_environment' : 'by_environment')
      : (metric === 'tokens' ? 'tokens_by_key' : 'by_key');
    const groups = by === 'environment'
      ? (u.environments || []).map((e, i) => ({ id: e.environment, label: capitalize(e.environment), color: ENV_COLORS[e.environment] || PALETTE[i % PALETTE.length] }))
      : (u.keys || []).map((k, i) => ({ id: k.key_id, label: `${k.name || k.key_id} (${k.hint || k.key_id})`, color: PALETTE[i % PALETTE.length] }));
    if (!groups.length) return [{ label: metric === 'tokens' ? 'Tokens' : 'Requests', data: days.map(() => 0), backgroundColor: PALETTE[0] }];
    return groups.map((g) => ({
      label: g.label,
      data: days.map((d) => Number((d[field] || {})[g.id]) || 0),
      backgroundColor: g.color,
      borderRadius: 2,
      maxBarThickness: 28,
    }));
  }

  function usageChart(Chart, canvas, u, by, metric) {
    const chart = new Chart(canvas, {
      type: 'bar',
      data: { labels: (u.days || []).map((d) => dayFmt.format(new Date(`${d.date}T00:00:00Z`))), datasets: usageSeries(u, by, metric) },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: 'index', intersect: false },
        scales: {
          x: { stacked: true, grid: { display: false } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } },
        },
        plugins: { legend: { position: 'bottom', labels: { boxWidth: 12 } } },
      },
    });
    charts.add(chart);
    return chart;
  }

  function quotaMeter(label, q, resetsText) {
    const used = Number(q.used) || 0;
    const limited = q.limit != null;
    const limit = limited ? Number(q.limit) : 0;
    const pct = limited ? (limit > 0 ? Math.min(100, (used / limit) * 100) : 100) : 0;
    const fill = h('div', { class: 'meter-fill' });
    fill.style.width = `${pct}%`; // CSSOM, which the style-src policy allows
    const level = !limited ? '' : pct >= 100 ? ' is-full' : pct >= 80 ? ' is-high' : '';
    const bar = h('div', {
      class: `meter${level}`, role: 'progressbar', 'aria-label': `${label} used this month`,
      'aria-valuemin': '0', 'aria-valuemax': limited ? String(limit) : null, 'aria-valuenow': limited ? String(used) : null,
      'aria-valuetext': limited ? `${numFmt.format(used)} of ${numFmt.format(limit)}` : `${numFmt.format(used)}, no limit`,
    }, fill);
    return h('div', { class: 'quota', dataset: { quota: label.toLowerCase() } },
      h('div', { class: 'quota-head' },
        h('span', { class: 'quota-label' }, label),
        h('span', { class: 'quota-figures' }, limited ? `${numFmt.format(used)} of ${numFmt.format(limit)} used` : `${numFmt.format(used)} used · no limit`)),
      bar,
      h('p', { class: 'quota-note' },
        limited ? `${numFmt.format(Number(q.remaining) || 0)} remaining` : 'Unlimited',
        q.source === 'override' ? ' · set for your account' : '',
        resetsText ? ` · ${resetsText}` : ''));
  }

  function daysTable(u) {
    const th = (t, cls) => h('th', { scope: 'col', class: cls || null }, t);
    return h('details', { class: 'chart-table' },
      h('summary', null, 'Daily figures as a table'),
      h('div', { class: 'table-scroll' },
        h('table', { class: 'table days-table' },
          h('thead', null, h('tr', null, th('Date'), th('Requests', 'num'), th('Input tokens', 'num'), th('Output tokens', 'num'), th('Cost', 'num'))),
          h('tbody', null, (u.days || []).map((d) => h('tr', null,
            h('td', null, d.date),
            h('td', { class: 'num' }, numFmt.format(d.requests)),
            h('td', { class: 'num' }, numFmt.format(d.input_tokens)),
            h('td', { class: 'num' }, numFmt.format(d.output_tokens)),
            h('td', { class: 'num' }, money(d.cost_micros, u.currency))))))));
  }

  async function renderBilling(page, current) {
    const content = settingsLayout(page, 'billing');
    focusHeading(page);
    const monthSelect = h('select', { id: uid('month'), name: 'month', class: 'month-select' });
    content.append(sectionHead('Usage & Billing',
      'What your live keys used and cost, your monthly quotas, and your invoices. Test keys are free and never counted.',
      h('div', { class: 'field field-inline' }, h('label', { for: monthSelect.id }, 'Month'), monthSelect)));
    const body = h('div', { class: 'stack billing', 'aria-busy': 'true' }, h('p', { class: 'loading' }, 'Loading usage…'));
    const invoicesCard = h('section', { class: 'card card-flush', 'aria-labelledby': 'inv-list-title' },
      h('h3', { id: 'inv-list-title', class: 'card-flush-title' }, 'Invoices'),
      h('p', { class: 'loading' }, 'Loading invoices…'));
    content.append(body, invoicesCard);

    let months = [];
    try {
      months = (await api('GET', '/invoices')).data || [];
    } catch (e) {
      if (!current()) return;
      const box = alertBox('error');
      box.show('Could not load your invoices', errorText(e));
      invoicesCard.replaceChildren(box);
    }
    if (!current()) return;
    if (months.length) invoicesCard.replaceChildren(invoicesCard.firstChild, invoicesTable(months));
    for (const m of months) monthSelect.append(h('option', { value: m.month }, monthName(m.month)));
    if (!monthSelect.options.length) monthSelect.hidden = true;

    const show = async (month) => {
      destroyCharts();
      body.setAttribute('aria-busy', 'true');
      let u;
      let Chart = null;
      let chartError = null;
      try {
        [u, Chart] = await Promise.all([
          api('GET', `/usage${month ? `?month=${encodeURIComponent(month)}` : ''}`),
          loadChartJs().catch((e) => {
            chartError = e;
            return null;
          }),
        ]);
      } catch (e) {
        if (!current()) return;
        const box = alertBox('error');
        box.show('Could not load your usage', errorText(e));
        body.removeAttribute('aria-busy');
        body.replaceChildren(box);
        return;
      }
      if (!current()) return;
      if (!monthSelect.value) monthSelect.value = u.month;
      body.replaceChildren(...usageView(u, Chart, chartError));
      body.removeAttribute('aria-busy');
    };
    monthSelect.addEventListener('change', () => show(monthSelect.value));
    await show(null);
  }

  // The usage report: figures, quotas, charts and the per-key table. Returns the nodes.
  function usageView(u, Chart, chartError) {
    const cur = u.currency;
    const t = u.totals || {};
    const stat = (label, value, note, key) =>
      h('div', { class: 'stat', dataset: { stat: key } }, h('p', { class: 'stat-label' }, label), h('p', { class: 'stat-value' }, value), note ? h('p', { class: 'stat-note' }, note) : null);
    const plan = u.plan || {};
    const perRequest = Number(plan.price_per_request_micros) || 0;
    const priceNote = [
      perRequest ? `${money(perRequest, cur)} a request` : null,
      plan.price_per_million_input_tokens_micros ? `${money(plan.price_per_million_input_tokens_micros, cur)} per 1M input tokens` : null,
      plan.price_per_million_output_tokens_micros ? `${money(plan.price_per_million_output_tokens_micros, cur)} per 1M output tokens` : null,
    ].filter(Boolean).join(' · ') || 'Free';
    const stats = h('div', { class: 'stats stats-billing' },
      stat(u.current ? 'Cost so far this month' : `Cost in ${monthName(u.month)}`, money(t.cost_micros, cur), u.current ? `${monthName(u.month)}, open invoice` : 'Final invoice', 'cost'),
      stat('Requests', numFmt.format(Number(t.requests) || 0), 'Billed live requests', 'requests'),
      stat('Tokens', numFmt.format(Number(t.tokens) || 0), `${numFmt.format(Number(t.input_tokens) || 0)} in · ${numFmt.format(Number(t.output_tokens) || 0)} out`, 'tokens'),
      stat('Plan', plan.name || '—', priceNote, 'plan'));

    const nodes = [stats];
    if (u.current && u.quota) {
      const resets = `resets on ${utcDateFmt.format(new Date(u.quota.resets_at))} (UTC)`;
      nodes.push(h('section', { class: 'card', 'aria-labelledby': 'quota-title' },
        h('h3', { id: 'quota-title' }, 'Monthly quota'),
        h('div', { class: 'quotas' },
          quotaMeter('Requests', u.quota.requests || {}, resets),
          quotaMeter('Tokens', u.quota.tokens || {}, resets))));
    }

    // Charts, stacked by key or by environment.
    const group = uid('by');
    const toggle = h('fieldset', { class: 'segmented' },
      h('legend', { class: 'sr-only' }, 'Break the charts down by'),
      ['key', 'environment'].map((v) => {
        const id = uid('seg');
        return [h('input', { type: 'radio', name: group, id, value: v, checked: v === 'key' }), h('label', { for: id }, v === 'key' ? 'By key' : 'By environment')];
      }));
    const reqCanvas = h('canvas', { id: 'chart-requests', role: 'img', 'aria-label': `Billed requests per day in ${monthName(u.month)}: ${numFmt.format(Number(t.requests) || 0)} in all` });
    const tokCanvas = h('canvas', { id: 'chart-tokens', role: 'img', 'aria-label': `Tokens per day in ${monthName(u.month)}: ${numFmt.format(Number(t.tokens) || 0)} in all` });
    const chartsCard = h('section', { class: 'card', 'aria-labelledby': 'charts-title' },
      h('div', { class: 'card-head' }, h('h3', { id: 'charts-title' }, 'Usage per day'), toggle),
      h('div', { class: 'charts' },
        h('figure', { class: 'chart' }, h('figcaption', null, 'Requests per day'), h('div', { class: 'chart-box' }, reqCanvas)),
        h('figure', { class: 'chart' }, h('figcaption', null, 'Tokens per day'), h('div', { class: 'chart-box' }, tokCanvas))),
      Number(t.requests) ? null : h('p', { class: 'muted small' }, 'No billed usage in this month yet: live requests appear here as they are billed.'),
      daysTable(u));
    nodes.push(chartsCard);
    if (Chart) {
      // Drawn once the canvases are in the page, so that they have a size.
      requestAnimationFrame(() => {
        if (!reqCanvas.isConnected) return;
        const made = [usageChart(Chart, reqCanvas, u, 'key', 'requests'), usageChart(Chart, tokCanvas, u, 'key', 'tokens')];
        toggle.addEventListener('change', () => {
          const by = toggle.querySelector('input:checked').value;
          made[0].data.datasets = usageSeries(u, by, 'requests');
          made[1].data.datasets = usageSeries(u, by, 'tokens');
          for (const c of made) c.update();
        });
        chartsCard.dataset.charts = 'ready';
      });
    } else {
      const box = alertBox('warning');
      box.show('Charts unavailable', chartError ? chartError.message : 'The charts could not be loaded.');
      chartsCard.insertBefore(box, chartsCard.children[1]);
      toggle.hidden = true;
    }

    // Per key.
    const th = (text, cls) => h('th', { scope: 'col', class: cls || null }, text);
    const keys = u.keys || [];
    nodes.push(h('section', { class: 'card card-flush', 'aria-labelledby': 'bykey-title' },
      h('h3', { id: 'bykey-title', class: 'card-flush-title' }, 'By key'),
      keys.length
        ? h('div', { class: 'table-scroll' },
          h('table', { class: 'table usage-keys-table' },
            h('thead', null, h('tr', null, th('Key'), th('Environment'), th('Requests', 'num'), th('Input tokens', 'num'), th('Output tokens', 'num'), th('Cost', 'num'))),
            h('tbody', null, keys.map((k) => h('tr', { dataset: { keyId: k.key_id } },
              h('td', null, h('span', { class: 'key-name' }, k.name || k.key_id), h('code', { class: 'key-hint' }, k.hint || k.key_id)),
              h('td', null, h('span', { class: 'pill' }, capitalize(k.environment))),
              h('td', { class: 'num' }, numFmt.format(k.requests)),
              h('td', { class: 'num' }, numFmt.format(k.input_tokens)),
              h('td', { class: 'num' }, numFmt.format(k.output_tokens)),
              h('td', { class: 'num' }, money(k.cost_micros, u.currency)))))))
        : h('p', { class: 'empty-inline muted' }, 'No live key was billed in this month.')));
    return nodes;
  }

  const invoiceCsvPath = (month) => `${API}/invoices/${encodeURIComponent(month)}.csv`;

  function csvLink(inv, cls) {
    return h('a', { class: cls, href: invoiceCsvPath(inv.month), download: `konnect-invoice-${inv.number}.csv` }, 'Download CSV');
  }

  function invoicesTable(months) {
    const th = (t, cls) => h('th', { scope: 'col', class: cls || null }, t);
    return h('div', { class: 'table-scroll' },
      h('table', { class: 'table invoices-table' },
        h('caption', { class: 'sr-only' }, 'Invoices, newest first'),
        h('thead', null, h('tr', null, th('Month'), th('Invoice'), th('Status'), th('Requests', 'num'), th('Tokens', 'num'), th('Total', 'num'),
          h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        h('tbody', null, months.map((m) => {
          const view = h('button', { type: 'button', class: 'btn btn-ghost btn-sm' }, 'View');
          view.addEventListener('click', () => invoiceDialog(m));
          return h('tr', { dataset: { month: m.month } },
            h('td', null, monthName(m.month)),
            h('td', null, h('code', null, m.number)),
            h('td', null, h('span', { class: `badge ${m.status === 'open' ? 'badge-status-rolled' : 'badge-status-active'}` }, m.status === 'open' ? 'Open' : 'Final')),
            h('td', { class: 'num' }, numFmt.format(m.requests)),
            h('td', { class: 'num' }, numFmt.format((Number(m.input_tokens) || 0) + (Number(m.output_tokens) || 0))),
            h('td', { class: 'num' }, money(m.total_micros, m.currency)),
            h('td', { class: 'actions-cell' }, h('div', { class: 'row-actions' }, view, csvLink(m, 'btn btn-ghost btn-sm'))));
        }))));
  }

  async function invoiceDialog(m) {
    const dlg = openDialog({ title: `Invoice ${m.number}`, wide: true });
    dlg.body.append(h('p', { class: 'loading' }, 'Loading invoice…'));
    const close = h('button', { type: 'button', class: 'btn btn-primary' }, 'Close');
    close.addEventListener('click', () => dlg.dismiss());
    let inv;
    try {
      inv = await api('GET', `/invoices/${encodeURIComponent(m.month)}`);
    } catch (e) {
      const box = alertBox('error');
      box.show('Could not load the invoice', errorText(e));
      dlg.body.replaceChildren(box, dialogFooter(close));
      return;
    }
    if (!dlg.isConnected) return;
    const cur = inv.currency;
    const row = (k, v) => [h('dt', null, k), h('dd', null, v)];
    const last = new Date(Date.parse(inv.period_end) - 86400000);
    const th = (t, cls) => h('th', { scope: 'col', class: cls || null }, t);
    const lines = inv.lines || [];
    dlg.body.replaceChildren(
      h('dl', { class: 'details' },
        row('Account', (inv.account && inv.account.email) || '—'),
        row('Period', `${utcDateFmt.format(new Date(inv.period_start))} – ${utcDateFmt.format(last)} (UTC)`),
        row('Status', inv.status === 'open' ? 'Open: the month is not over, so the amounts can still grow.' : 'Final'),
        row('Currency', String(cur).toUpperCase())),
      h('div', { class: 'table-scroll invoice-lines' },
        h('table', { class: 'table invoice-table' },
          h('thead', null, h('tr', null, th('Model'), th('Key'), th('Requests', 'num'), th('Input tokens', 'num'), th('Output tokens', 'num'), th('Amount', 'num'))),
          h('tbody', null, lines.length
            ? lines.map((l) => h('tr', null,
              h('td', null, h('code', null, l.model)),
              h('td', null, l.key_name || l.key_id, h('span', { class: 'cell-sub' }, l.key_id)),
              h('td', { class: 'num' }, numFmt.format(l.requests)),
              h('td', { class: 'num' }, numFmt.format(l.input_tokens)),
              h('td', { class: 'num' }, numFmt.format(l.output_tokens)),
              h('td', { class: 'num', title: `${l.amount_micros} micro-units` }, money(l.amount_micros, cur))))
            : h('tr', null, h('td', { colspan: '6', class: 'muted' }, 'No billed usage in this period.'))),
          h('tfoot', null, h('tr', { class: 'total-row' },
            h('th', { scope: 'row', colspan: '2' }, 'Total'),
            h('td', { class: 'num' }, numFmt.format(inv.requests)),
            h('td', { class: 'num' }, numFmt.format(inv.input_tokens)),
            h('td', { class: 'num' }, numFmt.format(inv.output_tokens)),
            h('td', { class: 'num', dataset: { total: String(inv.total_micros) } }, money(inv.total_micros, cur)))))),
      dialogFooter(csvLink(inv, 'btn btn-secondary'), close));
    close.focus();
  }

  // ---------------------------------------------------------------------------------------------
  // Settings → Members

  async function renderMembers(page, current) {
    const content = settingsLayout(page, 'members');
    focusHeading(page);
    content.append(sectionHead('Members', 'People who can sign in to this account and manage its keys.'));

    const email = h('input', { type: 'email', name: 'email', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'colleague@example.com' });
    const fEmail = field('Email address', email);
    const err = alertBox('error');
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create invite link');
    const result = h('div', { class: 'invite-result', 'aria-live': 'polite' });
    const form = h('form', { class: 'form inline-form', novalidate: true }, fEmail, submit);
    if (isOwner()) {
      content.append(
        h('section', { class: 'card', 'aria-labelledby': 'inv-title' },
          h('h3', { id: 'inv-title' }, 'Invite a member'),
          h('p', { class: 'muted' }, 'Konnect does not send email: create a link and pass it on to the person you invite yourself.'),
          err, form, result));
    } else {
      content.append(h('p', { class: 'muted' }, 'Only the account\'s owner can invite or remove people.'));
    }

    const list = h('div', { class: 'stack', 'aria-busy': 'true' }, h('p', { class: 'loading' }, 'Loading members…'));
    content.append(list);

    const refresh = async () => {
      let data;
      try {
        data = await api('GET', '/members');
      } catch (e) {
        if (!current()) return;
        const box = alertBox('error');
        box.show('Could not load members', errorText(e));
        list.removeAttribute('aria-busy');
        list.replaceChildren(box);
        return;
      }
      if (!current()) return;
      list.removeAttribute('aria-busy');
      list.replaceChildren(...membersTables(data, refresh));
    };

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.clear();
      result.replaceChildren();
      if (!validateEmail(fEmail, email)) {
        email.focus();
        return;
      }
      const invited = email.value.trim();
      setBusy(submit, true, 'Creating…');
      try {
        const answer = await api('POST', '/members/invite', { email: invited });
        setBusy(submit, false);
        email.value = '';
        result.replaceChildren(inviteLink(invited, answer));
        refresh();
      } catch (e) {
        setBusy(submit, false);
        if (e.param === 'email') fEmail.setError(e.message);
        else err.show(null, errorText(e));
      }
    });
    await refresh();
  }

  function inviteLink(invited, answer) {
    const url = location.origin + answer.invite_url;
    const input = h('input', { type: 'text', readonly: true, class: 'input-mono', id: uid('invite') });
    input.value = url;
    input.addEventListener('focus', () => input.select());
    const status = h('p', { class: 'copy-status', role: 'status' });
    const copy = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Copy');
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(input.value);
        status.textContent = 'Copied to clipboard.';
      } catch {
        input.focus();
        input.select();
        status.textContent = 'The link is selected: press Ctrl+C (⌘C on a Mac) to copy it.';
      }
    });
    const until = answer.expires ? ` It works once, until ${dateTimeFmt.format(new Date(answer.expires * 1000))}.` : '';
    return h('div', { class: 'alert alert-success' },
      h('div', { class: 'field' },
        h('label', { for: input.id }, `Invite link for ${invited}`),
        h('div', { class: 'input-row' }, input, copy)),
      status,
      h('p', { class: 'small' }, `Send this link to ${invited} yourself. Anyone with the link can join this account.${until}`));
  }

  function membersTables(data, refresh) {
    const me = state.session && state.session.user ? state.session.user.email : null;
    const owner = isOwner();
    const members = data.data || [];
    const invites = data.invites || [];
    const th = (t) => h('th', { scope: 'col' }, t);
    const removeButton = (m) => {
      const b = h('button', { type: 'button', class: 'btn btn-ghost btn-sm btn-danger-text' }, 'Remove');
      b.addEventListener('click', () => confirmDialog({
        title: `Remove ${m.email}?`,
        message: `${m.email} leaves this account at once: every session they have in it ends, and they can no longer see or use its keys. Keys they created keep working until you revoke them.`,
        confirmLabel: 'Remove member',
        danger: true,
        action: () => api('POST', `/members/${encodeURIComponent(m.user_id)}/remove`),
        onDone: () => {
          toast(`${m.email} was removed.`);
          refresh();
        },
      }));
      return b;
    };
    const cancelButton = (i) => {
      const b = h('button', { type: 'button', class: 'btn btn-ghost btn-sm btn-danger-text' }, 'Cancel invite');
      b.addEventListener('click', () => confirmDialog({
        title: `Cancel the invitation for ${i.email}?`,
        message: 'The link stops working at once.',
        confirmLabel: 'Cancel invite',
        danger: true,
        action: () => api('POST', `/invites/${encodeURIComponent(i.id)}/cancel`),
        onDone: () => {
          toast('The invitation was cancelled.');
          refresh();
        },
      }));
      return b;
    };
    const membersCard = h('section', { class: 'card card-flush', 'aria-labelledby': 'mem-title' },
      h('h3', { id: 'mem-title', class: 'card-flush-title' }, `Members (${members.length})`),
      h('div', { class: 'table-scroll' },
        h('table', { class: 'table' },
          h('thead', null, h('tr', null, th('Email'), th('Role'), th('Joined'), owner ? th('') : null)),
          h('tbody', null, members.map((m) =>
            h('tr', null,
              h('td', null, m.email, m.email === me ? h('span', { class: 'muted' }, ' (you)') : null),
              h('td', null, h('span', { class: 'pill' }, capitalize(m.role))),
              h('td', null, m.joined != null ? timeEl(m.joined, dateFmt.format(new Date(m.joined * 1000))) : '—'),
              owner ? h('td', { class: 'actions-cell' }, m.role !== 'owner' ? removeButton(m) : null) : null))))));
    const invitesCard = h('section', { class: 'card card-flush', 'aria-labelledby': 'pend-title' },
      h('h3', { id: 'pend-title', class: 'card-flush-title' }, `Pending invites (${invites.length})`),
      invites.length
        ? h('div', { class: 'table-scroll' },
          h('table', { class: 'table' },
            h('thead', null, h('tr', null, th('Email'), th('Invited'), th('Expires'), owner ? th('') : null)),
            h('tbody', null, invites.map((i) =>
              h('tr', null,
                h('td', null, i.email),
                h('td', null, i.created != null ? ago(i.created) : '—'),
                h('td', null, i.expires != null ? timeEl(i.expires, dateTimeFmt.format(new Date(i.expires * 1000))) : '—'),
                owner ? h('td', { class: 'actions-cell' }, cancelButton(i)) : null)))))
        : h('p', { class: 'empty-inline muted' }, 'No pending invites.'));
    return [membersCard, invitesCard];
  }

  // ---------------------------------------------------------------------------------------------
  // Settings → Security

  async function renderSecurity(page, current) {
    const content = settingsLayout(page, 'security');
    focusHeading(page);
    content.append(sectionHead('Security', 'Sessions and the audit log of everything done in this account.'));

    const revokeAll = h('button', { type: 'button', class: 'btn btn-danger' }, 'Sign out of all sessions');
    revokeAll.addEventListener('click', () => {
      confirmDialog({
        title: 'Sign out of all sessions?',
        message: 'This ends every session of your user on every device, this browser included. You will need to sign in again.',
        confirmLabel: 'Sign out everywhere',
        danger: true,
        action: () => api('POST', '/sessions/revoke-all'),
        onDone: () => {
          clearSession();
          pendingNotice = { kind: 'info', text: 'You have been signed out of all sessions.' };
          navigate('/signin');
        },
      });
    });
    content.append(
      h('section', { class: 'card card-row', 'aria-labelledby': 'sess-title' },
        h('div', null,
          h('h3', { id: 'sess-title' }, 'Sessions'),
          h('p', { class: 'muted' }, 'If you signed in on a device you no longer control, end every session at once.')),
        revokeAll));
    content.append(passwordCard());

    const tbody = h('tbody');
    const more = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Load more');
    const moreWrap = h('div', { class: 'load-more', hidden: true }, more);
    const err = alertBox('error');
    const empty = h('p', { class: 'empty-inline muted', hidden: true }, 'No activity yet.');
    const th = (t) => h('th', { scope: 'col' }, t);
    const table = h('table', { class: 'table audit-table' },
      h('caption', { class: 'sr-only' }, 'Audit log, newest first'),
      h('thead', null, h('tr', null, th('Time'), th('Actor'), th('Action'), th('Target'), th('IP'), th('Result'), th('Detail'))),
      tbody);
    content.append(
      h('section', { class: 'card card-flush', 'aria-labelledby': 'audit-title' },
        h('h3', { id: 'audit-title', class: 'card-flush-title' }, 'Audit log'),
        err,
        h('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-label': 'Audit log table' }, table),
        empty, moreWrap));

    let next = null;
    const load = async () => {
      err.clear();
      setBusy(more, true, 'Loading…');
      let data;
      try {
        data = await api('GET', `/audit${next != null ? `?before=${encodeURIComponent(next)}` : ''}`);
      } catch (e) {
        if (!current()) return;
        setBusy(more, false);
        err.show('Could not load the audit log', errorText(e));
        return;
      }
      if (!current()) return;
      setBusy(more, false);
      for (const a of data.data || []) {
        const ok = /^(ok|success|succeeded|allowed)$/i.test(String(a.result || ''));
        tbody.append(h('tr', null,
          h('td', { class: 'nowrap' }, a.time != null ? timeEl(a.time, dateTimeFmt.format(new Date(a.time * 1000))) : '—'),
          h('td', null, personName(a.actor) || '—'),
          h('td', null, h('code', null, a.action || '—')),
          h('td', null, a.target || '—'),
          h('td', null, a.ip ? h('code', null, a.ip) : '—'),
          h('td', null, h('span', { class: `badge ${ok ? 'badge-status-active' : 'badge-status-failure'}` }, a.result || '—')),
          h('td', { class: 'detail' }, a.detail || '')));
      }
      next = data.next != null ? data.next : null;
      moreWrap.hidden = next == null;
      empty.hidden = tbody.childElementCount > 0;
    };
    more.addEventListener('click', load);
    await load();
  }

  function passwordCard() {
    const cur = h('input', { type: 'password', name: 'current-password', autocomplete: 'current-password', required: true });
    const next = h('input', { type: 'password', name: 'new-password', autocomplete: 'new-password', required: true, minlength: '10', maxlength: '256' });
    const fCur = field('Current password', cur);
    const fNext = field('New password', next, '10 to 256 characters. Changing it signs out every other session of your user.');
    const err = alertBox('error');
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Change password');
    const form = h('form', { class: 'form', novalidate: true }, err, fCur, fNext, submit);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.clear();
      if (!(validatePassword(fCur, cur, false) & validatePassword(fNext, next, true))) return;
      setBusy(submit, true, 'Saving…');
      try {
        await api('POST', '/password', { current_password: cur.value, new_password: next.value });
        cur.value = '';
        next.value = '';
        setBusy(submit, false);
        toast('Your password was changed. Your other sessions have ended.');
      } catch (e) {
        setBusy(submit, false);
        cur.value = '';
        if (e.param === 'current_password') fCur.setError(e.message);
        else if (e.param === 'new_password') fNext.setError(e.message);
        else err.show(null, errorText(e));
      }
    });
    return h('section', { class: 'card', 'aria-labelledby': 'pw-title' },
      h('h3', { id: 'pw-title' }, 'Password'), form);
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  async function boot() {
    const linkPath = normalPath();
    if ((linkPath === '/invite' || linkPath === '/set-password') && location.hash) {
      const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
      let token = null;
      try {
        token = m && m[1] ? decodeURIComponent(m[1]) : null;
      } catch {
        token = null;
      }
      if (linkPath === '/invite') inviteToken = token;
      else passwordToken = token;
      // The token is a credential: take it out of the address bar and the history entry.
      history.replaceState(null, '', linkPath);
    }
    try {
      await loadSession();
    } catch (e) {
      $main.replaceChildren(h('div', { class: 'page' },
        h('div', { class: 'empty-page' },
          h('h1', null, 'Konnect is not reachable'),
          h('p', { class: 'muted' }, errorText(e)),
          h('button', { type: 'button', class: 'btn btn-primary', onclick: () => location.reload() }, 'Try again'))));
      return;
    }
    await render();
  }

  boot();
})();
