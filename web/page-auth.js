// Sign in, sign up, invitations, the set-password link and the not-found page: the pages for
// users who are not (yet) signed in, and their email and password checks.

import { clearSession, state } from './state.js';
import { alertBox, field, h, setBusy, toast } from './dom.js';
import { span } from './format.js';
import { adoptSignin, api, errorText } from './api.js';
import { navigate, nextPath, render } from './router.js';

function authCard(page, title, subtitle) {
  const card = h('section', { class: 'auth-card', 'aria-labelledby': 'auth-title' });
  page.append(
    h('div', { class: 'auth-wrap' },
      h('div', { class: 'auth-brand' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'K'), 'Konnect'),
      card));
  card.append(h('h1', { id: 'auth-title' }, title));
  if (subtitle) card.append(h('p', { class: 'muted' }, subtitle));
  if (state.pendingNotice) {
    const n = alertBox(state.pendingNotice.kind);
    n.show(null, state.pendingNotice.text);
    card.append(n);
    state.pendingNotice = null;
  }
  return card;
}

function emailInput(autocomplete) {
  return h('input', { type: 'email', name: 'email', autocomplete, required: true, spellcheck: 'false', autocapitalize: 'off' });
}

export function validateEmail(f, input) {
  const v = input.value.trim();
  if (!v) return f.setError('Enter your email address.'), false;
  if (!/^[^\s@]+@[^\s@]+$/.test(v)) return f.setError('Enter a valid email address, like name@example.com.'), false;
  f.setError('');
  return true;
}

export function validatePassword(f, input, creating) {
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

export function renderSignin(page) {
  const card = authCard(page, 'Sign in to Konnect', 'Manage your API keys, members and security settings.');
  const email = emailInput('username');
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const fEmail = field('Email', email);
  const fPassword = field('Password', password);
  // The second step, for users with two-factor sign-in: shown when the server asks for it.
  const code = h('input', { type: 'text', name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', spellcheck: 'false', maxlength: '12' });
  const fCode = field('Authentication code', code, 'The 6-digit code from your authenticator app, or one of your recovery codes.');
  fCode.hidden = true;
  const err = alertBox('error');
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Sign in');
  const form = h('form', { class: 'form', novalidate: true }, err, fEmail, fPassword, fCode, submit);
  card.append(form, h('p', { class: 'auth-switch' }, 'New to Konnect? ', h('a', { href: '/signup', 'data-link': true }, 'Create an account')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.clear();
    fCode.setError('');
    const ok = validateEmail(fEmail, email) & validatePassword(fPassword, password, false);
    if (!ok) return;
    setBusy(submit, true, 'Signing in…');
    const body = { email: email.value.trim(), password: password.value };
    if (!fCode.hidden && code.value.trim()) body.code = code.value.trim();
    try {
      const answer = await api('POST', '/signin', body);
      password.value = '';
      code.value = '';
      await adoptSignin(answer);
      navigate(nextPath() || '/');
    } catch (e) {
      setBusy(submit, false);
      code.value = '';
      if (e.code === 'two_factor_code_required' || e.code === 'invalid_two_factor_code') {
        // The password was right: keep it, and ask for the code.
        fCode.hidden = false;
        if (e.code === 'invalid_two_factor_code') fCode.setError(e.message);
        code.focus();
        return;
      }
      password.value = '';
      showAuthError(err, e);
      password.focus();
    }
  });
  email.focus();
}

export function renderSignup(page) {
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
export function renderInvite(page) {
  const card = authCard(page, 'Join a Konnect account', 'You have been invited to a team on Konnect.');
  if (!state.inviteToken) {
    const box = alertBox('error');
    box.show('This invite link is incomplete', 'Open the full link you were sent, or ask the person who invited you for a new one.');
    card.append(box, h('p', { class: 'auth-switch' }, h('a', { href: '/signin', 'data-link': true }, 'Go to sign in')));
    return;
  }
  const err = alertBox('error');
  const joined = async (answer) => {
    state.inviteToken = null;
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
        await joined(await api('POST', '/invites/accept', { token: state.inviteToken }));
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
      const answer = await api('POST', '/invites/accept', { token: state.inviteToken, password: password.value });
      password.value = '';
      await joined(answer);
    } catch (e) {
      password.value = '';
      failed(e, submit, fPassword);
    }
  });
  password.focus();
}

export function renderSetPassword(page) {
  const card = authCard(page, 'Choose your password', 'Your Konnect operator made this link for you. It works once.');
  if (!state.passwordToken) {
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
      const answer = await api('POST', '/password/set', { token: state.passwordToken, password: password.value });
      password.value = '';
      state.passwordToken = null;
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

export function renderNotFound(page) {
  page.append(
    h('div', { class: 'empty-page' },
      h('h1', null, 'Page not found'),
      h('p', { class: 'muted' }, 'There is nothing at this address.'),
      h('a', { class: 'btn btn-primary', href: state.session ? '/' : '/signin', 'data-link': true }, state.session ? 'Go to the dashboard' : 'Sign in')));
}
