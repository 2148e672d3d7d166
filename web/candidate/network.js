// What the device and network check measures, rather than asks: the browser's own view of
// its network (the Network Information API, where it has one), the round trip to the
// gateway, and, once the camera is live, the media link's round trip and sending rate
// from getStats (the same path the exam's video takes; see app.js for why no separate
// probe session is opened before the join).

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
