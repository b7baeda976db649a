// Settings → Security: signing out of every session, changing the password, the audit log.

import { clearSession, state } from './state.js';
import { alertBox, field, h, setBusy, toast } from './dom.js';
import { dateTimeFmt, personName, timeEl } from './format.js';
import { api, errorText } from './api.js';
import { focusHeading, navigate } from './router.js';
import { confirmDialog } from './dialogs.js';
import { validatePassword } from './page-auth.js';
import { sectionHead, settingsLayout } from './page-settings.js';

export async function renderSecurity(page, current) {
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
        state.pendingNotice = { kind: 'info', text: 'You have been signed out of all sessions.' };
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
