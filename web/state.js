// Shared mutable state, in memory only: the session and its CSRF token, and the one-shot values
// handed from one page to the next. Nothing here goes to storage, the URL or the console.

export const state = {
  session: null, // {user, account, role, csrf_token}
  csrf: null,
  renderSeq: 0,
  inviteToken: null, // read from #token=… on /invite, then removed from the URL
  passwordToken: null, // likewise on /set-password (the operator's one-time link)
  pendingNotice: null, // one-shot message for the next page (e.g. "You have signed out.")
};

export function setSession(s) {
  state.session = s;
  state.csrf = (s && s.csrf_token) || null;
}

export function clearSession() {
  state.session = null;
  state.csrf = null;
}

export function isOwner() {
  return !!(state.session && state.session.role === 'owner');
}
