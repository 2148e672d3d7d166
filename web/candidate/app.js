// The candidate's exam day: log in, accept the policy, check devices, wait for the start
// (a countdown, then the page joins by itself), verify the face when the exam asks for it,
// join, publish camera and microphone by WHIP, heartbeat, hear the proctor by WHEP, upload
// photos; at the end, say the exam is over.
import { get, post } from '/common/http.js';
import { install, t } from '/common/i18n.js';
import { publish, watch } from '/common/webrtc.js';
import { FACE_REASONS, FaceCheck } from '/candidate/face.js';

const HEARTBEAT_MS = 5000;
const MAX_RETRY_DELAY_MS = 30000;
const COUNTDOWN_MS = 250;
const LATE_RETRY_MS = 10000; // refused too late: try again, in case a proctor readmits
const $ = (id) => document.getElementById(id);
const state = { me: null, stream: null, camera: null, talkback: null, network: 'unknown',
  advice: null, failures: 0, timer: null, retryAt: 0, connecting: false, face: null, ended: false,
  screen: null, waiting: null };

function show(step) {
  const steps = ['login-step', 'policy-step', 'check-step', 'wait-step', 'face-step', 'live-step', 'over-step'];
  for (const id of steps) $(id).hidden = id !== step;
  const heading = $(step).querySelector('h2');
  heading.tabIndex = -1;
  heading.focus();
}

function fail(error) {
  // A reason the page explains in words (the schedule's refusals), else the code itself.
  const key = `problem_${error.reason}`;
  const said = error.reason && t(key) !== key ? t(key) : error.reason || error.message;
  $('error').textContent = `${t('error')}: ${said}`;
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
}

function setConnection(key) {
  if (state.ended && key !== 'ended') return;
  const el = $('connection');
  el.dataset.state = key;
  el.dataset.i18n = `status_${key}`;
  el.textContent = t(`status_${key}`);
  el.className = { live: 'status', ended: 'bad' }[key] || 'warn';
}

function setTalkback(on) {
  const el = $('talkback');
  el.dataset.state = on ? 'on' : 'off';
  el.dataset.i18n = on ? 'talkback_on' : 'talkback_off';
  el.textContent = t(el.dataset.i18n);
}

async function login(event) {
  event.preventDefault();
  clearError();
  try {
    await post('/v1/sessions', { exam_no: $('exam-no').value.trim(), candidate_no: $('candidate-no').value.trim() });
    await loadMe();
  } catch (error) {
    fail(error);
  }
}

async function loadMe() {
  state.me = await get('/v1/me');
  $('policy-version').textContent = state.me.policy_version;
  $('guardian').hidden = !state.me.needs_guardian_consent;
  if (state.me.needs_consent || state.me.needs_guardian_consent) show('policy-step');
  else show('check-step');
}

async function consent(event) {
  event.preventDefault();
  clearError();
  try {
    if (state.me.needs_consent) await post('/v1/me/consent', { policy_version: state.me.policy_version });
    state.me = await get('/v1/me');
    if (!state.me.needs_guardian_consent) show('check-step');
  } catch (error) {
    fail(error);
  }
}

function guessNetwork() {
  // The Network Information API says `type` on some mobile browsers only; else we ask.
  const type = navigator.connection && navigator.connection.type;
  const known = { wifi: 'wifi', cellular: 'cellular', ethernet: 'ethernet' };
  if (type && known[type]) $('network').value = known[type];
}

async function onNetwork() {
  state.network = $('network').value;
  state.advice = await get(`/v1/me/network-advice?network=${encodeURIComponent(state.network)}`);
  $('cellular').hidden = !state.advice.warning;
}

function mark(id, ok) {
  $(id).textContent = t(ok ? 'ok' : 'failed');
  $(id).dataset.i18n = ok ? 'ok' : 'failed';
  $(id).className = ok ? 'good' : 'bad';
  $(id).dataset.ok = String(ok);
}

async function checkDevices() {
  clearError();
  const supported = Boolean(window.RTCPeerConnection && navigator.mediaDevices);
  mark('check-browser', supported);
  if (!supported) return;
  try {
    await onNetwork();
    const video = state.advice.video;
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: video.width, height: video.height, frameRate: video.fps },
    });
    $('preview').srcObject = state.stream;
    mark('check-camera', state.stream.getVideoTracks().length > 0);
    mark('check-microphone', state.stream.getAudioTracks().length > 0);
    $('join').disabled = !(state.stream.getVideoTracks().length && state.stream.getAudioTracks().length);
  } catch (error) {
    mark('check-camera', false);
    mark('check-microphone', false);
    fail(error);
  }
}

async function join() {
  clearError();
  stopWaiting();
  try {
    await post('/v1/me/join', { network: state.network });
  } catch (error) {
    if (error.status === 403 && error.reason === 'not_started') {
      await waitForStart().catch(fail);
    } else if (error.status === 403 && error.reason === 'too_late') {
      waitForReadmission();
    } else if (error.status === 403 && error.reason === 'exam_over') {
      over();
    } else if (error.status === 403 && FACE_REASONS.has(error.reason)) {
      // The exam wants a verified face first: the face step says why and clears the way.
      show('face-step');
      await state.face.open(state.stream).catch(fail);
    } else {
      fail(error);
    }
    return;
  }
  try {
    show('live-step');
    setTalkback(false);
    state.timer = setInterval(tick, HEARTBEAT_MS);
    await connect();
  } catch (error) {
    fail(error);
  }
}

// The waiting room: count down to the start by the gateway's clock (the page's own may be
// wrong), then join by itself.
async function waitForStart() {
  const me = await get('/v1/me');
  const left = Date.parse(me.schedule.starts_at) - Date.parse(me.schedule.now);
  const due = performance.now() + Math.max(left, 0);
  setWaiting('waiting');
  const step = () => {
    const ms = due - performance.now();
    if (ms <= 0) {
      join();
      return;
    }
    $('countdown').textContent = clock(ms);
    state.waiting = setTimeout(step, Math.min(COUNTDOWN_MS, ms));
  };
  // Joining too early again (the clocks a beat apart) comes back here for another second.
  $('countdown').textContent = clock(Math.max(left, 0));
  state.waiting = setTimeout(step, left > 0 ? 0 : 1000);
}

function waitForReadmission() {
  setWaiting('late');
  state.waiting = setTimeout(join, LATE_RETRY_MS);
}

function setWaiting(kind) {
  $('wait-step').dataset.state = kind;
  $('wait-h').dataset.i18n = kind === 'late' ? 'late_heading' : 'wait_heading';
  $('wait-h').textContent = t($('wait-h').dataset.i18n);
  $('wait-text').hidden = kind === 'late';
  $('countdown').parentElement.hidden = kind === 'late';
  $('late').hidden = kind !== 'late';
  if ($('wait-step').hidden) show('wait-step');
}

function stopWaiting() {
  clearTimeout(state.waiting);
  state.waiting = null;
}

function clock(ms) {
  const total = Math.ceil(ms / 1000);
  const two = (n) => String(n).padStart(2, '0');
  const [h, m, s] = [Math.floor(total / 3600), Math.floor(total / 60) % 60, total % 60];
  return h ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}

async function connect() {
  if (state.connecting) return;
  state.connecting = true;
  setConnection('connecting');
  const old = state.camera;
  state.camera = null;
  try {
    if (old) await old.close();
    state.camera = await publish('/v1/whip/me/camera', state.stream);
    state.camera.pc.addEventListener('connectionstatechange', onConnectionState);
  } catch (error) {
    setConnection(navigator.onLine ? 'lost' : 'offline');
    throw error;
  } finally {
    state.connecting = false;
  }
}

// The exam's end: the gateway ended the session and the media; stop ours, say so and stay.
function over() {
  ended();
  show('over-step');
}

// The session is over: no more heartbeats, retries or media; say so and stay.
function ended() {
  state.ended = true;
  clearInterval(state.timer);
  stopWaiting();
  setConnection('ended');
  if (state.camera) state.camera.close();
  state.camera = null;
  if (state.screen) stopScreen(state.screen);
  if (state.talkback && state.talkback !== 'pending') state.talkback.close();
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
}

function onConnectionState() {
  const pc = state.camera && state.camera.pc;
  if (!pc || state.ended) return;
  if (pc.connectionState === 'connected') {
    state.failures = 0;
    setConnection('live');
  } else if (['failed', 'disconnected', 'closed'].includes(pc.connectionState)) {
    setConnection(navigator.onLine ? 'lost' : 'offline');
  }
}

function retryDue() {
  // Exponential backoff, capped, so a long outage costs one try per 30 s at most.
  const delay = Math.min(MAX_RETRY_DELAY_MS, HEARTBEAT_MS * 2 ** state.failures);
  return Date.now() >= state.retryAt + delay;
}

async function tick() {
  try {
    await post('/v1/me/heartbeat', { network: state.network });
    const room = await get('/v1/me/room');
    renderMessages(room.messages || []);
    onConnectionState(); // back from offline with the media link still up: say so
  } catch (error) {
    if (error.status === 403 && error.reason === 'exam_over') over();
    else if (error.status === 401) ended(); // the proctor ended the session (or it expired)
    else setConnection(navigator.onLine ? 'lost' : 'offline');
    return;
  }
  const pc = state.camera && state.camera.pc;
  const down = !pc || ['failed', 'closed'].includes(pc.connectionState);
  if (down && !state.connecting && retryDue()) {
    state.retryAt = Date.now();
    state.failures += 1;
    connect().catch(() => {}); // connect() shows the state; the next tick tries again
  }
  if (!state.talkback) listen();
}

async function listen() {
  state.talkback = 'pending';
  try {
    const link = await watch('/v1/whep/me/talkback', ['audio'], (track) => {
      $('talkback-audio').srcObject = new MediaStream([track]);
      setTalkback(true);
      track.addEventListener('ended', () => stopListening(link));
    });
    state.talkback = link;
    link.pc.addEventListener('connectionstatechange', () => {
      if (['failed', 'closed', 'disconnected'].includes(link.pc.connectionState)) stopListening(link);
    });
  } catch {
    state.talkback = null; // nobody talks yet (404 not_publishing): try at the next tick
  }
}

function stopListening(link) {
  if (state.talkback !== link) return;
  state.talkback = null;
  setTalkback(false);
  link.close();
}

// The proctor asks (a message) and the candidate shares: by WHIP, at a low frame rate.
async function shareScreen() {
  clearError();
  if (state.screen) return;
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 5 }, audio: false });
    const link = await publish('/v1/whip/me/screen', stream);
    link.stream = stream;
    state.screen = link;
    setScreen(true);
    // The browser's own "stop sharing" ends the track.
    stream.getVideoTracks()[0].addEventListener('ended', () => stopScreen(link));
    link.pc.addEventListener('connectionstatechange', () => {
      if (['failed', 'closed'].includes(link.pc.connectionState)) stopScreen(link);
    });
  } catch (error) {
    fail(error);
  }
}

function stopScreen(link) {
  if (state.screen !== link) return;
  state.screen = null;
  link.stream.getTracks().forEach((track) => track.stop());
  link.close();
  setScreen(false);
}

function setScreen(on) {
  const el = $('screen-state');
  el.dataset.state = on ? 'on' : 'off';
  el.dataset.i18n = on ? 'screen_on' : 'screen_off';
  el.textContent = t(el.dataset.i18n);
  $('share-screen').disabled = on;
}

function renderMessages(messages) {
  const list = $('messages');
  list.replaceChildren(...messages.slice(-20).map((m) => {
    const li = document.createElement('li');
    li.textContent = m.text;
    return li;
  }));
}

async function uploadPhoto(event) {
  event.preventDefault();
  const file = $('photo').files[0];
  if (!file) return;
  try {
    await post('/v1/uploads/photos', file);
    $('photo-result').dataset.i18n = 'uploaded';
    $('photo-result').textContent = t('uploaded');
    $('photo-result').dataset.done = 'true';
  } catch (error) {
    fail(error);
  }
}

function start() {
  state.face = new FaceCheck(join);
  install($('lang'), () => state.face.render());
  $('login-form').addEventListener('submit', login);
  $('policy-form').addEventListener('submit', consent);
  $('network').addEventListener('change', () => onNetwork().catch(fail));
  $('check').addEventListener('click', checkDevices);
  $('join').addEventListener('click', join);
  $('photo-form').addEventListener('submit', uploadPhoto);
  $('share-screen').addEventListener('click', shareScreen);
  window.addEventListener('offline', () => setConnection('offline'));
  window.addEventListener('online', () => { state.retryAt = 0; state.failures = 0; });
  guessNetwork();
  // Already logged in (the cookie survived a reload): skip the login form.
  loadMe().catch(() => show('login-step'));
}

start();
