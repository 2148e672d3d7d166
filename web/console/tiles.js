// One tile per candidate: who they are (name, number, enrolment photo), live camera by WHEP,
// presence, network, face review state, open-incident badge, a raised hand, their uploads.
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
// The newest uploads shown on a tile; the rest are counted, not loaded.
const SHOWN_UPLOADS = 4;

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
    this.identity = null; // { name, candidate_no, has_photo } once the roster is read
    this.help = null; // the open help request, if any
    this.uploads = [];
    this.video = document.createElement('video');
    this.video.className = 'camera';
    Object.assign(this.video, { autoplay: true, muted: true, playsInline: true });
    // The enrolment photo beside the camera: what the proctor compares the face with.
    this.photo = document.createElement('img');
    this.photo.className = 'enrolment';
    this.photo.hidden = true;
    this.noPhoto = document.createElement('span');
    this.noPhoto.className = 'pill no-photo';
    this.noPhoto.hidden = true;
    const faces = document.createElement('div');
    faces.className = 'faces';
    faces.append(this.video, this.photo);
    const meta = document.createElement('div');
    meta.className = 'meta';
    this.name = document.createElement('strong');
    this.name.className = 'who';
    this.number = document.createElement('span');
    this.number.className = 'candidate-no';
    this.state = document.createElement('span');
    this.network = document.createElement('span');
    this.network.className = 'pill network';
    this.badge = document.createElement('span');
    this.badge.className = 'badge';
    this.badge.hidden = true;
    this.review = null; // the face review's status, when there is one
    this.face = document.createElement('span');
    this.face.hidden = true;
    this.hand = document.createElement('span');
    this.hand.className = 'hand-badge';
    this.hand.hidden = true;
    meta.append(this.name, this.number, this.state, this.network, this.face, this.badge, this.hand,
      this.noPhoto);
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
    this.uploadList = document.createElement('ul');
    this.uploadList.className = 'uploads plain';
    this.uploadList.hidden = true;
    this.el.append(faces, this.more, meta, controls, sources, this.uploadList);
    this.render();
  }

  // What to call the candidate: their name and number once known, else a short id.
  label() {
    if (!this.identity) return this.cid.slice(0, 8);
    return `${this.identity.name} (${this.identity.candidate_no})`;
  }

  setIdentity(identity, photoUrl) {
    this.identity = identity;
    if (identity.has_photo) {
      this.photo.src = photoUrl;
      this.photo.hidden = false;
    }
    this.render();
  }

  setHelp(request) {
    this.help = request;
    this.render();
  }

  // An upload of the candidate (from the room's list or an `upload` event), newest first.
  addUpload(upload) {
    if (this.uploads.some((known) => known.id === upload.id)) return;
    this.uploads.push(upload);
    this.uploads.sort((a, b) => b.at - a.at);
    this.renderUploads();
  }

  renderUploads() {
    this.uploadList.hidden = this.uploads.length === 0;
    this.uploadList.dataset.count = String(this.uploads.length);
    this.uploadList.setAttribute('aria-label', `${t('con_uploads')}: ${this.uploads.length}`);
    this.uploadList.replaceChildren(...this.uploads.slice(0, SHOWN_UPLOADS).map((upload) => {
      const kind = upload.data_class === 'whiteboards' ? 'con_whiteboards' : 'con_photos';
      const when = new Date(upload.at * 1000).toLocaleTimeString();
      const img = document.createElement('img');
      img.src = upload.url;
      img.alt = `${t(kind)} · ${this.label()} · ${when}`;
      const link = document.createElement('a');
      link.href = upload.url;
      link.target = '_blank';
      link.rel = 'noopener';
      link.dataset.upload = upload.id;
      link.append(img);
      const li = document.createElement('li');
      li.append(link);
      return li;
    }));
  }

  update(presence) {
    if (presence.state) this.presence = presence.state;
    if (presence.network) this.network.textContent = presence.network;
    this.render();
  }

  render() {
    const label = this.label();
    this.el.setAttribute('aria-label', `${t('con_tile_of')} ${label}`);
    this.video.setAttribute('aria-label', label);
    this.name.textContent = this.identity ? this.identity.name : label;
    this.number.textContent = this.identity ? this.identity.candidate_no : '';
    this.number.hidden = !this.identity;
    this.photo.alt = `${t('con_photo_of')} · ${label}`;
    this.noPhoto.textContent = t('con_no_photo');
    this.noPhoto.hidden = !this.identity || this.identity.has_photo;
    this.hand.hidden = !this.help;
    this.hand.textContent = this.help ? t(this.help.kind === 'message' ? 'con_help_message' : 'con_hand') : '';
    this.el.dataset.help = this.help ? 'open' : '';
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
