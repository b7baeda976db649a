// DOM helpers: building elements (user data only ever as text), form fields, alerts, busy
// buttons, the toast, and the page's fixed elements from index.html.

export const $main = document.getElementById('main');
export const $topbar = document.getElementById('topbar');
export const $userEmail = document.getElementById('user-email');
const $toast = document.getElementById('toast');

let uidCounter = 0;
export const uid = (prefix) => `${prefix}-${++uidCounter}`;

export function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

export function field(labelText, input, hintText) {
  if (!input.id) input.id = uid('f');
  const hint = hintText ? h('p', { class: 'field-hint', id: uid('hint') }, hintText) : null;
  const error = h('p', { class: 'field-error', id: uid('err'), hidden: true });
  const describedBy = [hint && hint.id].filter(Boolean).join(' ');
  if (describedBy) input.setAttribute('aria-describedby', describedBy);
  const wrap = h('div', { class: 'field' }, h('label', { for: input.id }, labelText), input, hint, error);
  wrap.setError = (msg) => {
    error.textContent = msg || '';
    error.hidden = !msg;
    if (msg) {
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', [describedBy, error.id].filter(Boolean).join(' '));
    } else {
      input.removeAttribute('aria-invalid');
      if (describedBy) input.setAttribute('aria-describedby', describedBy);
      else input.removeAttribute('aria-describedby');
    }
  };
  return wrap;
}

export function alertBox(kind = 'error') {
  const box = h('div', { class: `alert alert-${kind}`, role: kind === 'error' ? 'alert' : 'status', hidden: true });
  box.show = (title, message) => {
    box.replaceChildren();
    if (title) box.append(h('strong', { class: 'alert-title' }, title));
    if (message) box.append(h('span', { class: 'alert-message' }, message));
    box.hidden = false;
  };
  box.clear = () => {
    box.replaceChildren();
    box.hidden = true;
  };
  return box;
}

export function setBusy(button, busy, busyText) {
  if (busy) {
    button.dataset.label = button.textContent;
    if (busyText) button.textContent = busyText;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
  } else {
    if (button.dataset.label) button.textContent = button.dataset.label;
    delete button.dataset.label;
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

let toastTimer = null;
export function toast(message, ms = 4000) {
  $toast.textContent = message;
  $toast.classList.add('is-visible');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    $toast.classList.remove('is-visible');
    $toast.textContent = '';
  }, ms);
}

/* What an answer's "propagation" says of servers that had not applied the change yet, as a
 * sentence, or '' when it is in force on every running server. */
export function propagationWarning(answer) {
  const p = answer && answer.propagation;
  if (!p || !Array.isArray(p.lagging) || p.lagging.length === 0) return '';
  const which = p.lagging.length === 1 ? 'server' : 'servers';
  return `Saved, but not yet in force on ${which} ${p.lagging.join(', ')}: ` +
    'they apply it as soon as they reach the database.';
}
