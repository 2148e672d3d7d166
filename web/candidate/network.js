// What the device and network check measures, rather than asks: the browser's own view of
// its network (the Network Information API, where it has one), the round trip to the
// gateway, and the media link itself: before the join on a short probe session to the
// room's media shard (POST /v1/whip/me/probe, never recorded nor forwarded), once live on
// the camera's session, both from getStats (round trip of the selected ICE pair, bytes
// sent), over the very path the exam's video takes.
import { sleep } from '/common/time.js';

const RTT_SAMPLES = 3;
const KNOWN_TYPES = { wifi: 'wifi', ethernet: 'ethernet', cellular: 'cellular', wimax: 'cellular' };

// { type, effectiveType, downlink } of navigator.connection; `type` is only what maps to
// the gateway's network names (desktop browsers leave it out: then the page asks).
export function connectionInfo() {
  const c = navigator.connection;
  if (!c) return null;
  return {
    type: KNOWN_TYPES[c.type] || null,
    effectiveType: c.effectiveType || null,
    downlink: typeof c.downlink === 'number' ? c.downlink : null,
  };
}

export function onConnectionChange(handler) {
  const c = navigator.connection;
  if (c && typeof c.addEventListener === 'function') c.addEventListener('change', handler);
}

// The median of a few small same-origin GETs, in milliseconds (never cached).
export async function gatewayRtt(path) {
  const samples = [];
  for (let i = 0; i < RTT_SAMPLES; i += 1) {
    const started = performance.now();
    const response = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
    await response.arrayBuffer();
    samples.push(performance.now() - started);
  }
  samples.sort((a, b) => a - b);
  return Math.round(samples[Math.floor(samples.length / 2)]);
}

// The selected ICE pair's round trip (ms) and the sending rate (kbit/s) since `previous`
// (the sample this returns, kept by the caller); null fields until there is a measure.
export async function mediaQuality(pc, previous) {
  const stats = [...(await pc.getStats()).values()];
  const byId = new Map(stats.map((s) => [s.id, s]));
  const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
  const pair = transport ? byId.get(transport.selectedCandidatePairId) : null;
  const bytes = stats.filter((s) => s.type === 'outbound-rtp').reduce((n, s) => n + (s.bytesSent || 0), 0);
  const sample = { bytes, at: performance.now() };
  const rtt = pair && typeof pair.currentRoundTripTime === 'number' ? Math.round(pair.currentRoundTripTime * 1000) : null;
  let kbps = null;
  if (previous && sample.at > previous.at) {
    kbps = Math.round(((sample.bytes - previous.bytes) * 8) / (sample.at - previous.at));
  }
  return { rtt, kbps, sample };
}

// The probe's verdict, thresholds in this one place: a link is `good` within both of
// `good`'s bounds, `weak` within `weak`'s, else `too_weak`. The exam's video is small
// (network advice: a few hundred kbit/s); a round trip past a second makes talk-back and
// reconnection sluggish.
export const PROBE_LIMITS = {
  good: { rttMs: 300, kbps: 250 },
  weak: { rttMs: 1000, kbps: 100 },
};
const PROBE_CONNECT_MS = 8000; // the shard ends a probe after 10 s: measure well before
const PROBE_MEASURE_MS = 3000;

export function probeVerdict(rtt, kbps) {
  for (const verdict of ['good', 'weak']) {
    const limit = PROBE_LIMITS[verdict];
    if (rtt <= limit.rttMs && kbps >= limit.kbps) return verdict;
  }
  return 'too_weak';
}

function connected(pc, within) {
  if (pc.connectionState === 'connected') return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), within);
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected') {
        clearTimeout(timer);
        resolve(true);
      } else if (['failed', 'closed'].includes(pc.connectionState)) {
        clearTimeout(timer);
        resolve(false);
      }
    });
  });
}

// { rtt, kbps, verdict } of a probe session's peer connection: the sending rate over
// PROBE_MEASURE_MS once connected, the round trip at its end; null if it never connected.
export async function measureProbe(pc) {
  if (!(await connected(pc, PROBE_CONNECT_MS))) return null;
  const first = await mediaQuality(pc, null);
  await sleep(PROBE_MEASURE_MS);
  const last = await mediaQuality(pc, first.sample);
  if (last.rtt === null || last.kbps === null) return null;
  return { rtt: last.rtt, kbps: last.kbps, verdict: probeVerdict(last.rtt, last.kbps) };
}
