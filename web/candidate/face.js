// Face verification before joining, when the exam requires it: one live frame against the
// enrolment (the last of the exam's attempts goes to a proctor's review when it fails), then
// the liveness challenge: a random head movement, filmed as a short series of JPEG frames.
import { get, post } from '/common/http.js';
import { t } from '/common/i18n.js';
import { sleep } from '/common/time.js';

// Reasons of a refused join that this step resolves.
export const FACE_REASONS = new Set([
  'face_verification_required', 'liveness_required', 'face_review_pending', 'face_rejected',
]);

const RECORD_MS = 3000; // long enough for a slow movement and the way back
const FRAME_EVERY_MS = 150;
const REVIEW_POLL_MS = 3000;
const JPEG_QUALITY = 0.85;
const BAD_STATES = ['rejected', 'not_enrolled', 'mismatch', 'failed'];
const $ = (id) => document.getElementById(id);

const FIRST_FRAME_MS = 5000;

// A just-attached stream has no picture for a moment: wait for one (bounded).
function frameReady(video) {
  if (video.readyState >= 2 && video.videoWidth) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const error = new Error('no_camera_frame');
      error.reason = 'no_camera_frame';
      reject(error);
    }, FIRST_FRAME_MS);
    video.addEventListener('loadeddata', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

async function jpeg(video) {
  await frameReady(video);
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('no_frame'))), 'image/jpeg', JPEG_QUALITY);
  });
}

function base64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(',', 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function reasonText(reason) {
  if (!reason) return t('error');
  const key = `reason_${reason}`;
  const text = t(key);
  return text === key ? reason : text;
}

export class FaceCheck {
  // onCleared: called once the candidate may join (verified and live, or accepted by a proctor).
  constructor(onCleared) {
    this.onCleared = onCleared;
    this.challenge = null;
    this.poll = null;
    this.view = null;
    this.video = $('face-preview');
    $('verify').addEventListener('click', () => this.verify());
    $('liveness-start').addEventListener('click', () => this.record());
    $('liveness-retry').addEventListener('click', () => this.newChallenge());
  }

  // Shows the state the server has for this candidate, and what they can do next.
  async open(stream) {
    this.video.srcObject = stream;
    const status = await get('/v1/me/verification');
    if (!status.enrolled) this.set('not_enrolled', () => t('face_not_enrolled'));
    else if (status.status === 'accepted') this.cleared(() => t('face_accepted'));
    else if (status.status === 'verified') await this.newChallenge();
    else if (status.status === 'review') this.waitForReview();
    else if (status.status === 'rejected') this.set('rejected', () => t('face_rejected'));
    else this.set('ready', () => t('face_intro'), ['verify']);
  }

  // state: what the page is doing (tests and styles read data-state); text: a function, so
  // that the language switch can say it again (render).
  set(state, text, buttons = []) {
    this.view = { state, text, buttons };
    this.render();
  }

  render() {
    if (!this.view) return;
    const { state, text, buttons } = this.view;
    $('face-step').dataset.state = state;
    $('face-status').textContent = text();
    $('face-status').className = BAD_STATES.includes(state) ? 'bad' : 'status';
    for (const id of ['verify', 'liveness-start', 'liveness-retry']) {
      $(id).hidden = !buttons.includes(id);
      $(id).disabled = false;
    }
    const moving = ['challenge', 'recording'].includes(state) && this.challenge;
    $('face-instruction').hidden = !moving;
    $('face-instruction').dataset.movement = moving ? this.challenge.movement : '';
    $('face-instruction').textContent = moving ? t(`move_${this.challenge.movement}`) : '';
    $('face-progress').hidden = state !== 'recording';
  }

  async verify() {
    $('verify').disabled = true;
    this.set('verifying', () => t('face_verifying'));
    try {
      const result = await post('/v1/me/verification', await jpeg(this.video));
      if (result.match) await this.newChallenge('face_matched');
      else if (result.status === 'review') this.waitForReview();
      else {
        const left = () => `${t('face_attempts_left')}: ${result.attempts_left}`;
        this.set('mismatch', () => `${t('face_mismatch')} (${left()})`, ['verify']);
      }
    } catch (error) {
      this.refused(error, 'verify');
    }
  }

  refused(error, retry) {
    if (error.reason === 'already_verified') this.newChallenge();
    else if (error.reason === 'review_pending') this.waitForReview();
    else if (error.reason === 'face_rejected') this.set('rejected', () => t('face_rejected'));
    else if (error.status === 503 || error.status === 429) this.set('mismatch', () => t('face_busy'), [retry]);
    else this.set('mismatch', () => `${t('face_retry_reason')}: ${reasonText(error.reason)}`, [retry]);
  }

  async newChallenge(lead = null) {
    try {
      this.challenge = await post('/v1/me/liveness/challenges');
      const ready = () => (lead ? `${t(lead)} ${t('liveness_ready')}` : t('liveness_ready'));
      this.set('challenge', ready, ['liveness-start']);
      $('liveness-start').focus();
    } catch (error) {
      this.refused(error, 'liveness-retry');
    }
  }

  async record() {
    const challenge = this.challenge;
    this.set('recording', () => t('liveness_recording'));
    const count = Math.max(challenge.min_frames, Math.min(challenge.max_frames, RECORD_MS / FRAME_EVERY_MS));
    const blobs = [];
    for (let i = 0; i < count; i += 1) {
      blobs.push(jpeg(this.video));
      $('face-progress').value = (i + 1) / count;
      await sleep(FRAME_EVERY_MS);
    }
    this.set('checking', () => t('liveness_checking'));
    const failed = (reason) => this.set('failed', () => `${t('liveness_failed')}: ${reasonText(reason)}`, ['liveness-retry']);
    try {
      const frames = await Promise.all((await Promise.all(blobs)).map(base64));
      const result = await post(`/v1/me/liveness/challenges/${encodeURIComponent(challenge.nonce)}`, { frames });
      this.challenge = null;
      if (result.passed) this.cleared(() => t('liveness_passed'));
      else failed(result.reason);
    } catch (error) {
      this.challenge = null;
      failed(error.reason);
    }
  }

  waitForReview() {
    this.set('review', () => t('face_review'));
    if (this.poll) return;
    this.poll = setInterval(async () => {
      try {
        const status = await get('/v1/me/verification');
        if (status.status === 'accepted') this.cleared(() => t('face_accepted'));
        else if (status.status === 'rejected') {
          this.stop();
          this.set('rejected', () => t('face_rejected'));
        }
      } catch {
        // offline for a moment: the next poll asks again
      }
    }, REVIEW_POLL_MS);
  }

  stop() {
    clearInterval(this.poll);
    this.poll = null;
  }

  cleared(text) {
    this.stop();
    this.set('passed', text);
    this.onCleared();
  }
}
