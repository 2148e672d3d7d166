// The policy step's stored text: the organiser's current version in the page's language,
// its effective date, what changed since the version this candidate accepted, and the
// separate biometric consent (unticked is a refusal: a proctor checks identity by hand).
// The page comes back here whenever join or publish answers `consent_required`.
import '/candidate/rights-strings.js';
import { get, post } from '/common/http.js';
import { language, t } from '/common/i18n.js';

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

// Given once, with the policy: a later change of mind is a withdrawal on the rights page.
export async function acceptBiometric(me) {
  if (!shown || shown.biometric_consent || me.biometric_refused) return;
  await post('/v1/me/consents/biometric', { allow: $('biometric-accept').checked });
}

export const consentLost = (error) => Boolean(error) && error.status === 403
  && error.reason === 'consent_required';

// After the page's own switch (registered later, by install()) has changed the language.
document.getElementById('lang')?.addEventListener('click', () => setTimeout(paint));
