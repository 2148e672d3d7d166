// The side camera: a pairing token from the gateway, shown as its QR code (an SVG the
// gateway draws, in a data: URL, which the page's CSP allows for images) and as the
// phone page's link, for a phone that cannot scan.
import { post } from '/common/http.js';
import { t } from '/common/i18n.js';

const $ = (id) => document.getElementById(id);

export async function showPairing() {
  $('pair').disabled = true;
  try {
    const pairing = await post('/v1/me/pairing');
    $('pair-qr').src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(pairing.qr_svg)}`;
    $('pair-link').textContent = pairing.link;
    $('pair-expires').textContent = String(pairing.expires_in);
    $('pairing').hidden = false;
    renderPairing();
  } finally {
    $('pair').disabled = false;
  }
}

export function renderPairing() {
  $('pair-qr').alt = t('cand_side_qr');
}

export function hidePairing() {
  $('pairing').hidden = true;
  $('pair-qr').removeAttribute('src');
  $('pair-link').textContent = '';
}
