// WHIP (publish) and WHEP (watch) from a browser: no ICE servers, host candidates only,
// one offer sent after gathering completes (no trickle), the answer set, DELETE to stop.

const GATHER_LIMIT_MS = 5000;

function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    // Bounded: with no STUN/TURN, host candidates come at once; never wait forever.
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
  const response = await fetch(url, {
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
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
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
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
  for (const kind of kinds) pc.addTransceiver(kind, { direction: 'recvonly' });
  pc.addEventListener('track', (event) => onTrack(event.track, pc));
  try {
    return new MediaLink(pc, await negotiate(pc, url));
  } catch (error) {
    pc.close();
    throw error;
  }
}
