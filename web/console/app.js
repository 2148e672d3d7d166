// The proctor's console: log in, pick a room (a chief proctor or organiser from an overview
// of every room of their exams), watch its candidates with their names, numbers and
// enrolment photos, follow the room's event stream, list incidents and play the recording
// around one, decide face reviews, answer help requests, see uploads, talk back
// (push-to-talk), send messages, log out.
import '/console/strings.js';
import { get, logOut, post, staffLogIn } from '/common/http.js';
import { install, t } from '/common/i18n.js';
import { Help } from '/console/help.js';
import { Incidents } from '/console/incidents.js';
import { Overview } from '/console/overview.js';
import { Player } from '/console/playback.js';
import { Reviews } from '/console/reviews.js';
import { pushToTalk, stopTalking } from '/console/talk.js';
import { Tile } from '/console/tiles.js';

const TICK_MS = 1000;
const $ = (id) => document.getElementById(id);
const room = { base: null, tiles: new Map(), events: null, lastId: '0-0', timer: null,
  incidents: null, reviews: null, player: null, help: null, skew: 0 };
let overview = null;

function fail(error) {
  $('error').textContent = `${t('error')}: ${error.reason || error.message}`;
  $('error').hidden = false;
}

function show(step) {
  for (const id of ['login-step', 'rooms-step', 'room-step']) $(id).hidden = id !== step;
  $('logout').hidden = step === 'login-step';
  if (overview) overview.visible(step === 'rooms-step');
  const heading = $(step).querySelector('h2');
  heading.tabIndex = -1;
  heading.focus();
}

async function login(event) {
  event.preventDefault();
  $('error').hidden = true;
  $('status').textContent = '';
  try {
    await staffLogIn($('username'), $('password'));
    await loadRooms();
  } catch (error) {
    fail(error);
  }
}

async function loadRooms() {
  const me = await get('/v1/staff/me');
  // Chief proctors and organisers work every room of their exams: an overview of counts.
  const wide = ['chief-proctor', 'organiser'].includes(me.role) ? me.exams : [];
  if (overview) overview.close();
  overview = new Overview($('overview'), wide, { open: (exam, name) => openRoom(exam, name).catch(fail), fail });
  $('overview-step').hidden = wide.length === 0;
  $('mine').hidden = me.rooms.length === 0 && wide.length > 0;
  $('rooms').replaceChildren(...me.rooms.map((key) => {
    const [exam, name] = key.split('/');
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = `${exam} / ${name}`;
    button.dataset.room = key;
    button.addEventListener('click', () => openRoom(exam, name).catch(fail));
    li.append(button);
    pendingReviews(li, `${roomBase(exam, name)}/face-reviews`);
    return li;
  }));
  show('rooms-step');
}

// A badge on each room with face reviews waiting for a proctor.
async function pendingReviews(li, url) {
  try {
    const { reviews } = await get(url);
    const pending = reviews.filter((review) => review.status === 'pending').length;
    if (!pending) return;
    const badge = document.createElement('span');
    badge.className = 'badge reviews';
    badge.textContent = String(pending);
    badge.setAttribute('aria-label', `${t('face_reviews')}: ${pending}`);
    li.append(' ', badge);
  } catch {
    // organisers' rooms and rooms of ended exams have none to show
  }
}

function roomBase(exam, name) {
  return `/v1/exams/${encodeURIComponent(exam)}/rooms/${encodeURIComponent(name)}`;
}

function tile(cid) {
  let found = room.tiles.get(cid);
  if (!found) {
    found = new Tile(room.base.replace('/v1/exams', '/v1/whep/exams'), cid,
      { flag, end: endSession, talk: talkTo, ask: askForScreen, readmit });
    room.tiles.set(cid, found);
    $('tiles').append(found.el);
  }
  return found;
}

async function openRoom(exam, name) {
  closeRoom();
  room.base = roomBase(exam, name);
  $('room-h').textContent = `${exam} / ${name}`;
  if (room.player) room.player.base = room.base;
  else room.player = new Player(room.base, fail);
  room.incidents = new Incidents($('incidents'), room.base,
    { tile, play: (incident) => room.player.open(incident), fail });
  room.reviews = new Reviews($('reviews'), room.base, fail, (cid, status) => tile(cid).setReview(status));
  room.help = new Help($('help-list'), room.base, { tile, who: (cid) => tile(cid).label(), fail });
  const [view, people, uploads] = await Promise.all([get(room.base), get(`${room.base}/roster`),
    get(`${room.base}/uploads`)]);
  for (const cid of view.roster) tile(cid);
  for (const person of people.candidates) {
    tile(person.cid).setIdentity(person, `${room.base}/candidates/${encodeURIComponent(person.cid)}/photo`);
  }
  for (const upload of uploads.uploads) tile(upload.candidate).addUpload(upload);
  room.help.load(view.help || {});
  for (const [cid, presence] of Object.entries(view.presence)) tile(cid).update(presence);
  // The gateway's cut-offs, on this page's clock.
  room.skew = view.now * 1000 - Date.now();
  for (const [cid, at] of Object.entries(view.late_after)) tile(cid).setLateAfter(at * 1000 - room.skew);
  for (const cid of view.ended) if (room.tiles.has(cid)) tile(cid).setEnded(true);
  for (const incident of Object.values(view.incidents)) room.incidents.add(incident);
  for (const message of view.messages) addMessage(message);
  await room.reviews.load();
  await post(`${room.base}/presence`);
  show('room-step');
  follow(view.last_event_id);
  room.timer = setInterval(() => room.tiles.forEach((each) => {
    each.ensureWatching();
    each.offerReadmission();
  }), TICK_MS);
  room.tiles.forEach((each) => each.ensureWatching());
}

// Back to the rooms (or to another room): the room's streams, videos and timers end here.
function closeRoom() {
  if (!room.base) return;
  const base = room.base;
  room.base = null;
  if (room.events) room.events.close();
  room.events = null;
  clearInterval(room.timer);
  room.tiles.forEach((each) => each.close());
  room.tiles.clear();
  stopTalking();
  if (room.help) room.help.close();
  if (room.player) room.player.close();
  for (const id of ['tiles', 'incidents', 'reviews', 'help-list', 'messages']) $(id).replaceChildren();
  post(`${base}/presence?leaving=true`).catch(() => {});
}

const RECONNECT_MS = 1000;

function newer(id, than) {
  const [a, b] = id.split('-').map(BigInt);
  const [c, d] = than.split('-').map(BigInt);
  return a > c || (a === c && b > d);
}

function follow(after) {
  // The gateway reads `?after=` before Last-Event-ID, so EventSource's own retry would
  // replay from the first position: reopen from the last event seen instead.
  if (!room.base) return; // the room was closed while a reconnect waited
  room.lastId = after;
  const events = new EventSource(`${room.base}/events?after=${encodeURIComponent(after)}`);
  room.events = events;
  const on = (kind, handle) => events.addEventListener(kind, (e) => {
    if (!newer(e.lastEventId, room.lastId)) return;
    room.lastId = e.lastEventId;
    handle(JSON.parse(e.data), e.lastEventId);
  });
  const presence = ['joined', 'heartbeat', 'network', 'disconnected', 'left', 'ended'];
  for (const kind of presence) {
    on(kind, (event) => {
      const each = tile(event.cid);
      each.update({ state: kind === 'heartbeat' || kind === 'network' ? 'joined' : kind,
        network: event.network });
      each.ensureWatching();
      if (kind === 'ended') each.setEnded(true);
    });
  }
  on('readmitted', (event) => tile(event.cid).setEnded(false));
  on('accommodation', (event) => {
    const each = tile(event.cid);
    if (each.lateAfter !== null) each.setLateAfter(event.late_after * 1000 - room.skew);
  });
  on('incident', (event, id) => room.incidents.add({ id, status: 'open', ...event }));
  on('incident_reviewed', (event) => room.incidents.reviewed(event));
  on('face_review_requested', (event) => room.reviews.requested(event).catch(fail));
  on('face_review', (event) => room.reviews.decided(event));
  on('message', (message) => {
    addMessage(message);
    if (message.to) room.help.settled(message.to);
  });
  on('help', (event, id) => room.help.raised({ id, ...event }));
  on('help_lowered', (event) => room.help.settled(event.cid));
  on('upload', (event) => tile(event.cid).addUpload({ id: event.upload, data_class: event.class,
    at: event.at, url: `${room.base}/uploads/${encodeURIComponent(event.upload)}` }));
  events.addEventListener('reset', () => window.location.reload());
  events.addEventListener('error', () => {
    events.close();
    if (room.events === events) setTimeout(() => follow(room.lastId), RECONNECT_MS);
  });
}

function addMessage(message) {
  const li = document.createElement('li');
  const to = message.to && room.tiles.has(message.to) ? ` → ${tile(message.to).label()}` : '';
  li.textContent = `${message.proctor || ''}${to}: ${message.text}`;
  $('messages').prepend(li);
}

async function sendMessage(event) {
  event.preventDefault();
  try {
    await post(`${room.base}/messages`, { text: $('message').value });
    $('message').value = '';
  } catch (error) {
    fail(error);
  }
}

function flag(cid) {
  post(`${room.base}/incidents`, { candidate: cid, type: 'flagged_by_proctor', severity: 'medium' }).catch(fail);
}

// Both languages: the candidate's page may be set to either.
function askForScreen(cid) {
  post(`${room.base}/messages`, { to: cid, text: '请共享您的屏幕 / Please share your screen' }).catch(fail);
}

function endSession(cid) {
  post(`${room.base}/candidates/${encodeURIComponent(cid)}/end`).catch(fail);
}

function readmit(cid) {
  post(`${room.base}/candidates/${encodeURIComponent(cid)}/readmit`).catch(fail);
}

function talkTo(button, cid) {
  const whip = () => `${room.base.replace('/v1/exams', '/v1/whip/exams')}/talkback`;
  pushToTalk(button, cid ? () => `${whip()}?to=${encodeURIComponent(cid)}` : whip, fail);
}

async function logout() {
  closeRoom();
  if (overview) overview.close();
  overview = null;
  try {
    await logOut();
  } catch (error) {
    fail(error);
  }
  $('error').hidden = true;
  show('login-step');
  $('status').textContent = t('con_logged_out');
}

function start() {
  install($('lang'), () => {
    room.tiles.forEach((each) => {
      each.render();
      each.renderUploads();
    });
    if (room.incidents) room.incidents.rerender();
    if (room.reviews) room.reviews.rerender();
    if (room.help) room.help.rerender();
    if (overview) overview.render();
  });
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('back').addEventListener('click', () => {
    closeRoom();
    loadRooms().catch(fail);
  });
  $('message-form').addEventListener('submit', sendMessage);
  talkTo($('talk'), null);
  window.addEventListener('pagehide', () => {
    room.tiles.forEach((each) => each.close());
    stopTalking();
    if (overview) overview.close();
  });
  loadRooms().catch(() => show('login-step'));
}

start();
