// The dashboard overview: key counts and the quick start.

import { state } from './state.js';
import { alertBox, h } from './dom.js';
import { numFmt } from './format.js';
import { api, errorText } from './api.js';
import { focusHeading } from './router.js';
import { quotaBanner } from './page-billing.js';

export async function renderDashboard(page, current) {
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
  // Requests as Usage & Billing counts them: billed live requests this month.
  const billed = keys.reduce((n, k) => n + (k.mode === 'live' ? Number(k.usage && k.usage.requests) || 0 : 0), 0);
  // Refused requests (429: a limit or a quota) are never among them: said apart.
  const refused = keys.reduce((n, k) => n + (Number(k.refused) || 0), 0);
  const stat = (label, value, note, extra) =>
    h('div', { class: 'stat', dataset: { stat: label.toLowerCase().replace(/\s+/g, '-') } }, h('p', { class: 'stat-label' }, label), h('p', { class: 'stat-value' }, value),
      note ? h('p', { class: 'stat-note' }, note) : null, extra ? h('p', { class: 'stat-note', dataset: { refused: String(refused) } }, extra) : null);
  stats.removeAttribute('aria-busy');
  stats.append(
    stat('Active keys', numFmt.format(working.length), `${numFmt.format(keys.length)} in all`),
    stat('Live keys', numFmt.format(working.filter((k) => k.mode === 'live').length), 'Production, billed'),
    stat('Test keys', numFmt.format(working.filter((k) => k.mode === 'test').length), 'Development, mock responses'),
    stat('Requests this month', numFmt.format(billed), 'Billed live requests, as in Usage & Billing',
      refused ? `${numFmt.format(refused)} refused by a limit or quota (all time, never billed)` : null));
  // A quota used up is said before anything else.
  try {
    const banner = quotaBanner(await api('GET', '/usage'));
    if (banner && current()) stats.before(banner);
  } catch {
    // the figures above stand on their own
  }
}
