// The phone as the candidate's side camera: the pairing token comes in the link's
// fragment (`#token=...`, never sent to a server by the browser), the camera facing away
// from the candidate (the desk), published by WHIP to /v1/whip/me/side with the token as
// Bearer and the phone's own `Examday-Device` id (actors.media.pairing: the first publish
// binds the token to that id, and only that phone may publish with it again).
//
// This page has no session cookie: every call carries the token itself, so it cannot use
// common/webrtc.js's cookie-authenticated publish.
import '/phone/strings.js';
import { fetchAdmitted } from '/common/http.js';
import { install, t } from '/common/i18n.js';
import { iceServersFrom } from '/common/webrtc.js';

const WHIP = '/v1/whip/me/side';
const DEVICE_KEY = 'examday-device';
const GATHER_LIMIT_MS = 5000;
const $ = (id) => document.getElementById(id);
const state = { token: null, stream: null, pc: null, location: null };

// 32 random bytes, URL-safe base64 (43 characters): the id the pairing binds to, made once
// and kept, so that a reloaded page is still the same device.
function deviceId() {
  let id = localStorage.getItem(DEVICE_KEY);
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    id = btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    localStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${state.token}`, 'Examday-Device': deviceId(), ...extra };
}

function setState(key) {
  const el = $('state');
  el.dataset.state = key;
  el.dataset.i18n = `phone_state_${key}`;
  el.textContent = t(el.dataset.i18n);
  el.className = { live: 'status', failed: 'bad' }[key] || 'warn';
}

function fail(reason) {
  $('error').textContent = `${t('error')}: ${reason}`;
  $('error').hidden = false;
  setState('failed');
}

function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_LIMIT_MS); // bounded, as in common/webrtc.js
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

async function iceServers() {
  try {
    const response = await fetchAdmitted(WHIP, { method: 'OPTIONS', credentials: 'omit', headers: headers() });
    return iceServersFrom(response.headers.get('Link'));
  } catch {
    return [];
  }
}

async function start() {
  $('error').hidden = true;
  $('start').disabled = true;
  setState('connecting');
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { facingMode: { ideal: 'environment' }, width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15 } },
    });
    $('preview').srcObject = state.stream;
    const pc = new RTCPeerConnection({ iceServers: await iceServers(), bundlePolicy: 'max-bundle' });
    state.pc = pc;
    for (const track of state.stream.getTracks()) {
      pc.addTransceiver(track, { direction: 'sendonly', streams: [state.stream] });
    }
    pc.addEventListener('connectionstatechange', () => {
      if (state.pc !== pc) return;
      if (pc.connectionState === 'connected') setState('live');
      else if (['failed', 'disconnected', 'closed'].includes(pc.connectionState)) setState('failed');
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const response = await fetchAdmitted(WHIP, {
      method: 'POST',
      credentials: 'omit',
      headers: headers({ 'Content-Type': 'application/sdp' }),
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) {
      let reason = `http_${response.status}`;
      try {
        reason = (await response.json()).reason || reason;
      } catch {
        // not problem+json: the status is the reason
      }
      throw new Error(reason);
    }
    state.location = response.headers.get('Location');
    await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
    $('start').hidden = true;
    $('stop').hidden = false;
    $('stop').focus();
  } catch (error) {
    await stop(false);
    fail(error.message);
  } finally {
    $('start').disabled = false;
  }
}

async function stop(say = true) {
  const { pc, stream, location } = state;
  Object.assign(state, { pc: null, stream: null, location: null });
  if (pc) pc.close();
  if (stream) stream.getTracks().forEach((track) => track.stop());
  $('preview').srcObject = null;
  $('stop').hidden = true;
  $('start').hidden = false;
  if (say) setState('stopped');
  if (location) {
    try {
      await fetch(location, { method: 'DELETE', credentials: 'omit', headers: headers() });
    } catch {
      // the shard ends a session whose peer went away by itself
    }
  }
}

function begin() {
  install($('lang'));
  state.token = new URLSearchParams(window.location.hash.slice(1)).get('token');
  if (!state.token) {
    $('no-token').hidden = false;
    $('start').disabled = true;
    return;
  }
  $('start').addEventListener('click', start);
  $('stop').addEventListener('click', () => stop());
}

begin();
