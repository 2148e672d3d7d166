// The policy step's stored text: the organiser's current version in the page's language,
// its effective date, what changed since the version this candidate accepted, and the
// separate biometric consent (unticked is a refusal: a proctor checks identity by hand).
// The page comes back here whenever join or publish answers `consent_required`.
import '/candidate/rights-strings.js';
import { get, post } from '/common/http.js';
import { language, t } from '/common/i18n.js';
import { sleep } from '/common/time.js';

const $ = (id) => document.getElementById(id);
let shown = null;

function paint() {
  if (!shown) return;
  const lang = language();
  $('policy-stored').textContent = shown.text[lang] || shown.text.en;
  $('policy-effective').textContent = shown.effective_at
    ? `${t('rights_policy_effective')}: ${new Date(shown.effective_at).toLocaleDateString(lang)}` : '';
  const list = $('policy-changes');
  list.replaceChildren(...shown.changed_since_accepted
    .filter((c) => c.changes[lang] || c.changes.en)
    .map((c) => {
      const li = document.createElement('li');
      li.textContent = `v${c.version}: ${c.changes[lang] || c.changes.en}`;
      return li;
    }));
  $('policy-changes-box').hidden = list.children.length === 0;
  $('biometric-text').textContent = shown.biometric.text[lang] || shown.biometric.text.en;
}

export async function renderPolicy(me) {
  shown = await get('/v1/me/policy');
  $('biometric-choice').hidden = Boolean(shown.biometric_consent || me.biometric_refused);
  paint();
}

export const biometricPending = (me) => Boolean(shown && !shown.biometric_consent && !me.biometric_refused);

// Given once, with the policy: a later change of mind is a withdrawal on the rights page.
export async function acceptBiometric(me) {
  if (!biometricPending(me)) return;
  await post('/v1/me/consents/biometric', { allow: $('biometric-accept').checked });
}

const GUARDIAN_POLL_MS = 5000;

// A minor whose own consent is recorded waits on this step for the guardian's: the page
// offers the one-time link to pass on, and reads /v1/me every few seconds so that it moves
// on by itself once the guardian has consented (on their own device, or through the exam
// staff). Resolves with the candidate's new state; null once the step is left (logout).
export async function awaitGuardian() {
  $('policy-form').hidden = true;
  $('guardian-wait').hidden = false;
  try {
    while (!$('policy-step').hidden) {
      await sleep(GUARDIAN_POLL_MS);
      let me = null;
      try {
        me = await get('/v1/me');
      } catch (error) {
        if (error.status) throw error; // a network blip is waited out; a refusal is not
      }
      if (me && !me.needs_guardian_consent) return me;
    }
    return null;
  } finally {
    $('guardian-wait').hidden = true;
    $('policy-form').hidden = false;
  }
}

document.getElementById('guardian-make')?.addEventListener('click', () => {
  post('/v1/me/guardian-link')
    .then((link) => { $('guardian-url').value = new URL(link.url, location.origin).href; })
    .catch((error) => { $('guardian-url').value = error.message; });
});

export const consentLost = (error) => Boolean(error) && error.status === 403
  && error.reason === 'consent_required';

// After the page's own switch (registered later, by install()) has changed the language.
document.getElementById('lang')?.addEventListener('click', () => setTimeout(paint));
