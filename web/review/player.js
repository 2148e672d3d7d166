// A candidate's whole recorded session, played across segment boundaries. The console's
// Player (/console/playback.js) plays one source around one incident, in its own page's
// elements; here the clock is the session's wall time: the camera leads, the screen and
// side sources follow it to the same moment, and the seek bar and markers move that clock.
// Segments are WebM files the gateway serves to the exam's reviewers (session cookie).
import { t } from '/common/i18n.js';

const $ = (id) => document.getElementById(id);
const FOLLOW_DRIFT_S = 1.5; // a following source is re-seeked only when this far off

export function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

// The segment of `segments` (oldest first) playing at wall time `at`: the one that holds
// it, else the next one to start (a gap while the candidate was offline), else -1.
function segmentAt(segments, at) {
  const holding = segments.findIndex((s) => s.start <= at && at < s.end);
  if (holding >= 0) return holding;
  return segments.findIndex((s) => s.start > at);
}

class Track {
  constructor(video, segments) {
    this.video = video;
    this.segments = segments;
    this.index = -1;
  }

  // Show the moment `at` (wall time); resolves once the video can seek there.
  load(index, at) {
    const segment = this.segments[index];
    this.index = index;
    const offset = Math.max(0, at - segment.start);
    if (this.video.dataset.segment === String(index) && this.video.readyState >= 1) {
      this.video.currentTime = offset;
      return;
    }
    this.video.dataset.segment = String(index);
    this.video.src = segment.url;
    this.video.addEventListener('loadedmetadata', () => {
      if (offset > 0.05) this.video.currentTime = offset;
    }, { once: true });
  }

  wallTime() {
    if (this.index < 0) return null;
    return this.segments[this.index].start + this.video.currentTime;
  }
}

export class SessionPlayer {
  constructor(onTime) {
    this.onTime = onTime;
    this.main = null;
    this.followers = [];
    this.start = 0;
    this.end = 0;
    $('camera').addEventListener('ended', () => this.next());
    $('camera').addEventListener('timeupdate', () => this.tick());
    $('seek').addEventListener('input', () => this.seek(this.start + Number($('seek').value), false));
  }

  open(session) {
    this.close();
    const sources = session.sources || {};
    const lead = sources.camera ? 'camera' : Object.keys(sources)[0];
    this.start = session.start || 0;
    this.end = session.end || 0;
    $('no-session').hidden = Boolean(lead);
    $('stage').hidden = !lead;
    $('timeline').hidden = !lead;
    $('seek').max = String(Math.max(0, this.end - this.start).toFixed(1));
    this.main = lead ? new Track($('camera'), sources[lead]) : null;
    this.followers = [];
    for (const name of ['screen', 'side']) {
      const present = Boolean(sources[name] && sources[name].length) && name !== lead;
      $(`${name}-box`).hidden = !present;
      if (present) this.followers.push(new Track($(name), sources[name]));
    }
    this.renderSegments();
    if (this.main) this.play(0);
  }

  renderSegments() {
    const segments = this.main ? this.main.segments : [];
    $('segment-list').replaceChildren(...segments.map((segment, index) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.index = String(index);
      button.textContent = `${t('segment')} ${index + 1}: ${clock(segment.start)}–${clock(segment.end)}`;
      button.addEventListener('click', () => this.play(index));
      const li = document.createElement('li');
      li.append(button);
      return li;
    }));
  }

  // The segment list in the page's current language.
  relabel() {
    this.renderSegments();
    if (this.main) this.markCurrent(this.main.index);
  }

  // Play the main source's segment `index` from its start.
  play(index) {
    if (!this.main || index >= this.main.segments.length) return;
    this.seek(this.main.segments[index].start, true);
  }

  // Move the whole session to wall time `at` and keep playing.
  seek(at, moveBar = true) {
    if (!this.main) return;
    const index = segmentAt(this.main.segments, at);
    if (index < 0) return;
    this.main.load(index, at);
    this.markCurrent(index);
    this.main.video.play().catch(() => {}); // a paused player stays usable with its controls
    this.follow(at, true);
    this.show(at, moveBar);
  }

  next() {
    if (!this.main) return;
    const index = this.main.index + 1;
    if (index < this.main.segments.length) this.play(index);
  }

  tick() {
    const at = this.main && this.main.wallTime();
    if (at === null || at === undefined) return;
    this.follow(at, false);
    this.show(at, true);
  }

  follow(at, force) {
    for (const track of this.followers) {
      const index = segmentAt(track.segments, at);
      if (index < 0 || track.segments[index].start > at) {
        track.video.pause(); // nothing recorded of this source at this moment
        continue;
      }
      const drift = Math.abs((track.wallTime() ?? -1e9) - at);
      if (force || index !== track.index || drift > FOLLOW_DRIFT_S) track.load(index, at);
      if (!this.main.video.paused) track.video.play().catch(() => {});
    }
  }

  show(at, moveBar) {
    if (moveBar) $('seek').value = String(Math.max(0, at - this.start).toFixed(1));
    $('seek').setAttribute('aria-valuetext', clock(at));
    $('clock').textContent = `${clock(at)} / ${clock(this.end)}`;
    this.onTime(at);
  }

  markCurrent(index) {
    $('camera').dataset.segment = String(index);
    for (const button of $('segment-list').querySelectorAll('button')) {
      button.setAttribute('aria-current', button.dataset.index === String(index) ? 'true' : 'false');
    }
  }

  close() {
    for (const id of ['camera', 'screen', 'side']) {
      const video = $(id);
      video.pause();
      video.removeAttribute('src');
      delete video.dataset.segment;
      video.load();
    }
    this.main = null;
    this.followers = [];
  }
}
