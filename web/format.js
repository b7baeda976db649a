// Formatting for display: dates and times, durations, numbers, money (integer micro-units) and
// names.

import { h } from './dom.js';

export const nowSec = () => Math.floor(Date.now() / 1000);
export const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
export const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'long' });
export const numFmt = new Intl.NumberFormat();

export function timeEl(ts, text) {
  const d = new Date(ts * 1000);
  return h('time', { datetime: d.toISOString(), title: fullFmt.format(d) }, text);
}

export function span(seconds) {
  const minutes = Math.round(seconds / 60);
  if (minutes < 1) return 'less than a minute';
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.round(seconds / 3600);
  if (hours < 48) return `${hours} h`;
  const days = Math.round(seconds / 86400);
  return `${days} days`;
}

export function ago(ts) {
  if (ts == null) return 'never';
  const s = nowSec() - ts;
  if (s < 60) return timeEl(ts, 'just now');
  if (s < 7 * 86400) return timeEl(ts, `${span(s)} ago`);
  return timeEl(ts, dateFmt.format(new Date(ts * 1000)));
}

export const capitalize = (s) => (s ? s.charAt(0).toUpperCase() + s.slice(1) : '');

// Money arrives as integer micro-units of the currency (1 USD = 1,000,000): it is formatted by
// integer arithmetic and string work, never as a floating-point amount. At least two decimals
// are shown, and as many more as there are non-zero micro-units ($0.003114, $12.50).
export function money(micros, currency = 'usd') {
  const n = Math.trunc(Number(micros) || 0);
  const abs = Math.abs(n);
  let frac = String(abs % 1000000).padStart(6, '0');
  while (frac.length > 2 && frac.endsWith('0')) frac = frac.slice(0, -1);
  const units = String(Math.floor(abs / 1000000)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const code = String(currency || '').toLowerCase();
  const amount = `${units}.${frac}`;
  return `${n < 0 ? '-' : ''}${code === 'usd' ? `$${amount}` : `${amount} ${code.toUpperCase()}`}`;
}

// "2026-11" as "November 2026"; dates of the billing period are UTC.
const monthFmt = new Intl.DateTimeFormat(undefined, { month: 'long', year: 'numeric', timeZone: 'UTC' });
export const utcDateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeZone: 'UTC' });
export const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
export const monthName = (m) => monthFmt.format(new Date(`${m}-01T00:00:00Z`));

export function personName(v) {
  if (v == null || v === '') return null;
  if (typeof v === 'object') return v.email || v.name || v.id || null;
  return String(v);
}
