// The dashboard API client (/dashboard/api/, docs/dashboard-api.md): requests, with the CSRF
// token on every POST, PATCH and DELETE; its errors; and reading the session.

import { clearSession, setSession, state } from './state.js';

export const API = '/dashboard/api';

// The router's navigate(), handed in by app.js: the router imports this module, so this module
// does not import the router.
let navigate = () => {};
export function setNavigate(fn) {
  navigate = fn;
}

class ApiError extends Error {
  constructor(status, body, headers) {
    const err = (body && body.error) || {};
    super(err.message || defaultMessage(status));
    this.status = status;
    this.code = err.code || (status ? `http_${status}` : 'network_error');
    this.param = err.param || null;
    this.requestId = err.request_id || (headers && headers.get('request-id')) || null;
    const ra = headers && headers.get('Retry-After');
    this.retryAfter = ra && /^\d+$/.test(ra) ? Number(ra) : null;
  }
}

function defaultMessage(status) {
  if (!status) return 'Could not reach the Konnect server. Check your connection and try again.';
  if (status === 404) return 'The dashboard API is not available on this server.';
  if (status >= 500) return `The server had a problem (HTTP ${status}). Try again in a moment.`;
  return `The request failed (HTTP ${status}).`;
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const opts = { method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body === undefined ? {} : body);
    if (state.csrf) headers['X-CSRF-Token'] = state.csrf;
  }
  let res;
  try {
    res = await fetch(API + path, opts);
  } catch {
    throw new ApiError(0, null, null);
  }
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
  }
  if (!res.ok) {
    const e = new ApiError(res.status, data, res.headers);
    if (res.status === 401 && e.code === 'not_signed_in' && state.session) {
      clearSession();
      state.pendingNotice = { kind: 'info', text: 'Your session has ended. Please sign in again.' };
      navigate('/signin', { replace: true });
    }
    throw e;
  }
  return data;
}

export function errorText(e) {
  let msg = e.message;
  if (e.requestId && e.status >= 500) msg += ` (request ${e.requestId})`;
  return msg;
}

export async function loadSession() {
  try {
    const s = await api('GET', '/session');
    setSession(s);
    return true;
  } catch (e) {
    if (e.status === 401) {
      clearSession();
      return true;
    }
    throw e;
  }
}

// After sign-in, sign-up or accepting an invite: adopt the answer, then read the full session
// (which also names the role).
export async function adoptSignin(answer) {
  setSession(answer);
  try {
    await loadSession();
  } catch {
    setSession(answer);
  }
}
