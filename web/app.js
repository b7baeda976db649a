// Konnect dashboard: a small single-page app in plain JavaScript, talking to /dashboard/api/
// (docs/dashboard-api.md). No framework, no build step.
//
// Rules every module of this app keeps:
// - The page runs under a strict Content-Security-Policy: no inline scripts, handlers or styles.
//   Every element is built with document.createElement; user data is only ever set as text.
// - A secret key lives only in the create/roll dialog while it is open. Closing that dialog, by
//   any means, empties and removes the field and drops every reference to the secret. Nothing
//   secret goes to localStorage, sessionStorage, the URL or the console.
// - The CSRF token is kept in memory only and sent as X-CSRF-Token on every POST, PATCH and
//   DELETE made while signed in.
//
// This is the entry module (loaded by index.html as <script type="module">): it fills in the
// router's table and starts the app. Every other module, all at the top level of web/ and served
// as /assets/<name>, has one job, named in its first comment. They import one another without a
// cycle, in layers: state, dom → format, api → charts, router → dialogs, page-settings, page-auth
// → the other pages → this file. The router gets its pages from here (setRoutes), and the API
// client gets navigate() from here (setNavigate).

import { state } from './state.js';
import { $main, h } from './dom.js';
import { errorText, loadSession, setNavigate } from './api.js';
import { navigate, normalPath, render, setRoutes } from './router.js';
import { renderInvite, renderNotFound, renderSetPassword, renderSignin, renderSignup } from './page-auth.js';
import { renderSettingsHome } from './page-settings.js';
import { renderDashboard } from './page-dashboard.js';
import { renderApiKeys } from './page-keys.js';
import { renderBilling } from './page-billing.js';
import { renderMembers } from './page-members.js';
import { renderSecurity } from './page-security.js';

setNavigate(navigate);

setRoutes({
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
}, renderNotFound);

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
    if (linkPath === '/invite') state.inviteToken = token;
    else state.passwordToken = token;
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
