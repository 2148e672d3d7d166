// Push-to-talk: while a talk button is held (pointer, or Space/Enter), the proctor's
// microphone goes by WHIP to the room, or to one candidate (`?to=`). One talk at a time.
import { t } from '/common/i18n.js';
import { publish } from '/common/webrtc.js';

const talk = { button: null, link: null };

function close(link) {
  link.stream.getTracks().forEach((track) => track.stop());
  link.close();
}

function label(button, key) {
  button.dataset.i18n = key;
  button.textContent = t(key);
}

async function start(button, url, fail) {
  if (talk.button) return;
  talk.button = button;
  button.setAttribute('aria-pressed', 'true');
  label(button, 'talking');
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const link = await publish(url(), stream);
    link.stream = stream;
    if (talk.button === button) talk.link = link;
    else close(link); // released before the link was up
  } catch (error) {
    stop(button);
    fail(error);
  }
}

function stop(button) {
  if (talk.button !== button) return;
  talk.button = null;
  button.setAttribute('aria-pressed', 'false');
  label(button, button.dataset.idle);
  if (talk.link) close(talk.link);
  talk.link = null;
}

// url: a function, called when talking starts (the room may have changed since).
export function pushToTalk(button, url, fail) {
  button.dataset.idle = button.dataset.i18n;
  button.setAttribute('aria-pressed', 'false');
  // The pointer is captured while held: the button hears its release wherever it happens,
  // and a layout shift under a still pointer (a language switch, a new tile) ends nothing.
  button.addEventListener('pointerdown', (e) => {
    button.setPointerCapture(e.pointerId);
    start(button, url, fail);
  });
  button.addEventListener('pointerup', () => stop(button));
  button.addEventListener('lostpointercapture', () => stop(button));
  // Keyboard users hold Space (or Enter) the same way.
  button.addEventListener('keydown', (e) => {
    if ((e.key === ' ' || e.key === 'Enter') && !e.repeat) { e.preventDefault(); start(button, url, fail); }
  });
  button.addEventListener('keyup', (e) => {
    if (e.key === ' ' || e.key === 'Enter') { e.preventDefault(); stop(button); }
  });
}

export function stopTalking() {
  if (talk.button) stop(talk.button);
}
