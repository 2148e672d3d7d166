// What every panel of the organiser console shares: messages in live regions, problem
// reasons in words, tables built from rows, times shown and edited in the browser's zone.
import { language, t } from '/common/i18n.js';

export const $ = (id) => document.getElementById(id);

// A problem reason in the page's language, or the gateway's own words when it has none.
export function reasonText(error) {
  const key = `org_reason_${error.reason}`;
  const text = t(key);
  return text === key ? error.message || error.reason : text;
}

// The message shown last, kept so that a switch of language says it again in the other.
let shown = null;

// What to do when the gateway says the session is gone (401): set by the app (log in again).
let signedOut = () => {};

export function whenSignedOut(handler) {
  signedOut = handler;
}

export function fail(error) {
  if (error.status === 401) signedOut();
  $('notice').hidden = true;
  $('error').dataset.reason = error.reason || '';
  $('error').hidden = false;
  shown = () => { $('error').textContent = `${t('error')}: ${reasonText(error)}`; };
  shown();
}

// A notice: the string of `key`, then `detail` (a name, a number) as it is.
export function note(key, detail = '') {
  $('error').hidden = true;
  $('notice').hidden = false;
  shown = () => { $('notice').textContent = detail ? `${t(key)}: ${detail}` : t(key); };
  shown();
}

export function clearMessages() {
  $('error').hidden = true;
  $('notice').hidden = true;
  shown = null;
}

export function relabelMessage() {
  shown?.();
}

export function when(iso) {
  return new Date(iso).toLocaleString(language(), { dateStyle: 'medium', timeStyle: 'short' });
}

// The value of a datetime-local input for an ISO time, in the browser's zone.
export function localInput(iso) {
  const at = new Date(iso);
  const shifted = new Date(at.getTime() - at.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 16);
}

export function button(label, onClick, { danger = false, name = '' } = {}) {
  const el = document.createElement('button');
  el.type = 'button';
  el.textContent = label;
  if (danger) el.className = 'danger';
  if (name) el.setAttribute('aria-label', `${label} ${name}`);
  el.addEventListener('click', onClick);
  return el;
}

// A button that asks once more before it acts: the first press turns it into "confirm?"
// (keeping the focus on it), the second acts.
export function confirmButton(label, confirmLabel, act, name = '') {
  const el = button(label, () => {
    if (el.dataset.armed !== 'true') {
      el.dataset.armed = 'true';
      el.textContent = confirmLabel;
      if (name) el.setAttribute('aria-label', `${confirmLabel} ${name}`);
      return;
    }
    act();
  }, { danger: true, name });
  return el;
}

// Fill `tbody` with one row per item; `cells(item)` gives strings, elements, or
// { text, state } for a cell that carries a data-state.
export function renderRows(tbody, items, cells) {
  tbody.replaceChildren(...items.map((item) => {
    const tr = document.createElement('tr');
    for (const cell of cells(item)) {
      const td = document.createElement('td');
      if (cell instanceof Node) td.append(cell);
      else if (cell && typeof cell === 'object') {
        td.textContent = cell.text;
        td.dataset.state = cell.state;
      } else td.textContent = cell ?? '';
      tr.append(td);
    }
    return tr;
  }));
}

export function listItem(...parts) {
  const li = document.createElement('li');
  for (const part of parts) li.append(part instanceof Node ? part : String(part), ' ');
  return li;
}
