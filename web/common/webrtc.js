// WHIP (publish) and WHEP (watch) from a browser: the ICE servers the endpoint links
// (TURN with short-lived credentials), one offer sent after gathering completes (no
// trickle), the answer set, DELETE to stop. Offers and the ICE servers' OPTIONS that a
// full gateway refused at the door are sent again (`http.js`).

import { fetchAdmitted } from '/common/http.js';

const GATHER_LIMIT_MS = 5000;

// Link header values split at top-level commas (a quoted credential may hold one).
function linkValues(header) {
  const values = [];
  let current = '';
  let quoted = false;
  let bracketed = false;
  for (const char of header) {
    if (char === '"' && !bracketed) quoted = !quoted;
    else if (char === '<' && !quoted) bracketed = true;
    else if (char === '>' && !quoted) bracketed = false;
    if (char === ',' && !quoted && !bracketed) {
      values.push(current);
      current = '';
    } else {
      current += char;
    }
  }
  if (current.trim()) values.push(current);
  return values;
}

// RTCIceServer entries from `Link: <turn:...>; rel="ice-server"; username="..";
// credential=".."` (RFC 9725 section 4.6).
export function iceServersFrom(header) {
  if (!header) return [];
  const servers = [];
  for (const value of linkValues(header)) {
    const url = /^\s*<([^>]*)>/.exec(value);
    if (!url) continue;
    const params = {};
    for (const match of value.slice(url[0].length).matchAll(/;\s*([\w-]+)\s*=\s*("([^"]*)"|[^;]*)/g)) {
      params[match[1].toLowerCase()] = match[3] !== undefined ? match[3] : match[2].trim();
    }
    if (params.rel !== 'ice-server') continue;
    const server = { urls: url[1] };
    if (params.username !== undefined) server.username = params.username;
    if (params.credential !== undefined) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}

// The endpoint answers an authenticated OPTIONS with the same Links as its 201, so that
// the first offer already carries relay candidates: a candidate whose network blocks UDP
// connects at the first try. No answer, no servers: host candidates still work nearby.
async function linkedIceServers(url) {
  try {
    const response = await fetchAdmitted(url, { method: 'OPTIONS', credentials: 'same-origin' });
    return iceServersFrom(response.headers.get('Link'));
  } catch {
    return [];
  }
}

function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    // Bounded: host candidates come at once, a relay's within a round trip or two to
    // the TURN server; an unreachable server must not hold the offer back for ever.
    const timer = setTimeout(resolve, GATHER_LIMIT_MS);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

async function negotiate(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const response = await fetchAdmitted(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/sdp' },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) {
    let reason = `http_${response.status}`;
    try {
      reason = (await response.json()).reason || reason;
    } catch {
      // an answer that is not problem+json keeps the status as its reason
    }
    const error = new Error(reason);
    error.reason = reason;
    error.status = response.status;
    throw error;
  }
  const location = response.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
  return location;
}

export class MediaLink {
  constructor(pc, location) {
    this.pc = pc;
    this.location = location;
  }

  async close() {
    this.pc.close();
    if (!this.location) return;
    const location = this.location;
    this.location = null;
    try {
      await fetch(location, { method: 'DELETE', credentials: 'same-origin' });
    } catch {
      // the server ends sessions whose peer went away by itself
    }
  }
}

export async function publish(url, stream) {
  const iceServers = await linkedIceServers(url);
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  for (const track of stream.getTracks()) {
    pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  }
  try {
    return new MediaLink(pc, await negotiate(pc, url));
  } catch (error) {
    pc.close();
    throw error;
  }
}

export async function watch(url, kinds, onTrack) {
  const iceServers = await linkedIceServers(url);
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  for (const kind of kinds) pc.addTransceiver(kind, { direction: 'recvonly' });
  pc.addEventListener('track', (event) => onTrack(event.track, pc));
  try {
    return new MediaLink(pc, await negotiate(pc, url));
  } catch (error) {
    pc.close();
    throw error;
  }
}
