// Settings → Security: two-factor sign-in, signing out of every session, changing the password,
// the audit log.

import { clearSession, isOwner, setSession, state } from './state.js';
import { alertBox, field, h, setBusy, toast } from './dom.js';
import { dateTimeFmt, personName, timeEl } from './format.js';
import { api, errorText, loadSession } from './api.js';
import { focusHeading, navigate } from './router.js';
import { confirmDialog, dialogFooter, openDialog } from './dialogs.js';
import { validatePassword } from './page-auth.js';
import { sectionHead, settingsLayout } from './page-settings.js';

export async function renderSecurity(page, current) {
  const content = settingsLayout(page, 'security');
  focusHeading(page);
  content.append(sectionHead('Security', 'Two-factor sign-in, sessions and the audit log of everything done in this account.'));
  const tf = (state.session && state.session.two_factor) || {};
  if (tf.required && !tf.enabled) {
    const must = alertBox('warning');
    must.show('Two-factor sign-in is required', "This account's owner requires every member to sign in with a code from an authenticator app. Set it up below to use the rest of the dashboard.");
    content.append(must);
  }
  content.append(twoFactorCard(page, current));
  if (isOwner()) content.append(requireCard());

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

// The password (and, for some calls, a code) a two-factor change asks for again.
function reauthFields(withCode) {
  const pw = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const code = h('input', { type: 'text', name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', spellcheck: 'false', maxlength: '12' });
  const fPw = field('Password', pw);
  const fCode = withCode ? field('Code from your app (or a recovery code)', code) : null;
  return { pw, code, fPw, fCode };
}

function codesList(codes) {
  return h('ol', { class: 'recovery-codes', 'aria-label': 'Recovery codes' }, codes.map((c) => h('li', null, h('code', null, c))));
}

// Shows recovery codes once; closing the dialog forgets them.
function showCodes(dlg, codes, intro) {
  dlg.setTitle('Save your recovery codes');
  const status = h('p', { class: 'copy-status', role: 'status', 'aria-live': 'polite' });
  const copy = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(codes.join('\n'));
      status.textContent = 'Copied to clipboard.';
    } catch {
      status.textContent = 'Could not copy automatically: select the codes and copy them.';
    }
  });
  const done = h('button', { type: 'button', class: 'btn btn-primary' }, "I've saved them");
  done.addEventListener('click', () => dlg.dismiss());
  dlg.body.replaceChildren(
    h('p', null, intro),
    h('p', { class: 'muted' }, 'Each code works once, in place of a code from your app. They are shown only this once.'),
    codesList(codes), status, dialogFooter(copy, done));
  done.focus();
}

function twoFactorCard(page, current) {
  const tf = (state.session && state.session.two_factor) || {};
  const status = tf.enabled
    ? `On. ${tf.recovery_codes_left} recovery code${tf.recovery_codes_left === 1 ? '' : 's'} left.`
    : 'Off. Signing in needs only your password.';
  const actions = h('div', { class: 'btn-row' });
  const refresh = async () => {
    try {
      await loadSession();
    } catch {
      // the page shows what it had
    }
    if (current()) renderSecurity(page.replaceChildren() || page, current);
  };
  if (!tf.enabled) {
    const setup = h('button', { type: 'button', class: 'btn btn-primary' }, 'Set up two-factor sign-in');
    setup.addEventListener('click', () => setupDialog(refresh));
    actions.append(setup);
  } else {
    const regen = h('button', { type: 'button', class: 'btn btn-secondary' }, 'New recovery codes');
    regen.addEventListener('click', () => reauthDialog({
      title: 'New recovery codes',
      intro: 'Your old recovery codes will stop working.',
      label: 'Make new codes',
      call: (body) => api('POST', '/two-factor/recovery-codes', body),
      done: (dlg, answer) => showCodes(dlg, answer.recovery_codes, 'Your new recovery codes:'),
      after: refresh,
    }));
    actions.append(regen);
    if (!tf.required) {
      const off = h('button', { type: 'button', class: 'btn btn-danger' }, 'Turn off');
      off.addEventListener('click', () => reauthDialog({
        title: 'Turn off two-factor sign-in?',
        intro: 'Signing in will need only your password again.',
        label: 'Turn off',
        danger: true,
        call: (body) => api('POST', '/two-factor/disable', body),
        done: (dlg) => { dlg.dismiss(); toast('Two-factor sign-in is off.'); },
        after: refresh,
      }));
      actions.append(off);
    }
  }
  return h('section', { class: 'card card-row', 'aria-labelledby': 'tf-title' },
    h('div', null,
      h('h3', { id: 'tf-title' }, 'Two-factor sign-in'),
      h('p', { class: 'muted' }, 'Sign in with your password and a code from an authenticator app (Google Authenticator, 1Password, Authy, …).'),
      h('p', { class: 'tf-status' }, status)),
    actions);
}

// Setting up asks for the password alone, then shows the seed in the same dialog.
function setupDialog(after) {
  reauthDialog({
    title: 'Set up two-factor sign-in',
    intro: 'Enter your password to begin.',
    label: 'Continue',
    withCode: false,
    call: (body) => api('POST', '/two-factor/setup', { password: body.password }),
    done: confirmStep,
    after,
  });
}

function confirmStep(dlg, answer) {
  const secret = h('input', { type: 'text', readonly: true, class: 'input-mono', spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Setup key' });
  secret.value = answer.secret.replace(/(.{4})/g, '$1 ').trim();
  const link = h('a', { href: answer.otpauth_url, class: 'btn btn-secondary' }, 'Open in an authenticator app');
  const code = h('input', { type: 'text', name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', spellcheck: 'false', maxlength: '7', required: true });
  const fCode = field('The 6-digit code your app shows', code);
  const err = alertBox('error');
  const on = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Turn on');
  const form = h('form', { class: 'form', novalidate: true },
    h('p', null, 'In your authenticator app, add an account with this setup key (time-based), or open the link on this device:'),
    secret, link, err, fCode, dialogFooter(on));
  dlg.body.replaceChildren(form);
  code.focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.clear();
    if (!/^\s*\d{3}\s?\d{3}\s*$/.test(code.value)) return fCode.setError('Enter the 6 digits your app shows.');
    setBusy(on, true, 'Checking…');
    try {
      const done = await api('POST', '/two-factor/enable', { code: code.value });
      secret.value = '';
      showCodes(dlg, done.recovery_codes, 'Two-factor sign-in is on. Keep these recovery codes somewhere safe, apart from your phone:');
    } catch (e) {
      setBusy(on, false);
      if (e.param === 'code') fCode.setError(e.message);
      else err.show(null, errorText(e));
    }
  });
}

// A dialog that asks for the password (and, withCode, a code) again, then calls call with them;
// done gets the dialog and the answer.
function reauthDialog({ title, intro, label, danger, withCode = true, call, done, after }) {
  const dlg = openDialog({ title, onClose: after });
  const { pw, code, fPw, fCode } = reauthFields(withCode);
  const err = alertBox('error');
  const go = h('button', { type: 'submit', class: `btn ${danger ? 'btn-danger' : 'btn-primary'}` }, label);
  const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');
  cancel.addEventListener('click', () => dlg.dismiss());
  const form = h('form', { class: 'form', novalidate: true }, h('p', null, intro), err, fPw, fCode, dialogFooter(cancel, go));
  dlg.body.append(form);
  pw.focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.clear();
    if (!validatePassword(fPw, pw, false)) return;
    setBusy(go, true, 'Checking…');
    try {
      const answer = await call({ password: pw.value, code: code.value });
      pw.value = '';
      code.value = '';
      done(dlg, answer);
    } catch (e) {
      setBusy(go, false);
      pw.value = '';
      if (e.param === 'password') fPw.setError(e.message);
      else if (e.param === 'code') fCode.setError(e.message);
      else err.show(null, errorText(e));
    }
  });
}

// Owners: require two-factor sign-in of every member.
function requireCard() {
  const tf = (state.session && state.session.two_factor) || {};
  const box = h('input', { type: 'checkbox', id: 'tf-require', checked: !!tf.required, disabled: !tf.enabled });
  const err = alertBox('error');
  box.addEventListener('change', async () => {
    err.clear();
    if (!box.checked) {
      // Lifting it asks for the password and a code again.
      box.checked = true;
      reauthDialog({
        title: 'Stop requiring two-factor sign-in?',
        intro: 'Members will be able to sign in with their password alone again.',
        label: 'Stop requiring it',
        danger: true,
        call: (body) => api('POST', '/account/two-factor', { required: false, ...body }),
        done: (dlg) => {
          dlg.dismiss();
          state.session.two_factor.required = false;
          box.checked = false;
          toast('Two-factor sign-in is now optional.');
        },
      });
      return;
    }
    box.disabled = true;
    try {
      const answer = await api('POST', '/account/two-factor', { required: box.checked });
      state.session.two_factor.required = answer.required;
      setSession(state.session);
      toast(answer.required ? 'Every member must now sign in with a code.' : 'Two-factor sign-in is now optional.');
    } catch (e) {
      box.checked = !box.checked;
      err.show(null, errorText(e));
    }
    box.disabled = false;
  });
  return h('section', { class: 'card', 'aria-labelledby': 'tf-req-title' },
    h('h3', { id: 'tf-req-title' }, 'Require two-factor sign-in'),
    err,
    h('div', { class: 'check-row' }, box,
      h('label', { for: 'tf-require' }, 'Every member of this account must sign in with a code from an authenticator app')),
    h('p', { class: 'muted' }, tf.enabled
      ? 'Members without it can then only set it up until they do.'
      : 'Turn on two-factor sign-in for yourself first.'));
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
