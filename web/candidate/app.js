// The candidate's exam day: log in, accept the policy, check devices, wait for the start
// (a countdown, then the page joins by itself), verify the face when the exam asks for it,
// join, publish camera and microphone by WHIP, heartbeat, hear the proctor by WHEP, upload
// photos; at the end, say the exam is over.
//
// The network check measures: the Network Information API where the browser has one (the
// self-reported drop-down only where it lacks `type`), the round trip to the gateway,
// and, on a mobile network, a real "continue on mobile data?" step before any video is
// sent. The media link itself is measured before the join on a probe session to the
// room's media shard (POST /v1/whip/me/probe: a few seconds, never recorded nor
// forwarded; only once mobile data is accepted), and once live on the camera session
// (getStats: round trip and sending rate).
//
// When the platform drains a media shard it journals `reconnect` into the room; the page
// sees it in GET /v1/me/room, which it reads at every heartbeat, and publishes its
// camera (and screen) again at once rather than when the shard stops under it.
import '/candidate/strings.js';
import { get, logOut, post } from '/common/http.js';
import { install, t } from '/common/i18n.js';
import { publish, watch } from '/common/webrtc.js';
import { FACE_REASONS, FaceCheck } from '/candidate/face.js';
import { Help } from '/candidate/help.js';
import { connectionInfo, gatewayRtt, measureProbe, mediaQuality, onConnectionChange } from '/candidate/network.js';
import { hidePairing, renderPairing, showPairing } from '/candidate/side.js';
import { wireUpload } from '/candidate/uploads.js';
import { acceptBiometric, awaitGuardian, biometricPending, consentLost, renderPolicy } from '/candidate/policy.js';

const HEARTBEAT_MS = 5000;
const MAX_RETRY_DELAY_MS = 30000;
const COUNTDOWN_MS = 250;
const LATE_RETRY_MS = 10000; // refused too late: try again, in case a proctor readmits
const $ = (id) => document.getElementById(id);
const state = { me: null, stream: null, camera: null, talkback: null, network: 'unknown',
  advice: null, failures: 0, timer: null, retryAt: 0, connecting: false, face: null, ended: false,
  screen: null, waiting: null, help: null, devicesOk: false, mobileOk: false, quality: null,
  probing: false, probe: null, probeStopped: false, reconnectSeen: null, epoch: 0,
  pending: new Set() };

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
  $('logout').hidden = false;
  $('policy-version').textContent = state.me.policy_version;
  $('guardian').hidden = !state.me.needs_guardian_consent;
  if (state.me.needs_consent || state.me.needs_guardian_consent) {
    await renderPolicy(state.me);
    show('policy-step');
    if (!state.me.needs_consent) await waitForGuardian(false); // consented before a reload
  } else show('check-step');
}

// A minor's biometric choice counts only once the guardian has consented: the one made on
// this page before the wait is sent then; after a reload the form asks for it again.
async function waitForGuardian(chosenHere) {
  const me = await awaitGuardian();
  if (!me) return;
  state.me = me;
  $('guardian').hidden = true;
  if (chosenHere) await acceptBiometric(me);
  else if (biometricPending(me)) return;
  show('check-step');
}

async function consent(event) {
  event.preventDefault();
  clearError();
  try {
    if (state.me.needs_consent) await post('/v1/me/consent', { policy_version: state.me.policy_version });
    state.me = await get('/v1/me');
    if (state.me.needs_guardian_consent) {
      await waitForGuardian(true);
      return;
    }
    await acceptBiometric(state.me);
    show('check-step');
  } catch (error) {
    fail(error);
  }
}

// The Network Information API says `type` on some mobile browsers only: there the page
// knows, elsewhere it asks (the drop-down), and shows what else the API measured.
function guessNetwork() {
  const info = connectionInfo();
  $('network-ask').hidden = Boolean(info && info.type);
  $('net-detected-row').hidden = !(info && (info.type || info.effectiveType));
  $('net-downlink-row').hidden = !(info && info.downlink !== null);
  if (!info) return;
  if (info.type) $('network').value = info.type;
  const kind = info.type ? t(`cand_net_type_${info.type}`) : t('cand_net_type_unknown');
  $('net-detected').textContent = info.effectiveType ? `${kind} (${info.effectiveType})` : kind;
  $('net-detected').dataset.type = info.type || 'unknown';
  if (info.downlink !== null) $('net-downlink').textContent = `${info.downlink} Mbit/s`;
}

async function onNetwork() {
  const before = state.network;
  state.network = $('network').value;
  if (state.network !== before) state.mobileOk = false; // a new mobile network asks again
  state.advice = await get(`/v1/me/network-advice?network=${encodeURIComponent(state.network)}`);
  $('cellular').hidden = state.network !== 'cellular';
  $('cellular').dataset.confirmed = String(state.mobileOk);
  $('mobile-accepted').hidden = !state.mobileOk;
  if (state.network === 'cellular' && !state.mobileOk) setProbe('waiting');
  updateJoin();
}

// No video on mobile data until the candidate says so.
function updateJoin() {
  $('join').disabled = !state.devicesOk || (state.network === 'cellular' && !state.mobileOk);
}

function acceptMobile() {
  state.mobileOk = true;
  $('cellular').dataset.confirmed = 'true';
  $('mobile-accepted').hidden = false;
  updateJoin();
  if (!$('join').disabled) $('join').focus();
  runProbe();
}

// The probe's row, made here (the page's HTML lists the other measures): a live region,
// so that a screen reader hears the verdict when it comes.
function probeRow() {
  const row = document.createElement('li');
  const label = document.createElement('span');
  label.dataset.i18n = 'cand_probe';
  const output = document.createElement('output');
  output.id = 'check-probe';
  output.setAttribute('aria-live', 'polite');
  row.append(label, ': ', output);
  $('net-measured').append(row);
}

function setProbe(key, measured = null) {
  const el = $('check-probe');
  el.dataset.state = key;
  for (const name of ['rtt', 'kbps', 'verdict']) {
    if (measured) el.dataset[name] = String(measured[name]);
    else delete el.dataset[name];
  }
  el.className = { good: 'good', weak: 'warn', too_weak: 'bad', failed: 'bad' }[key] || '';
  renderProbe();
}

function renderProbe() {
  const el = $('check-probe');
  const { state: key, rtt, kbps, verdict } = el.dataset;
  if (!key) return;
  if (verdict === undefined) {
    el.textContent = t(key === 'measuring' ? 'cand_net_measuring' : `cand_probe_${key}`);
    return;
  }
  el.textContent = t('cand_probe_value').replace('{rtt}', rtt).replace('{kbps}', kbps)
    .replace('{verdict}', t(`cand_probe_${verdict}`));
}

// A few seconds of the camera and microphone sent to the room's media shard, measured;
// not on mobile data before the candidate said yes.
async function runProbe() {
  if (!state.stream || state.probing) return;
  if (state.network === 'cellular' && !state.mobileOk) {
    setProbe('waiting');
    return;
  }
  state.probing = true;
  state.probeStopped = false;
  setProbe('measuring');
  try {
    state.probe = await publish('/v1/whip/me/probe', state.stream);
    if (state.probeStopped) return; // joined while the probe was being answered
    const measured = await measureProbe(state.probe.pc);
    if (measured) setProbe(measured.verdict, measured);
    else setProbe('failed');
  } catch (error) {
    setProbe(error.reason === 'probe_limit' ? 'limit' : 'failed');
  } finally {
    stopProbe();
    state.probing = false;
  }
}

// The camera does not share the link with a probe still measuring: joining ends it.
function stopProbe() {
  state.probeStopped = true;
  if (state.probe) state.probe.close();
  state.probe = null;
}

// "I moved to Wi-Fi": what the browser says now, else the drop-down, then the devices again.
async function recheckNetwork() {
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  guessNetwork();
  if (!$('network-ask').hidden) $('network').focus();
  await checkDevices();
}

async function measureGateway() {
  $('check-rtt').textContent = t('cand_net_measuring');
  try {
    const ms = await gatewayRtt('/v1/me');
    $('check-rtt').textContent = `${ms} ms`;
    $('check-rtt').dataset.ms = String(ms);
  } catch {
    $('check-rtt').textContent = t('failed');
  }
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
    measureGateway();
    const video = state.advice.video;
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: video.width, height: video.height, frameRate: video.fps },
    });
    $('preview').srcObject = state.stream;
    state.devicesOk = Boolean(state.stream.getVideoTracks().length && state.stream.getAudioTracks().length);
    updateJoin();
    mark('check-camera', state.stream.getVideoTracks().length > 0);
    mark('check-microphone', state.stream.getAudioTracks().length > 0);
    if (state.devicesOk) runProbe();
  } catch (error) {
    mark('check-camera', false);
    mark('check-microphone', false);
    fail(error);
  }
}

async function join() {
  clearError();
  stopWaiting();
  stopProbe();
  if (state.network === 'cellular' && !state.mobileOk) {
    show('check-step');
    $('mobile-continue').focus();
    return;
  }
  try {
    // A `reconnect` journaled before this join is none of this page's media's business.
    state.reconnectSeen = (await post('/v1/me/join', { network: state.network })).event_id;
  } catch (error) {
    if (error.status === 403 && error.reason === 'not_started') {
      await waitForStart().catch(fail);
    } else if (error.status === 403 && error.reason === 'too_late') {
      waitForReadmission();
    } else if (error.status === 403 && error.reason === 'exam_over') {
      over();
    } else if (consentLost(error)) {
      await loadMe().catch(fail); // a new policy version: back to the policy step
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
    if (consentLost(error)) await loadMe().catch(fail);
    else fail(error);
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
    const link = await linkFor(() => publish('/v1/whip/me/camera', state.stream));
    if (!link) return;
    state.camera = link;
    link.pc.addEventListener('connectionstatechange', onConnectionState);
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

// A media link of this session: one that is ready only after the session ended (logout,
// the exam's end, the proctor's) is closed at once rather than kept, and `logout` waits
// for those still being set up, so that nothing sends or listens after it.
function linkFor(setUp) {
  const epoch = state.epoch;
  const ready = (async () => {
    const link = await setUp();
    if (epoch === state.epoch) return link;
    await link.close();
    return null;
  })();
  state.pending.add(ready);
  ready.finally(() => state.pending.delete(ready)).catch(() => {});
  return ready;
}

// The session is over: no more heartbeats, retries or media; say so and stay.
function ended() {
  state.epoch += 1;
  state.ended = true;
  clearInterval(state.timer);
  stopWaiting();
  setConnection('ended');
  if (state.camera) state.camera.close();
  state.camera = null;
  if (state.screen) stopScreen(state.screen);
  if (state.talkback === 'pending') state.talkback = null;
  else if (state.talkback) state.talkback.close();
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
    state.help.update(room);
    onReconnect(room.reconnect);
    onConnectionState(); // back from offline with the media link still up: say so
    measureMedia();
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

// Stream ids ("ms-seq") in order, as numbers.
function newer(id, than) {
  if (!than) return true;
  const [a, b] = [id, than].map((value) => value.split('-').map(Number));
  return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
}

// The room was told to reconnect (its media shard drains): publish again now, on the
// shard the gateway gives the room next, and hear the talk-back from there.
function onReconnect(told) {
  if (!told || !newer(told.id, state.reconnectSeen) || state.ended) return;
  state.reconnectSeen = told.id;
  if (told.plane && told.plane !== 'media') return;
  state.failures = 0;
  state.retryAt = Date.now();
  connect().catch(() => {}); // connect() shows the state; the next tick tries again
  if (state.screen) republishScreen(state.screen).catch(() => {});
  if (state.talkback && state.talkback !== 'pending') stopListening(state.talkback);
}

async function listen() {
  const epoch = state.epoch;
  state.talkback = 'pending';
  try {
    const link = await linkFor(() => watch('/v1/whep/me/talkback', ['audio'], (track) => {
      $('talkback-audio').srcObject = new MediaStream([track]);
      setTalkback(true);
      track.addEventListener('ended', () => stopListening(link));
    }));
    if (!link) return;
    state.talkback = link;
    link.pc.addEventListener('connectionstatechange', () => {
      if (['failed', 'closed', 'disconnected'].includes(link.pc.connectionState)) stopListening(link);
    });
  } catch {
    // Nobody talks yet (404 not_publishing): try at the next tick, if still this session.
    if (epoch === state.epoch) state.talkback = null;
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
    const link = await linkFor(() => publish('/v1/whip/me/screen', stream));
    if (!link) {
      stream.getTracks().forEach((track) => track.stop());
      return;
    }
    link.stream = stream;
    state.screen = link;
    setScreen(true);
    // The browser's own "stop sharing" ends the track.
    stream.getVideoTracks()[0].addEventListener('ended', () => stopScreen(state.screen));
    watchScreen(link);
  } catch (error) {
    fail(error);
  }
}

function watchScreen(link) {
  link.pc.addEventListener('connectionstatechange', () => {
    if (['failed', 'closed'].includes(link.pc.connectionState)) stopScreen(link);
  });
}

// The same shared screen on a new session (it replaces the old one on the server).
async function republishScreen(old) {
  const link = await linkFor(() => publish('/v1/whip/me/screen', old.stream));
  if (!link) return;
  link.stream = old.stream;
  if (state.screen !== old) {
    link.close(); // stopped meanwhile
    return;
  }
  state.screen = link;
  watchScreen(link);
  old.pc.close(); // the server ended it as the new one replaced it: no DELETE
}

function stopScreen(link) {
  if (!link || state.screen !== link) return;
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

// The live link's round trip and sending rate, at each heartbeat.
async function measureMedia() {
  const pc = state.camera && state.camera.pc;
  if (!pc || pc.connectionState !== 'connected') return;
  const measured = await mediaQuality(pc, state.quality).catch(() => null);
  if (!measured) return;
  state.quality = measured.sample;
  if (measured.rtt === null || measured.kbps === null) return;
  $('quality').dataset.rtt = String(measured.rtt);
  $('quality').dataset.kbps = String(measured.kbps);
  renderQuality();
}

function renderQuality() {
  const { rtt, kbps } = $('quality').dataset;
  if (rtt === undefined) return;
  $('quality').textContent = t('cand_quality_value').replace('{rtt}', rtt).replace('{kbps}', kbps);
}

// Logging out: the media sessions are ended while the session still allows it, then the
// session; the page goes back to the login form with nothing running.
async function logout() {
  clearError();
  $('logout').disabled = true;
  const links = [state.camera, state.screen, state.talkback !== 'pending' && state.talkback];
  await Promise.all(links.filter(Boolean).map((link) => link.close()));
  ended();
  await Promise.allSettled([...state.pending]); // each closes itself: its session ended
  try {
    await logOut();
  } catch (error) {
    fail(error);
  }
  state.face.stop();
  state.help.reset();
  hidePairing();
  for (const id of ['preview', 'face-preview']) $(id).srcObject = null;
  Object.assign(state, { me: null, stream: null, camera: null, talkback: null, ended: false,
    screen: null, failures: 0, retryAt: 0, devicesOk: false, mobileOk: false, quality: null,
    reconnectSeen: null });
  delete $('check-probe').dataset.state;
  $('check-probe').textContent = '';
  delete $('quality').dataset.rtt;
  $('quality').textContent = '';
  $('join').disabled = true;
  $('logout').hidden = true;
  $('logout').disabled = false;
  $('login-form').reset();
  show('login-step');
}

function start() {
  probeRow();
  state.face = new FaceCheck(join);
  state.help = new Help();
  install($('lang'), () => {
    state.face.render();
    state.help.render();
    renderPairing();
    renderQuality();
    renderProbe();
    guessNetwork();
  });
  $('login-form').addEventListener('submit', login);
  $('policy-form').addEventListener('submit', consent);
  $('network').addEventListener('change', () => onNetwork().catch(fail));
  $('check').addEventListener('click', checkDevices);
  $('join').addEventListener('click', join);
  wireUpload($('photo-form'));
  wireUpload($('whiteboard-form'));
  $('logout').addEventListener('click', logout);
  $('mobile-continue').addEventListener('click', acceptMobile);
  $('mobile-recheck').addEventListener('click', () => recheckNetwork().catch(fail));
  $('pair').addEventListener('click', () => showPairing().catch(fail));
  onConnectionChange(() => {
    guessNetwork();
    onNetwork().catch(fail);
  });
  $('share-screen').addEventListener('click', shareScreen);
  window.addEventListener('offline', () => setConnection('offline'));
  window.addEventListener('online', () => { state.retryAt = 0; state.failures = 0; });
  guessNetwork();
  // Already logged in (the cookie survived a reload): skip the login form.
  loadMe().catch(() => show('login-step'));
}

start();
