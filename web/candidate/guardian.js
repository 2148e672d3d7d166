// A minor's guardian consents by a one-time link. Its token is in the fragment, which the
// browser never sends: the page reads it and posts it in a JSON body, once to show the
// policy and once to consent (after which the link no longer works).
import '/candidate/rights-strings.js';
import { post } from '/common/http.js';
import { install, language, t } from '/common/i18n.js';

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get('token') || '';
let shown = null;

function say(key) {
  $('status').dataset.i18n = key;
  $('status').textContent = t(key);
}

function paint() {
  if (!shown) return;
  const lang = language();
  $('exam-title').textContent = shown.exam.title;
  $('policy-stored').textContent = shown.text[lang] || shown.text.en;
  $('policy-effective').textContent = shown.effective_at
    ? `${t('rights_policy_effective')}: ${new Date(shown.effective_at).toLocaleDateString(lang)}` : '';
}

async function consent(event) {
  event.preventDefault();
  try {
    await post('/v1/guardian/consent', { token, accept: true });
    $('guardian-step').hidden = true;
    say('rights_guardian_done');
  } catch {
    say('rights_guardian_invalid');
  }
}

async function start() {
  install($('lang'), paint);
  $('guardian-form').addEventListener('submit', consent);
  try {
    shown = await post('/v1/guardian/policy', { token });
  } catch {
    say('rights_guardian_invalid');
    return;
  }
  paint();
  $('guardian-step').hidden = false;
}

start();
