// The organiser's console: log in, list and create exams and staff accounts, then manage
// one exam in panels (live overview, settings, roster and candidates, staff, data and
// holds, privacy policy). Every action is one call of the gateway's API; what it refuses
// is shown by its problem reason, in the page's language.
import '/organiser/strings.js';
import { get, logOut, post, staffLogIn } from '/common/http.js';
import { install, language, t } from '/common/i18n.js';
import { ExamView } from '/organiser/exam.js';
import {
  $, clearMessages, fail, localInput, note, relabelMessage, renderRows, when, whenSignedOut,
} from '/organiser/ui.js';

const state = { exams: [], view: null };

function show(step) {
  for (const id of ['login-step', 'exams-step', 'exam-step']) $(id).hidden = id !== step;
  $('logout').hidden = step === 'login-step';
  const heading = $(step).querySelector('h2');
  heading.tabIndex = -1;
  heading.focus();
}

export function examState(exam, now = Date.now()) {
  if (exam.cancelled_at) return 'cancelled';
  if (now >= Date.parse(exam.ends_at)) return 'over';
  return now >= Date.parse(exam.starts_at) ? 'running' : 'scheduled';
}

async function login(event) {
  event.preventDefault();
  clearMessages();
  try {
    const session = await staffLogIn($('username'), $('password'));
    if (session.role !== 'organiser') {
      await logOut();
      fail({ reason: 'organisers_only' });
      return;
    }
    await loadExams();
  } catch (error) {
    fail(error);
  }
}

async function logout() {
  clearMessages();
  state.view?.close();
  state.view = null;
  try {
    await logOut();
  } catch (error) {
    fail(error);
  }
  show('login-step');
}

async function loadExams() {
  const ids = await get('/v1/exams');
  state.exams = await Promise.all(ids.map((id) => get(`/v1/exams/${encodeURIComponent(id)}`)));
  renderExams();
  show('exams-step');
}

function renderExams() {
  $('no-exams').hidden = state.exams.length > 0;
  renderRows($('exam-list').tBodies[0], state.exams, (exam) => {
    const open = document.createElement('button');
    open.type = 'button';
    open.textContent = t('org_open');
    open.dataset.exam = exam.id;
    open.setAttribute('aria-label', `${t('org_open')} ${exam.id}`);
    open.addEventListener('click', () => openExam(exam.id).catch(fail));
    const status = examState(exam);
    return [exam.id, exam.title, when(exam.starts_at), when(exam.ends_at),
      { text: t(`org_state_${status}`), state: status }, open];
  });
}

async function openExam(id) {
  clearMessages();
  state.view?.close();
  state.view = new ExamView(id, { examState, refreshList: loadExamsQuietly });
  await state.view.open();
  show('exam-step');
}

async function loadExamsQuietly() {
  const ids = await get('/v1/exams');
  state.exams = await Promise.all(ids.map((id) => get(`/v1/exams/${encodeURIComponent(id)}`)));
  renderExams();
}

async function createExam(event) {
  event.preventDefault();
  clearMessages();
  const body = {
    id: $('new-id').value.trim(),
    title: $('new-title').value.trim(),
    starts_at: new Date($('new-starts').value).toISOString(),
    ends_at: new Date($('new-ends').value).toISOString(),
    region: $('new-region').value.trim(),
    room_capacity: Number($('new-capacity').value),
    policy_version: $('new-policy').value.trim(),
  };
  try {
    const exam = await post('/v1/exams', body);
    note('org_created');
    $('create-form').reset();
    defaultTimes();
    await loadExamsQuietly();
    await openExam(exam.id);
  } catch (error) {
    fail(error);
  }
}

async function createAccount(event) {
  event.preventDefault();
  clearMessages();
  try {
    const made = await post('/v1/staff', {
      username: $('acc-username').value.trim(),
      password: $('acc-password').value,
      role: $('acc-role').value,
    });
    $('account-form').reset();
    note('org_created', made.username);
  } catch (error) {
    fail(error);
  }
}

// A new exam is proposed for tomorrow morning, two hours long.
function defaultTimes() {
  const start = new Date();
  start.setDate(start.getDate() + 1);
  start.setHours(9, 0, 0, 0);
  $('new-starts').value = localInput(start.toISOString());
  $('new-ends').value = localInput(new Date(start.getTime() + 2 * 3600 * 1000).toISOString());
}

async function resume() {
  // A session cookie from an earlier visit: go straight to the exams.
  try {
    const me = await get('/v1/staff/me');
    if (me.role === 'organiser') await loadExams();
  } catch {
    // not logged in: stay on the login form
  }
}

$('login-form').addEventListener('submit', login);
$('logout').addEventListener('click', () => logout());
$('create-form').addEventListener('submit', createExam);
$('account-form').addEventListener('submit', createAccount);
$('back').addEventListener('click', () => {
  state.view?.close();
  state.view = null;
  clearMessages();
  loadExams().catch(fail);
});
install($('lang'), () => {
  document.documentElement.dataset.lang = language();
  renderExams();
  state.view?.rerender();
  relabelMessage();
});
whenSignedOut(() => {
  state.view?.close();
  state.view = null;
  if ($('login-step').hidden) show('login-step');
});
defaultTimes();
resume();
