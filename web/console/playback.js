// Recorded playback around an incident: the candidate's camera segments from a minute
// before to a minute after, played one after the other in one <video>. Segments are WebM
// files the gateway serves to the room's staff (the session cookie goes with the request).
import { get } from '/common/http.js';
import { t } from '/common/i18n.js';

const BEFORE_S = 60;
const AFTER_S = 60;
const $ = (id) => document.getElementById(id);

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

export class Player {
  constructor(base, fail) {
    this.base = base;
    this.fail = fail;
    this.segments = [];
    this.current = -1;
    $('playback').addEventListener('ended', () => this.play(this.current + 1));
    $('player-close').addEventListener('click', () => this.close());
  }

  async open(incident) {
    const cid = encodeURIComponent(incident.cid);
    const range = `start=${Math.max(0, incident.at - BEFORE_S)}&end=${incident.at + AFTER_S}`;
    $('player').hidden = false;
    $('player').dataset.incident = incident.id;
    $('player-title').textContent = `${incident.cid.slice(0, 8)} · ${incident.incident} · ${clock(incident.at)}`;
    try {
      const listed = await get(`${this.base}/candidates/${cid}/recordings?${range}`);
      this.segments = listed.segments.filter((s) => s.source === 'camera').sort((a, b) => a.start - b.start);
    } catch (error) {
      this.segments = [];
      this.fail(error);
    }
    $('segments').replaceChildren(...this.segments.map((segment, index) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = `${t('segment')} ${index + 1}: ${clock(segment.start)}–${clock(segment.end)}`;
      button.addEventListener('click', () => this.play(index));
      const li = document.createElement('li');
      li.append(button);
      return li;
    }));
    $('no-recording').hidden = this.segments.length > 0;
    this.play(0);
    $('player').scrollIntoView({ block: 'nearest' });
  }

  play(index) {
    const video = $('playback');
    if (index >= this.segments.length) {
      this.current = -1;
      return;
    }
    this.current = index;
    for (const [i, li] of [...$('segments').children].entries()) {
      li.firstChild.setAttribute('aria-current', i === index ? 'true' : 'false');
    }
    video.src = this.segments[index].url;
    video.play().catch(() => {}); // a paused player stays usable with its controls
  }

  close() {
    const video = $('playback');
    video.pause();
    video.removeAttribute('src');
    video.load();
    $('player').hidden = true;
  }
}
