// One tile per candidate: live camera by WHEP, presence, network, face review state,
// open-incident badge.
import { t } from '/common/i18n.js';
import { watch } from '/common/webrtc.js';

const ARM_MS = 5000; // "end session" asks for a second click within this time

function button(key, onClick) {
  const made = document.createElement('button');
  made.type = 'button';
  made.dataset.i18n = key;
  made.textContent = t(key);
  if (onClick) made.addEventListener('click', onClick);
  return made;
}

// Retry soon after a candidate joins (their camera follows within a second or two), then
// slow down, so an absent camera costs one request per 5 s per tile.
const FAST_RETRY_MS = 1000;
const SLOW_RETRY_MS = 5000;
const FAST_TRIES = 10;

export class Tile {
  // actions: flag(cid), end(cid), talk(button, cid) (push-to-talk to this candidate),
  // ask(cid) (a message asking for the screen), readmit(cid) (a candidate a proctor ended,
  // or one too late to join by themselves).
  constructor(base, cid, actions) {
    this.base = base;
    this.extra = null; // { source, link, button }: the screen or side camera, on demand
    this.url = `${base}/candidates/${encodeURIComponent(cid)}?sources=camera`;
    this.cid = cid;
    this.link = null;
    this.pending = false;
    this.triedAt = 0;
    this.tries = 0;
    this.presence = 'absent';
    this.incidents = 0;
    this.endedMark = false; // ended by a proctor, not readmitted yet
    this.lateAfter = null; // when a first join becomes too late (this page's clock, ms)
    this.el = document.createElement('article');
    this.el.className = 'tile';
    this.el.dataset.cid = cid;
    this.el.setAttribute('aria-label', cid.slice(0, 8));
    this.video = document.createElement('video');
    this.video.className = 'camera';
    Object.assign(this.video, { autoplay: true, muted: true, playsInline: true });
    this.video.setAttribute('aria-label', cid.slice(0, 8));
    const meta = document.createElement('div');
    meta.className = 'meta';
    this.name = document.createElement('strong');
    this.name.textContent = cid.slice(0, 8);
    this.state = document.createElement('span');
    this.network = document.createElement('span');
    this.network.className = 'pill network';
    this.badge = document.createElement('span');
    this.badge.className = 'badge';
    this.badge.hidden = true;
    this.review = null; // the face review's status, when there is one
    this.face = document.createElement('span');
    this.face.hidden = true;
    meta.append(this.name, this.state, this.network, this.face, this.badge);
    const controls = document.createElement('div');
    controls.className = 'actions';
    const talk = button('talk_one');
    talk.classList.add('talk');
    actions.talk(talk, cid);
    this.end = button('end_session', () => this.confirmEnd(actions));
    this.end.classList.add('end', 'danger');
    this.readmit = button('readmit', () => {
      this.readmit.disabled = true;
      actions.readmit(cid);
    });
    this.readmit.classList.add('readmit');
    this.readmit.hidden = true;
    controls.append(button('flag', () => actions.flag(cid)), talk, this.end, this.readmit);
    this.more = document.createElement('video');
    Object.assign(this.more, { autoplay: true, muted: true, playsInline: true, hidden: true });
    this.more.className = 'more';
    const sources = document.createElement('div');
    sources.className = 'actions';
    for (const source of ['screen', 'side']) {
      const toggle = button(source);
      toggle.classList.add(source);
      toggle.setAttribute('aria-pressed', 'false');
      toggle.addEventListener('click', () => this.toggle(source, toggle));
      sources.append(toggle);
    }
    sources.append(button('ask_screen', () => actions.ask(cid)));
    this.el.append(this.video, this.more, meta, controls, sources);
    this.render();
  }

  update(presence) {
    if (presence.state) this.presence = presence.state;
    if (presence.network) this.network.textContent = presence.network;
    this.render();
  }

  render() {
    this.state.className = `pill presence ${this.presence}`;
    this.state.textContent = t(this.presence);
    this.state.dataset.state = this.presence;
    this.network.hidden = !this.network.textContent; // unknown until the first heartbeat
    this.badge.textContent = String(this.incidents);
    this.badge.hidden = this.incidents === 0;
    this.badge.setAttribute('aria-label', `${t('incidents')}: ${this.incidents}`);
    this.face.hidden = !this.review;
    this.face.className = `pill face ${this.review}`;
    this.face.dataset.review = this.review || '';
    this.face.textContent = this.review ? `${t('face_reviews')}: ${t(this.review)}` : '';
    this.offerReadmission();
  }

  // The readmit button: for a candidate a proctor ended, or one who has not come and is
  // now too late to join by themselves. Called on a timer too, as the cut-off passes.
  offerReadmission() {
    const late = this.presence === 'absent' && this.lateAfter !== null && Date.now() > this.lateAfter;
    const offer = this.endedMark || late;
    if (this.readmit.hidden === !offer) return;
    this.readmit.hidden = !offer;
    this.readmit.disabled = false;
  }

  setEnded(ended) {
    this.endedMark = ended;
    if (!ended) this.lateAfter = null; // readmitted: they may join late, too
    if (ended) {
      this.end.disabled = true;
    } else {
      this.end.disabled = false;
      this.end.dataset.armed = 'false';
      this.end.dataset.i18n = 'end_session';
      this.end.textContent = t('end_session');
    }
    this.render();
  }

  setLateAfter(at) {
    this.lateAfter = at;
    this.render();
  }

  setReview(status) {
    this.review = status;
    this.render();
  }

  // The first click arms the button; a second one within ARM_MS ends the session.
  confirmEnd(actions) {
    if (this.end.dataset.armed === 'true') {
      clearTimeout(this.armed);
      this.end.disabled = true;
      actions.end(this.cid);
      return;
    }
    this.end.dataset.armed = 'true';
    this.end.dataset.i18n = 'end_confirm';
    this.end.textContent = t('end_confirm');
    this.armed = setTimeout(() => {
      this.end.dataset.armed = 'false';
      this.end.dataset.i18n = 'end_session';
      this.end.textContent = t('end_session');
    }, ARM_MS);
  }

  addIncident(delta) {
    this.incidents = Math.max(0, this.incidents + delta);
    this.render();
  }

  // Called on every room event and on a timer: watch when present and not watching yet.
  async ensureWatching() {
    if (this.presence !== 'joined' || this.link || this.pending) return;
    const wait = this.tries < FAST_TRIES ? FAST_RETRY_MS : SLOW_RETRY_MS;
    if (Date.now() - this.triedAt < wait) return;
    this.pending = true;
    this.triedAt = Date.now();
    this.tries += 1;
    try {
      const link = await watch(this.url, ['video'], (track) => {
        this.video.srcObject = new MediaStream([track]);
        track.addEventListener('ended', () => this.drop(link));
      });
      this.link = link;
      this.tries = 0;
      link.pc.addEventListener('connectionstatechange', () => {
        if (['failed', 'closed'].includes(link.pc.connectionState)) this.drop(link);
      });
    } catch {
      // not publishing yet: the next event or tick tries again
    } finally {
      this.pending = false;
    }
  }

  // Watches the screen or the side camera in a second video, until asked again.
  async toggle(source, toggle) {
    const shown = this.extra;
    if (shown) this.hideMore();
    if (shown && shown.source === source) return;
    toggle.disabled = true;
    try {
      const url = `${this.base}/candidates/${encodeURIComponent(this.cid)}?sources=${source}`;
      const link = await watch(url, ['video'], (track) => {
        this.more.srcObject = new MediaStream([track]);
        this.more.hidden = false;
        track.addEventListener('ended', () => this.hideMore(link));
      });
      this.extra = { source, link, button: toggle };
      toggle.setAttribute('aria-pressed', 'true');
      link.pc.addEventListener('connectionstatechange', () => {
        if (['failed', 'closed'].includes(link.pc.connectionState)) this.hideMore(link);
      });
    } catch {
      toggle.dataset.i18n = 'not_shared'; // nothing published: say so for a moment
      toggle.textContent = t('not_shared');
      setTimeout(() => { toggle.dataset.i18n = source; toggle.textContent = t(source); }, ARM_MS);
    } finally {
      toggle.disabled = false;
    }
  }

  hideMore(link = null) {
    const shown = this.extra;
    if (!shown || (link && shown.link !== link)) return;
    this.extra = null;
    shown.button.setAttribute('aria-pressed', 'false');
    this.more.srcObject = null;
    this.more.hidden = true;
    shown.link.close();
  }

  drop(link) {
    if (this.link !== link) return;
    this.link = null;
    this.video.srcObject = null;
    link.close();
  }

  close() {
    if (this.link) this.drop(this.link);
    this.hideMore();
  }
}
