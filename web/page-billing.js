// Settings → Usage & Billing: a month's usage, quotas and charts, and the invoices.

import { alertBox, h, uid } from './dom.js';
import { capitalize, money, monthName, numFmt, utcDateFmt } from './format.js';
import { API, api, errorText } from './api.js';
import { destroyCharts, loadChartJs, usageChart, usageSeries } from './charts.js';
import { focusHeading } from './router.js';
import { dialogFooter, openDialog } from './dialogs.js';
import { sectionHead, settingsLayout } from './page-settings.js';

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

// A warning when this month's quota of requests or tokens is used up: live keys are refused
// (429 insufficient_quota) until it resets. null when neither is.
export function quotaBanner(u) {
  if (!u || !u.current || !u.quota) return null;
  const full = [['requests', 'live requests'], ['tokens', 'tokens']].filter(([k]) => {
    const q = u.quota[k] || {};
    return q.limit != null && Number(q.remaining) <= 0;
  });
  if (!full.length) return null;
  const what = full.map(([k, label]) => `${numFmt.format(Number(u.quota[k].limit) || 0)} ${label}`).join(' and ');
  const box = alertBox('error');
  box.show('Monthly quota used up',
    `This account has used its quota of ${what} for ${monthName(u.month)}. Live keys are refused (429 insufficient_quota) until it resets on ${utcDateFmt.format(new Date(u.quota.resets_at))} (UTC); test keys still work. Ask for a higher quota or plan to go on now.`);
  box.classList.add('quota-banner');
  return box;
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

export async function renderBilling(page, current) {
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
  const banner = quotaBanner(u);
  if (banner) nodes.unshift(banner);
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
  return h('a', { class: cls, href: invoiceCsvPath(inv.month), download: `konnect-invoice-${inv.number || `${inv.month}-draft`}.csv` }, 'Download CSV');
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
          h('td', null, m.number ? h('code', null, m.number) : h('span', { class: 'muted' }, m.status === 'open' ? 'Draft' : '—')),
          h('td', null, h('span', { class: `badge ${m.status === 'open' ? 'badge-status-rolled' : 'badge-status-active'}` }, m.status === 'open' ? 'Open' : 'Final')),
          h('td', { class: 'num' }, numFmt.format(m.requests)),
          h('td', { class: 'num' }, numFmt.format((Number(m.input_tokens) || 0) + (Number(m.output_tokens) || 0))),
          h('td', { class: 'num' }, money(m.total_micros, m.currency)),
          h('td', { class: 'actions-cell' }, h('div', { class: 'row-actions' }, view, csvLink(m, 'btn btn-ghost btn-sm'))));
      }))));
}

async function invoiceDialog(m) {
  const dlg = openDialog({ title: m.number ? `Invoice ${m.number}` : `Draft invoice, ${monthName(m.month)}`, wide: true, className: 'dialog-invoice' });
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
      inv.seller ? row('From', h('span', { class: 'seller' },
        inv.seller.name,
        ...String(inv.seller.address || '').split('\n').filter(Boolean).map((l) => [h('br'), l]),
        inv.seller.email ? [h('br'), inv.seller.email] : null,
        inv.seller.tax_id ? [h('br'), `Tax id ${inv.seller.tax_id}`] : null)) : null,
      row('Account', (inv.account && inv.account.email) || '—'),
      row('Period', `${utcDateFmt.format(new Date(inv.period_start))} – ${utcDateFmt.format(last)} (UTC)`),
      row('Status', inv.status === 'open' ? 'Open: the month is not over, so the amounts can still grow.' : 'Final'),
      inv.plan ? row('Plan', inv.plan.name) : null,
      row('Currency', String(cur).toUpperCase())),
    h('div', { class: 'table-scroll invoice-lines' },
      h('table', { class: 'table invoice-table' },
        h('thead', null, h('tr', null, th('Model'), th('Key'), th('Requests', 'num'), th('Input tokens', 'num'), th('Output tokens', 'num'), th('Amount', 'num'))),
        h('tbody', null, lines.length
          ? lines.map((l) => h('tr', null,
            h('td', null, h('code', null, l.model), l.unit_prices
              ? h('span', { class: 'cell-sub unit-prices' },
                `${money(l.unit_prices.per_request_micros, cur)} per request · ${money(l.unit_prices.per_million_input_tokens_micros, cur)} per 1M input · ${money(l.unit_prices.per_million_output_tokens_micros, cur)} per 1M output tokens`)
              : null),
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
