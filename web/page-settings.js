// The settings layout (side menu, section heads) and the settings home page.

import { state } from './state.js';
import { h } from './dom.js';
import { capitalize } from './format.js';
import { focusHeading } from './router.js';

const sections = [
  ['api-keys', 'API Keys', '/settings/api-keys'],
  ['billing', 'Usage & Billing', '/settings/billing'],
  ['members', 'Members', '/settings/members'],
  ['security', 'Security', '/settings/security'],
];

export function settingsLayout(page, active) {
  page.append(h('div', { class: 'page-head' }, h('h1', null, 'Settings')));
  const content = h('div', { class: 'settings-content' });
  const menu = h('nav', { class: 'side-menu', 'aria-label': 'Settings' },
    h('ul', null, sections.map(([id, label, href]) =>
      h('li', null, h('a', { href, 'data-link': true, 'aria-current': id === active ? 'page' : null }, label)))));
  page.append(h('div', { class: 'settings-layout' }, menu, content));
  return content;
}

export function renderSettingsHome(page) {
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

export function sectionHead(title, description, action) {
  return h('div', { class: 'section-head' },
    h('div', null, h('h2', null, title), description ? h('p', { class: 'muted' }, description) : null),
    action || null);
}
