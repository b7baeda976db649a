// Settings → API Keys: the list of keys, and creating, rolling, renaming and revoking them.

import { isOwner } from './state.js';
import { alertBox, field, h, propagationWarning, setBusy, toast, uid } from './dom.js';
import { ago, capitalize, dateFmt, dateTimeFmt, money, nowSec, numFmt, personName, span, timeEl } from './format.js';
import { api, errorText } from './api.js';
import { focusHeading } from './router.js';
import { confirmDialog, dialogFooter, openDialog, showSecret } from './dialogs.js';
import { sectionHead, settingsLayout } from './page-settings.js';

const ENVIRONMENTS = ['development', 'staging', 'production'];

function keyPath(k, suffix = '') {
  return `/keys/${encodeURIComponent(k.id)}${suffix}`;
}

export async function renderApiKeys(page, current) {
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

const MODE_LABELS = { live: 'Live', test: 'Test', admin: 'Admin' };

function modeBadge(mode) {
  return h('span', { class: `badge badge-${MODE_LABELS[mode] ? mode : 'test'}` }, MODE_LABELS[mode] || capitalize(mode));
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
      th('Name'), th('Key'), th('Created'), th('Last used'), th('Expires'), th('Status'),
      th('This month', 'num'),
      h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
    h('tbody', null, keys.map((k) => keyRow(k, refresh, currency))));
  return h('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-label': 'API keys table' }, table);
}

// This month's billed usage of a key: live keys only, since test keys are never billed.
function monthCell(k, currency) {
  if (k.mode !== 'live') {
    return h('td', { class: 'num muted', title: k.mode === 'admin' ? 'Admin keys call the management API, which is not billed' : 'Test keys are not billed' }, '—');
  }
  const u = k.usage || {};
  return h('td', { class: 'num', dataset: { usage: 'month' } },
    money(u.cost_micros, currency),
    h('span', { class: 'cell-sub' }, `${numFmt.format(Number(u.requests) || 0)} requests`),
    h('span', { class: 'cell-sub' }, `${numFmt.format(Number(u.tokens) || 0)} tokens`));
}

function keyRow(k, refresh, currency) {
  const inactive = k.status === 'revoked' || k.status === 'expired';
  const nameId = uid('kname');
  const allow = Array.isArray(k.ip_allowlist) ? k.ip_allowlist : [];
  const by = personName(k.created_by);
  const actions = h('div', { class: 'row-actions' });
  if (!inactive) {
    const edit = h('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'aria-describedby': nameId }, 'Edit');
    edit.addEventListener('click', () => editDialog(k, refresh));
    actions.append(edit);
    if (k.status === 'active' && (k.mode === 'test' || isOwner())) {
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
      allow.length ? h('span', { class: 'cell-sub', title: allow.join(', ') }, `Allowed: ${allow.length === 1 ? allow[0] : `${allow.length} ranges`}`) : null,
      Array.isArray(k.models) && k.models.length ? h('span', { class: 'cell-sub', title: 'The only models this key may use' }, `Models: ${k.models.join(', ')}`) : null,
      k.requests_per_minute ? h('span', { class: 'cell-sub', title: "This key's own rate limit" }, `${numFmt.format(k.requests_per_minute)} requests/min`) : null,
      k.monthly_requests ? h('span', { class: 'cell-sub', title: "This key's own monthly quota, counting the keys it replaced" }, `${numFmt.format(k.monthly_requests)} requests/month`) : null),
    h('td', null,
      h('code', { class: 'key-hint' }, k.hint),
      h('span', { class: 'key-tags' }, modeBadge(k.mode), h('span', { class: 'pill', title: 'Environment' }, capitalize(k.environment)))),
    h('td', null,
      k.created != null ? timeEl(k.created, dateFmt.format(new Date(k.created * 1000))) : '—',
      by ? h('span', { class: 'cell-sub cell-by', title: `Created by ${by}` }, `by ${by}`) : null),
    // "Requests" means billed live requests everywhere (Usage & Billing, This month); what a key
    // was used for in all, test keys and refused-later calls included, is its calls.
    // Refused calls (429: a limit or a quota) are their own figure.
    h('td', null, ago(k.last_used),
      h('span', { class: 'cell-sub', title: 'Calls that passed the key\'s rate limits, all time, billed or not' },
        `${numFmt.format(Number(k.requests) || 0)} call${Number(k.requests) === 1 ? '' : 's'}`),
      Number(k.refused) ? h('span', { class: 'cell-sub cell-refused', dataset: { refused: String(k.refused) }, title: 'Calls refused by a limit or a quota (429), all time, never billed' },
        `${numFmt.format(Number(k.refused))} refused`) : null),
    h('td', null, expiresCell(k)),
    h('td', null, statusBadge(k.status),
      k.status === 'revoked' && k.revoked != null ? h('span', { class: 'cell-sub' }, timeEl(k.revoked, dateFmt.format(new Date(k.revoked * 1000)))) : null),
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
      : 'Live API keys for production use. Only the account\'s owner can create them.', false),
    radio('admin', 'Admin', 'sk_admin_*', isOwner()
      ? 'Admin API keys manage this account from your own systems: keys, usage, invoices, the audit log and members. They cannot call /v1/chat.'
      : 'Admin API keys manage this account from your own systems. Only the account\'s owner can create them.', false));
  if (!isOwner()) {
    typeSet.querySelector('input[value="live"]').disabled = true;
    typeSet.querySelector('input[value="admin"]').disabled = true;
  }

  const env = h('select', { name: 'environment' }, ENVIRONMENTS.map((e) => h('option', { value: e }, capitalize(e))));
  env.value = 'development';
  let envTouched = false;
  env.addEventListener('change', () => {
    envTouched = true;
  });
  typeSet.addEventListener('change', () => {
    if (!envTouched) env.value = mode() === 'test' ? 'development' : 'production';
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

  // A restricted key: some of the plan's models, its own rate below the account's.
  const models = h('input', { type: 'text', name: 'models', spellcheck: 'false', autocomplete: 'off', placeholder: 'small, large' });
  const fModels = field('Models (optional)', models, 'Only these models of your plan, separated by commas. Leave empty for all of them.');
  const rpm = h('input', { type: 'number', name: 'requests_per_minute', min: '1', max: '1000000', inputmode: 'numeric' });
  const fRpm = field('Requests per minute (optional)', rpm, "This key's own limit, below your account's. Leave empty for none.");
  const monthly = h('input', { type: 'number', name: 'monthly_requests', min: '1', inputmode: 'numeric' });
  const fMonthly = field('Requests per month (optional)', monthly, "Live keys: this key's own monthly quota, at most your account's. Leave empty for none.");
  fMonthly.hidden = true;
  typeSet.addEventListener('change', () => {
    fMonthly.hidden = mode() !== 'live';
  });

  const err = alertBox('error');
  const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
  cancel.addEventListener('click', () => dlg.dismiss());
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create');
  const form = h('form', { class: 'form', novalidate: true },
    err, fName, typeSet, h('div', { class: 'field-row' }, fEnv, fExpiry), fDate, fAllow,
    h('div', { class: 'field-row' }, fModels, fRpm), fMonthly, dialogFooter(cancel, submit));
  dlg.body.append(form);
  name.focus();

  const fields = { name: fName, environment: fEnv, mode: typeSet, expires_in_days: fExpiry, expires_at: fDate, ip_allowlist: fAllow, models: fModels, requests_per_minute: fRpm, monthly_requests: fMonthly };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.clear();
    for (const f of [fName, fDate, fAllow, fModels, fRpm, fMonthly]) f.setError('');
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
    const names = models.value.split(/[\s,]+/).filter(Boolean);
    if (names.length) body.models = names;
    if (rpm.value.trim()) {
      const n = Number(rpm.value);
      if (!Number.isInteger(n) || n < 1 || n > 1000000) {
        fRpm.setError('A whole number from 1 to 1,000,000, or empty.');
        ok = false;
      } else body.requests_per_minute = n;
    }
    if (mode() === 'live' && monthly.value.trim()) {
      const n = Number(monthly.value);
      if (!Number.isInteger(n) || n < 1) {
        fMonthly.setError('A whole number of requests, or empty.');
        ok = false;
      } else body.monthly_requests = n;
    }
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
        intro: `“${k.name || body.name}” — ${(MODE_LABELS[k.mode] || 'test').toLowerCase()} key for ${k.environment || body.environment}.` +
          (propagationWarning(answer) ? ` ${propagationWarning(answer)}` : ''),
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
      if (propagationWarning(answer)) intro += ` ${propagationWarning(answer)}`;
      showSecret(dlg, holder, { title: 'Save your new secret key', intro });
      holder.secret = null;
    } catch (e) {
      setBusy(submit, false);
      err.show(null, errorText(e));
    }
  });
}

// Edit a key: its name, and where it may be used from, its models, its own rate and (live keys)
// its own monthly quota (the owner's to set on live keys; any member's on test keys). Only what
// changed is sent.
function editDialog(k, refresh) {
  let dlg = null;
  dlg = openDialog({ title: 'Edit key' });
  const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '128', autocomplete: 'off' });
  name.value = k.name;
  const fName = field('Name', name);
  const restrictable = k.mode !== 'admin' && (k.mode === 'test' || isOwner());
  const oldAllow = (Array.isArray(k.ip_allowlist) ? k.ip_allowlist : []).join('\n');
  const oldModels = (Array.isArray(k.models) ? k.models : []).join(', ');
  const oldRpm = k.requests_per_minute ? String(k.requests_per_minute) : '';
  const allow = h('textarea', { name: 'ip_allowlist', rows: '3', spellcheck: 'false', placeholder: '203.0.113.7\n198.51.100.0/24' });
  allow.value = oldAllow;
  const fAllow = field('IP allowlist', allow, 'Addresses or CIDR ranges, separated by commas or new lines. Empty: any address.');
  const models = h('input', { type: 'text', name: 'models', spellcheck: 'false', autocomplete: 'off', placeholder: 'small, large' });
  models.value = oldModels;
  const fModels = field('Models', models, 'Only these models of your plan. Empty: all of them.');
  const rpm = h('input', { type: 'number', name: 'requests_per_minute', min: '1', max: '1000000', inputmode: 'numeric' });
  rpm.value = oldRpm;
  const fRpm = field('Requests per minute', rpm, "This key's own limit, below your account's. Empty: none.");
  const oldMonthly = k.monthly_requests ? String(k.monthly_requests) : '';
  const monthly = h('input', { type: 'number', name: 'monthly_requests', min: '1', inputmode: 'numeric' });
  monthly.value = oldMonthly;
  const fMonthly = field('Requests per month', monthly, "This key's own monthly quota, at most your account's; requests already made this month count. Empty: none.");
  const fields = { name: fName, ip_allowlist: fAllow, models: fModels, requests_per_minute: fRpm, monthly_requests: fMonthly };
  const err = alertBox('error');
  const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
  cancel.addEventListener('click', () => dlg.dismiss());
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save');
  const form = h('form', { class: 'form', novalidate: true },
    h('p', { class: 'muted' }, 'Key ', h('code', null, k.hint)), err, fName,
    restrictable ? [fAllow, h('div', { class: 'field-row' }, fModels, fRpm), k.mode === 'live' ? fMonthly : null] : null,
    dialogFooter(cancel, submit));
  dlg.body.append(form);
  name.focus();
  name.select();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.clear();
    for (const f of Object.values(fields)) f.setError('');
    const body = {};
    const value = name.value.trim();
    if (!value) {
      fName.setError('Give your key a name.');
      name.focus();
      return;
    }
    if (value !== k.name) body.name = value;
    if (restrictable) {
      const ranges = allow.value.split(/[\s,]+/).filter(Boolean);
      if (ranges.join('\n') !== oldAllow) body.ip_allowlist = ranges;
      const names = models.value.split(/[\s,]+/).filter(Boolean);
      if (names.join(', ') !== oldModels) body.models = names.length ? names : null;
      if (rpm.value.trim() !== oldRpm) {
        const n = Number(rpm.value);
        if (rpm.value.trim() && (!Number.isInteger(n) || n < 1 || n > 1000000)) {
          fRpm.setError('A whole number from 1 to 1,000,000, or empty.');
          rpm.focus();
          return;
        }
        body.requests_per_minute = rpm.value.trim() ? n : null;
      }
      if (k.mode === 'live' && monthly.value.trim() !== oldMonthly) {
        const n = Number(monthly.value);
        if (monthly.value.trim() && (!Number.isInteger(n) || n < 1)) {
          fMonthly.setError('A whole number of requests, or empty.');
          monthly.focus();
          return;
        }
        body.monthly_requests = monthly.value.trim() ? n : null;
      }
    }
    if (!Object.keys(body).length) {
      dlg.dismiss();
      return;
    }
    setBusy(submit, true, 'Saving…');
    try {
      await api('PATCH', keyPath(k), body);
      dlg.dismiss();
      toast('Key saved.');
      refresh();
    } catch (e) {
      setBusy(submit, false);
      const f = e.param && fields[e.param];
      if (f) {
        f.setError(e.message);
        (f.querySelector('input, textarea') || submit).focus();
      } else err.show(null, errorText(e));
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
    onDone: (answer) => {
      const late = propagationWarning(answer);
      if (late) toast(`Key “${k.name}” revoked. ${late}`, 15000);
      else toast(`Key “${k.name}” revoked.`);
      refresh();
    },
  });
}
