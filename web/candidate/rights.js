// The candidate's rights: a copy of their data (a zip the gateway builds and streams), their
// consents and the withdrawal of each (the page says what a withdrawal means before it is
// confirmed), a correction request or complaint, deletion, withdrawal from the exam, and
// who to contact. Every answer is said in the live region.
import '/candidate/rights-strings.js';
import { call, get, post } from '/common/http.js';
import { install, language, t } from '/common/i18n.js';

const $ = (id) => document.getElementById(id);
const KINDS = ['policy', 'biometric', 'third_party', 'guardian'];
const state = { me: null, policy: null, sharing: false, pending: null, requests: [] };

function say(key) {
  $('error').hidden = true;
  $('status').dataset.i18n = key;
  $('status').textContent = t(key);
}

function fail(error) {
  $('error').textContent = `${t('error')}: ${error.reason || error.message}`;
  $('error').hidden = false;
}

function given(kind) {
  const me = state.me;
  if (kind === 'policy') return Boolean(me.consented_version);
  if (kind === 'biometric') return Boolean(me.biometric_consent);
  if (kind === 'third_party') return state.sharing;
  return me.needs_guardian_consent === false;
}

function renderConsents() {
  const rows = KINDS.filter((k) => k !== 'guardian' || isMinor())
    .map((kind) => {
      const li = document.createElement('li');
      const label = document.createElement('span');
      label.textContent = `${t(`rights_kind_${kind}`)}: ${given(kind) ? '✓' : '—'} `;
      const button = document.createElement('button');
      button.type = 'button';
      button.id = `withdraw-${kind}`;
      button.textContent = t('rights_withdraw');
      button.setAttribute('aria-label', `${t('rights_withdraw')}: ${t(`rights_kind_${kind}`)}`);
      button.disabled = !given(kind);
      button.addEventListener('click', () => ask(kind));
      li.append(label, button);
      return li;
    });
  $('consents').replaceChildren(...rows);
  $('guardian-box').hidden = !isMinor();
}

const isMinor = () => Boolean(state.me && state.me.minor);

function renderRequests() {
  $('requests').replaceChildren(...state.requests.map((r) => {
    const li = document.createElement('li');
    const answer = r.answer ? ` — ${r.answer}` : '';
    li.textContent = `${t(`rights_kind_${r.kind}`)}: ${r.text} (${t(`rights_status_${r.status}`)})${answer}`;
    return li;
  }));
}

function sayMeaning(kind) {
  const meaning = kind === 'exam' ? null : state.policy.withdrawal[kind];
  $('confirm-meaning').textContent = meaning ? meaning[language()] || meaning.en
    : t('rights_withdraw_exam_text');
}

// What the withdrawal means is said before it is confirmed.
function ask(kind) {
  state.pending = kind;
  sayMeaning(kind);
  $('confirm-box').hidden = false;
  $('confirm').focus();
}

async function confirmWithdrawal() {
  const kind = state.pending;
  state.pending = null;
  $('confirm-box').hidden = true;
  if (kind === 'exam') {
    await post('/v1/me/withdrawal');
    say('rights_withdrawn_exam');
    return;
  }
  await call('DELETE', `/v1/me/consents/${kind.replace('_', '-')}`);
  say('rights_withdrawn');
  await load();
}

async function load() {
  state.me = await get('/v1/me');
  state.policy = await get('/v1/me/policy');
  const consents = await get('/v1/me/consents');
  state.sharing = consents.third_party_sharing;
  state.requests = (await get('/v1/me/requests')).requests;
  renderConsents();
  renderRequests();
}

async function loadContact() {
  const contact = await get('/v1/privacy/contact');
  $('operator').textContent = contact.operator[language()] || contact.operator.en;
  $('contact').textContent = contact.contact;
  $('effective').textContent = contact.effective_date;
}

async function sendRequest(event) {
  event.preventDefault();
  const kind = $('request-kind').value;
  const body = { kind, text: $('request-text').value };
  if (kind === 'correction') body.field = $('request-field').value;
  await post('/v1/me/requests', body);
  $('request-text').value = '';
  say('rights_request_sent');
  state.requests = (await get('/v1/me/requests')).requests;
  renderRequests();
}

function repaint() {
  if (state.me) { renderConsents(); renderRequests(); }
  if (state.pending) sayMeaning(state.pending);
  loadContact().catch(fail);
}

function start() {
  install($('lang'), repaint);
  $('download').addEventListener('click', () => say('rights_downloading'));
  $('confirm').addEventListener('click', () => confirmWithdrawal().catch(fail));
  $('cancel').addEventListener('click', () => { $('confirm-box').hidden = true; });
  $('request-kind').addEventListener('change', () => {
    $('request-field').disabled = $('request-kind').value !== 'correction';
  });
  $('request-form').addEventListener('submit', (e) => sendRequest(e).catch(fail));
  $('delete').addEventListener('click', () => post('/v1/me/deletion-request')
    .then(() => say('rights_delete_sent')).catch(fail));
  $('withdraw-exam').addEventListener('click', () => ask('exam'));
  $('guardian-make').addEventListener('click', () => post('/v1/me/guardian-link')
    .then((link) => { $('guardian-url').value = new URL(link.url, location.origin).href; }).catch(fail));
  loadContact().catch(fail);
  load().catch((error) => (error.status === 401 ? say('rights_login_first') : fail(error)));
}

start();
