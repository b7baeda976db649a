// Settings → Members: the account's members and pending invites, inviting and removing people.

import { isOwner, state } from './state.js';
import { alertBox, field, h, setBusy, toast, uid } from './dom.js';
import { ago, capitalize, dateFmt, dateTimeFmt, timeEl } from './format.js';
import { api, errorText } from './api.js';
import { focusHeading } from './router.js';
import { confirmDialog } from './dialogs.js';
import { validateEmail } from './page-auth.js';
import { sectionHead, settingsLayout } from './page-settings.js';

export async function renderMembers(page, current) {
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
