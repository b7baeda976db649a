// Dialogs: modal <dialog>s that clean up when they close, the one-time view of a new secret key,
// and confirmations.

import { alertBox, h, setBusy, uid } from './dom.js';
import { errorText } from './api.js';

// Opens a modal <dialog>; it is removed from the page when it closes. onClose runs once.
export function openDialog({ title, labelledBy, wide, className, onClose }) {
  const titleId = labelledBy || uid('dlg-title');
  const body = h('div', { class: 'dialog-body' });
  const heading = h('h2', { id: titleId, class: 'dialog-title' }, title);
  const dlg = h('dialog', { class: `dialog${wide ? ' dialog-wide' : ''}${className ? ` ${className}` : ''}`, 'aria-labelledby': titleId }, heading, body);
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

export function dialogFooter(...buttons) {
  return h('div', { class: 'dialog-footer' }, ...buttons);
}

// Shows a new secret in dialog dlg: once, in a read-only field with a Copy button. Whatever
// closes the dialog (Done, Escape, navigation) empties and removes the field, and the secret
// is no longer referenced anywhere.
export function showSecret(dlg, holder, { title, intro }) {
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
    ev.preventDefault();
    if (!warned && !status.textContent) {
      warned = true;
      status.textContent = 'Copy your key first, then press Done. Press Escape again to close without copying.';
      return;
    }
    // The closing Escape: the secret goes at once, not a task later with the native close event.
    dlg.dismiss();
  });
  dlg.cleanupSecret = () => {
    input.value = '';
    input.remove();
    secretBlock.remove();
    holder.secret = null;
  };
  copyBtn.focus();
}

export function confirmDialog({ title, message, confirmLabel, danger, action, onDone }) {
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
