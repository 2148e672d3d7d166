// The reviewers' page: examiners, chief proctors and organisers of an exam log in, work
// its review queue (candidates by risk, highest first), play a candidate's whole session
// with the timeline's markers, decide (cleared, warning, voided) and, as examiners, score
// against the exam's rubric. After a decision from the pending queue, the next candidate
// of the queue opens by itself, so that the queue is worked top-down.
import '/review/strings.js';
import { call, get, logOut, post, staffLogIn } from '/common/http.js';
import { install, t } from '/common/i18n.js';
import { SessionPlayer, clock } from '/review/player.js';

const $ = (id) => document.getElementById(id);
const QUEUE_PAGE = 50;
const state = { me: null, exam: null, base: null, session: null, rubric: null, queue: [] };
const player = new SessionPlayer((at) => highlightMarker(at));

function fail(error) {
  $('error').textContent = `${t('error')}: ${error.reason || error.message}`;
  $('error').hidden = false;
}

function notify(key) {
  $('notice').textContent = t(key);
  $('notice').hidden = false;
}

function show(step) {
  for (const id of ['login-step', 'exams-step', 'queue-step', 'session-step']) $(id).hidden = id !== step;
  $('logout').hidden = step === 'login-step';
  const heading = $(step).querySelector('h2');
  heading.tabIndex = -1;
  heading.focus();
}

function short(cid) {
  return cid.slice(0, 8);
}

async function login(event) {
  event.preventDefault();
  $('error').hidden = true;
  try {
    await staffLogIn($('username'), $('password'));
    await loadExams();
  } catch (error) {
    fail(error);
  }
}

async function logout() {
  player.close();
  try {
    await logOut();
  } catch (error) {
    fail(error);
  }
  show('login-step');
}

async function loadExams() {
  state.me = await get('/v1/staff/me');
  $('exams').replaceChildren(...state.me.exams.map((exam) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = exam;
    button.dataset.exam = exam;
    button.addEventListener('click', () => openExam(exam).catch(fail));
    const li = document.createElement('li');
    li.append(button);
    return li;
  }));
  $('no-exams').hidden = state.me.exams.length > 0;
  show('exams-step');
}

async function openExam(exam) {
  state.exam = exam;
  state.base = `/v1/exams/${encodeURIComponent(exam)}`;
  $('queue-exam').textContent = exam;
  await loadQueue();
  show('queue-step');
}

function signals(entry) {
  const parts = [];
  for (const severity of ['high', 'medium', 'low', 'info']) {
    const count = entry.incidents[severity];
    if (count) parts.push(`${t(`rev_sig_${severity}`)} ${count}`);
  }
  if (entry.face_mismatches) parts.push(`${t('rev_sig_face')} ${entry.face_mismatches}`);
  if (entry.face_reviews_rejected) parts.push(`${t('rev_sig_face_rejected')} ${entry.face_reviews_rejected}`);
  if (entry.face_reviews_pending) parts.push(`${t('rev_sig_face_pending')} ${entry.face_reviews_pending}`);
  if (entry.disconnected_seconds >= 60) {
    parts.push(`${t('rev_sig_disconnected')} ${Math.floor(entry.disconnected_seconds / 60)}`);
  }
  if (entry.liveness_failed) parts.push(t('rev_sig_liveness'));
  return parts.join(' · ') || t('rev_sig_none');
}

function decisionText(decision) {
  return decision ? t(`rev_${decision.decision}`) : t('rev_pending');
}

async function loadQueue() {
  const status = $('queue-status').value;
  const queue = await get(`${state.base}/review/queue?status=${status}&limit=${QUEUE_PAGE}`);
  state.queue = queue.candidates;
  $('queue-rows').replaceChildren(...queue.candidates.map((entry, index) => {
    const row = document.createElement('tr');
    row.dataset.candidate = entry.candidate;
    const cells = [String(index + 1), short(entry.candidate), entry.room, String(entry.score),
      signals(entry), decisionText(entry.decision)];
    for (const text of cells) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.append(cell);
    }
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'open';
    button.textContent = t('rev_open');
    button.setAttribute('aria-label', `${t('rev_open')} ${short(entry.candidate)}`);
    button.addEventListener('click', () => openCandidate(entry.candidate).catch(fail));
    const action = document.createElement('td');
    action.append(button);
    row.append(action);
    return row;
  }));
  $('queue-empty').hidden = queue.candidates.length > 0;
}

async function openCandidate(cid) {
  $('error').hidden = true;
  const session = await get(`${state.base}/review/candidates/${encodeURIComponent(cid)}/session`);
  state.session = session;
  $('session-h').dataset.candidate = cid;
  renderHeading(session);
  renderMarkers(session);
  renderDecision(session);
  renderScores(session);
  show('session-step');
  player.open(session);
}

function renderHeading(session) {
  $('session-h').textContent = `${t('rev_candidate')} ${short(session.candidate)} · ${t('rev_room')} ${session.room}`;
  $('risk').textContent = `${t('rev_score')} ${session.risk.score} · ${signals(session.risk)}`;
}

function renderMarkers(session) {
  const span = Math.max(1, (session.end || 0) - (session.start || 0));
  const ticks = [];
  $('markers').replaceChildren(...session.markers.map((marker) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.marker = marker.id;
    button.dataset.kind = marker.kind;
    button.dataset.at = String(marker.at);
    const detail = [marker.incident, marker.severity, marker.status].filter(Boolean).join(' · ');
    button.textContent = `${clock(marker.at)} · ${t(`rev_marker_${marker.kind}`)}${detail ? ` · ${detail}` : ''}`;
    button.addEventListener('click', () => player.seek(marker.at));
    const tick = document.createElement('span');
    tick.className = marker.kind;
    const share = Math.min(1, Math.max(0, (marker.at - (session.start || 0)) / span));
    tick.style.left = `${(share * 100).toFixed(2)}%`; // CSSOM, which the CSP allows
    ticks.push(tick);
    const li = document.createElement('li');
    li.append(button);
    return li;
  }));
  $('ticks').replaceChildren(...ticks);
  $('no-markers').hidden = session.markers.length > 0;
}

// The marker last passed is the current one, for people who follow the list.
function highlightMarker(at) {
  let current = null;
  for (const button of $('markers').querySelectorAll('button')) {
    if (Number(button.dataset.at) <= at + 0.5) current = button;
  }
  for (const button of $('markers').querySelectorAll('button')) {
    button.setAttribute('aria-current', button === current ? 'true' : 'false');
  }
}

function renderDecision(session, keep = false) {
  if (!keep) $('decision-form').reset();
  $('history').replaceChildren(...session.history.slice().reverse().map((entry) => {
    const li = document.createElement('li');
    li.textContent = `${clock(entry.at)} · ${t(`rev_${entry.decision}`)} · ${t('rev_by')} ${entry.by}${entry.note ? ` · ${entry.note}` : ''}`;
    return li;
  }));
}

// `keep`: what the examiner typed stays (a language switch re-renders the labels only).
function renderScores(session, keep = false) {
  const typed = new Map(keep
    ? [...$('criteria').querySelectorAll('input')].map((input) => [input.dataset.criterion, input.value])
    : []);
  const comment = keep ? $('comment').value : null;
  const examiner = state.me.role === 'examiner';
  $('scores-form').hidden = !examiner;
  $('sheets').replaceChildren(...session.sheets.map((sheet) => {
    const li = document.createElement('li');
    const points = Object.entries(sheet.points).map(([id, value]) => `${id} ${value}`).join(', ');
    li.textContent = `${sheet.examiner} · ${t('rev_total')} ${sheet.total} · ${points}${sheet.comment ? ` · ${sheet.comment}` : ''}`;
    return li;
  }));
  state.rubric = session.rubric;
  $('no-rubric').hidden = Boolean(session.rubric);
  $('save-scores').disabled = !session.rubric;
  const mine = session.sheets.find((sheet) => sheet.examiner === state.me.username);
  const english = document.documentElement.lang === 'en';
  $('criteria').replaceChildren(...(session.rubric || []).map((criterion) => {
    const row = document.createElement('div');
    row.className = 'criterion';
    const label = document.createElement('label');
    label.htmlFor = `crit-${criterion.id}`;
    label.textContent = english ? criterion.label.en : criterion.label.zh;
    const input = document.createElement('input');
    input.id = `crit-${criterion.id}`;
    input.type = 'number';
    input.min = '0';
    input.max = String(criterion.max_points);
    input.step = '0.5';
    input.required = true;
    input.dataset.criterion = criterion.id;
    if (typed.has(criterion.id)) input.value = typed.get(criterion.id);
    else if (mine && criterion.id in mine.points) input.value = String(mine.points[criterion.id]);
    input.addEventListener('input', total);
    const max = document.createElement('span');
    max.textContent = `${t('rev_points_of')} ${criterion.max_points}`;
    row.append(label, input, max);
    return row;
  }));
  $('comment').value = comment ?? (mine ? mine.comment : '');
  total();
}

function total() {
  let sum = 0;
  for (const input of $('criteria').querySelectorAll('input')) sum += Number(input.value) || 0;
  $('total').textContent = String(sum);
}

function candidateUrl(path) {
  return `${state.base}/review/candidates/${encodeURIComponent(state.session.candidate)}/${path}`;
}

async function decide(event) {
  event.preventDefault();
  $('error').hidden = true;
  const chosen = $('decision-form').querySelector('input[name="decision"]:checked');
  try {
    await post(candidateUrl('decision'), { decision: chosen.value, note: $('note').value });
    notify('rev_decision_saved');
    const decided = state.session.candidate;
    await loadQueue();
    // Top-down: the next candidate of the queue comes up.
    const next = state.queue.find((entry) => entry.candidate !== decided && !entry.decision);
    if (next) {
      await openCandidate(next.candidate);
    } else {
      player.close();
      show('queue-step');
    }
  } catch (error) {
    fail(error);
  }
}

async function score(event) {
  event.preventDefault();
  $('error').hidden = true;
  const scores = {};
  for (const input of $('criteria').querySelectorAll('input')) scores[input.dataset.criterion] = Number(input.value);
  try {
    await call('PUT', candidateUrl('scores'), { scores, comment: $('comment').value });
    notify('rev_scores_saved');
    const session = await get(candidateUrl('session'));
    state.session.sheets = session.sheets;
    renderScores(state.session);
  } catch (error) {
    fail(error);
  }
}

async function back() {
  player.close();
  await loadQueue();
  show('queue-step');
}

install($('lang'), () => {
  if (state.queue.length && !$('queue-step').hidden) loadQueue().catch(fail);
  if (state.session && !$('session-step').hidden) {
    renderHeading(state.session);
    renderMarkers(state.session);
    renderDecision(state.session, true);
    renderScores(state.session, true);
    player.relabel();
  }
});
$('login-form').addEventListener('submit', login);
$('logout').addEventListener('click', () => logout());
$('queue-status').addEventListener('change', () => loadQueue().catch(fail));
$('decision-form').addEventListener('submit', decide);
$('scores-form').addEventListener('submit', score);
$('back').addEventListener('click', () => back().catch(fail));
// A session still open (a reload) goes straight to the exams.
loadExams().catch(() => show('login-step'));
