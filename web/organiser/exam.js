// One exam in the organiser console: its panels, the live overview (refreshed every few
// seconds while it is shown), the settings (edit, extend, cancel), the roster import with
// its per-row errors, the candidates of a room (accommodation, removal) and the staff.
import { call, get, post } from '/common/http.js';
import { t } from '/common/i18n.js';
import { Privacy } from '/organiser/privacy.js';
import {
  $, button, clearMessages, confirmButton, fail, listItem, localInput, note, renderRows, when,
} from '/organiser/ui.js';

const OVERVIEW_MS = 5000;
const OVERVIEW_PAGES = 20;
const COUNTS = ['roster', 'present', 'absent', 'disconnected', 'gone', 'incidents_open',
  'face_reviews_pending'];

export class ExamView {
  constructor(id, { examState, refreshList }) {
    this.id = id;
    this.base = `/v1/exams/${encodeURIComponent(id)}`;
    this.examState = examState;
    this.refreshList = refreshList;
    this.exam = null;
    this.overview = null;
    this.rosterErrors = null;
    this.rosterReport = null;
    this.candidates = null;
    this.timer = null;
    this.privacy = new Privacy(this);
    this.listeners = [];
    this.on('tabs', 'click', (event) => {
      const target = event.target.closest('button[data-panel]');
      if (target) this.showPanel(target.dataset.panel);
    });
    this.on('overview-refresh', 'click', () => this.loadOverview().catch(fail));
    this.on('edit-form', 'submit', (event) => this.edit(event));
    this.on('extend-form', 'submit', (event) => this.extend(event));
    this.on('cancel-exam', 'click', () => {
      $('cancel-confirm').hidden = false;
      $('cancel-confirm').focus();
    });
    this.on('cancel-confirm', 'click', () => this.cancel());
    this.on('roster-form', 'submit', (event) => this.importRoster(event));
    this.on('candidates-form', 'submit', (event) => {
      event.preventDefault();
      this.loadCandidates().catch(fail);
    });
    this.on('proctor-form', 'submit', (event) => this.assignProctor(event));
    this.on('exam-staff-form', 'submit', (event) => this.assignExamStaff(event));
  }

  // Listeners on the page's fixed elements, removed when another exam is opened.
  on(id, type, handler) {
    $(id).addEventListener(type, handler);
    this.listeners.push(() => $(id).removeEventListener(type, handler));
  }

  close() {
    clearInterval(this.timer);
    this.timer = null;
    for (const remove of this.listeners) remove();
    this.privacy.close();
  }

  async open() {
    await this.loadExam();
    await this.loadOverview();
    this.fillRooms();
    $('roster-errors').hidden = true;
    $('roster-result').hidden = true;
    $('candidates').hidden = true;
    $('cancel-confirm').hidden = true;
    this.showPanel('panel-overview', false);
  }

  rerender() {
    if (this.exam) this.renderExam();
    if (this.overview) this.renderOverview();
    if (this.rosterErrors) this.renderRosterErrors();
    if (this.rosterReport && !$('roster-result').hidden) this.renderRosterReport();
    if (this.candidates) this.renderCandidates();
    this.privacy.rerender();
  }

  showPanel(id, focus = true) {
    for (const tab of $('tabs').querySelectorAll('button[data-panel]')) {
      const current = tab.dataset.panel === id;
      tab.setAttribute('aria-current', current ? 'page' : 'false');
      $(tab.dataset.panel).hidden = !current;
    }
    clearInterval(this.timer);
    this.timer = null;
    if (id === 'panel-overview') {
      this.timer = setInterval(() => this.loadOverview().catch(() => {}), OVERVIEW_MS);
    }
    const loaders = {
      'panel-staff': () => this.loadStaff(),
      'panel-privacy': () => this.privacy.load(),
      'panel-policy': () => this.privacy.loadPolicy(),
      'panel-overview': () => this.loadOverview(),
    };
    loaders[id]?.().catch(fail);
    if (focus) {
      clearMessages();
      const heading = $(id).querySelector('h3');
      heading.tabIndex = -1;
      heading.focus();
    }
  }

  // -- the exam's record -----------------------------------------------------------

  async loadExam() {
    this.exam = await get(this.base);
    this.renderExam();
  }

  renderExam() {
    const exam = this.exam;
    const status = this.examState(exam);
    $('exam-h').textContent = `${exam.id} · ${exam.title}`;
    $('exam-state').textContent =
      `${t(`org_state_${status}`)} · ${when(exam.starts_at)} – ${when(exam.ends_at)}`;
    $('exam-state').dataset.state = status;
    $('policy-current').textContent = exam.policy_version;
    const closed = status === 'cancelled' || status === 'over';
    for (const id of ['cancel-exam', 'cancel-confirm']) $(id).disabled = closed;
    if (document.activeElement?.id !== 'edit-title') {
      $('edit-title').value = exam.title;
      $('edit-starts').value = localInput(exam.starts_at);
      $('edit-ends').value = localInput(exam.ends_at);
    }
  }

  async edit(event) {
    event.preventDefault();
    clearMessages();
    // Only what changed is sent: a running exam's start is not sent back unchanged.
    const body = {};
    const title = $('edit-title').value.trim();
    if (title !== this.exam.title) body.title = title;
    for (const [field, input] of [['starts_at', 'edit-starts'], ['ends_at', 'edit-ends']]) {
      if ($(input).value !== localInput(this.exam[field])) {
        body[field] = new Date($(input).value).toISOString();
      }
    }
    try {
      this.exam = await call('PATCH', this.base, body);
      this.renderExam();
      note('org_saved');
      this.refreshList().catch(() => {});
    } catch (error) {
      fail(error);
    }
  }

  async extend(event) {
    event.preventDefault();
    clearMessages();
    try {
      this.exam = await post(`${this.base}/extend`, { minutes: Number($('extend-minutes').value) });
      this.renderExam();
      note('org_extended');
    } catch (error) {
      fail(error);
    }
  }

  async cancel() {
    clearMessages();
    try {
      this.exam = await post(`${this.base}/cancel`);
      $('cancel-confirm').hidden = true;
      this.renderExam();
      note('org_cancelled');
      this.refreshList().catch(() => {});
    } catch (error) {
      fail(error);
    }
  }

  // -- the live overview -----------------------------------------------------------

  // Every room: the gateway answers MAX rooms at a time and names the room to page on.
  async loadOverview() {
    let page = await get(`${this.base}/overview`);
    const rooms = [...page.rooms];
    const totals = { ...page.totals };
    for (let more = 0; page.next && more < OVERVIEW_PAGES; more += 1) {
      page = await get(`${this.base}/overview?after=${encodeURIComponent(page.next)}`);
      rooms.push(...page.rooms);
      for (const field of COUNTS) totals[field] += page.totals[field];
    }
    this.overview = { ...page, rooms, totals };
    this.renderOverview();
    const table = $('overview');
    table.dataset.updates = String(Number(table.dataset.updates || 0) + 1);
  }

  renderOverview() {
    const { rooms, totals } = this.overview;
    renderRows($('overview').tBodies[0], rooms, (room) => {
      if (room.unavailable) {
        return [room.room, room.roster, { text: t('org_unavailable'), state: 'unavailable' }];
      }
      const counts = COUNTS.slice(1).map(
        (field) => ({ text: String(room[field]), state: room[field] > 0 ? field : 'none' }));
      return [room.room, String(room.roster), ...counts, room.proctors.join(', ')];
    });
    const foot = document.createElement('tr');
    for (const text of [t('org_total'), ...COUNTS.map((field) => String(totals[field])), '']) {
      const cell = document.createElement(foot.children.length ? 'td' : 'th');
      if (!foot.children.length) cell.scope = 'row';
      cell.textContent = text;
      foot.append(cell);
    }
    $('overview').tFoot.replaceChildren(foot);
    $('overview-time').textContent = new Date(this.overview.now * 1000).toLocaleTimeString();
  }

  fillRooms() {
    const rooms = (this.overview?.rooms || []).map((room) => room.room);
    for (const id of ['cand-room', 'proctor-room']) {
      const select = $(id);
      const chosen = select.value;
      select.replaceChildren(...rooms.map((room) => new Option(room, room)));
      if (rooms.includes(chosen)) select.value = chosen;
    }
  }

  // -- the roster and the candidates ---------------------------------------------------

  async importRoster(event) {
    event.preventDefault();
    clearMessages();
    const file = $('roster-file').files[0];
    if (!file) return;
    // Not /common/http.js: the refusal's body carries the per-row errors shown here.
    const response = await fetch(`${this.base}/roster`, {
      method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'text/csv' }, body: file,
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      this.rosterErrors = body.errors || [];
      this.rosterReport = null;
      this.renderRosterErrors();
      $('roster-result').hidden = true;
      fail({ reason: body.reason || `http_${response.status}`, message: body.detail });
      return;
    }
    this.rosterErrors = null;
    $('roster-errors').hidden = true;
    this.rosterReport = body;
    this.renderRosterReport();
    note('org_imported');
    $('roster-form').reset();
    await this.loadOverview();
    this.fillRooms();
  }

  renderRosterReport() {
    const report = this.rosterReport;
    $('roster-result').textContent = `${t('org_imported')}: ${report.rows} ${t('org_rows')} · `
      + `${t('org_new')} ${report.created} · ${t('org_updated_rows')} ${report.updated} · `
      + `${t('org_unchanged')} ${report.unchanged}`;
    $('roster-result').hidden = false;
  }

  renderRosterErrors() {
    renderRows($('roster-errors').tBodies[0], this.rosterErrors, (row) => [
      String(row.line), row.column, rowReason(row.reason),
    ]);
    $('roster-errors').hidden = false;
  }

  async loadCandidates() {
    const room = $('cand-room').value;
    if (!room) return;
    const found = await get(`${this.base}/candidates?room=${encodeURIComponent(room)}`);
    this.candidates = found.candidates;
    this.renderCandidates();
  }

  renderCandidates() {
    renderRows($('candidates').tBodies[0], this.candidates, (candidate) => {
      const minutes = document.createElement('input');
      minutes.type = 'number';
      minutes.min = '0';
      minutes.max = '1440';
      minutes.value = String(candidate.extra_minutes);
      minutes.setAttribute('aria-label', `${t('org_extra_minutes')} ${candidate.candidate_no}`);
      const save = button(t('org_save'), () => this.accommodate(candidate, minutes),
        { name: candidate.candidate_no });
      const remove = confirmButton(t('org_remove'), t('org_remove_confirm'),
        () => this.remove(candidate), candidate.candidate_no);
      remove.dataset.candidate = candidate.candidate;
      const extra = document.createElement('span');
      extra.append(minutes, ' ', save);
      return [candidate.candidate_no, candidate.name, extra, remove];
    });
    $('candidates').hidden = false;
  }

  async accommodate(candidate, input) {
    clearMessages();
    try {
      await call('PUT', `${this.base}/candidates/${candidate.candidate}/accommodation`,
        { extra_minutes: Number(input.value) });
      candidate.extra_minutes = Number(input.value);
      note('org_saved');
    } catch (error) {
      fail(error);
    }
  }

  async remove(candidate) {
    clearMessages();
    try {
      await call('DELETE', `${this.base}/candidates/${candidate.candidate}`);
      note('org_removed', candidate.candidate_no);
      await this.loadCandidates();
      await this.loadOverview();
    } catch (error) {
      fail(error);
    }
  }

  // -- staff -------------------------------------------------------------------------

  async loadStaff() {
    await this.loadOverview();
    this.fillRooms();
    const items = [];
    for (const room of this.overview.rooms) {
      for (const username of room.proctors) {
        items.push(listItem(`${room.room}: ${username}`, button(t('org_unassign'),
          () => this.unassignProctor(room.room, username), { name: `${room.room} ${username}` })));
      }
    }
    $('room-proctors').replaceChildren(...items);
    const staff = await get(`${this.base}/staff`);
    const roles = { 'chief-proctor': 'org_role_chief', examiner: 'org_role_examiner' };
    $('exam-staff').replaceChildren(...Object.entries(staff).flatMap(([role, names]) =>
      names.map((username) => listItem(`${t(roles[role] || role)}: ${username}`,
        button(t('org_unassign'), () => this.unassignExamStaff(username), { name: username })))));
  }

  async assignProctor(event) {
    event.preventDefault();
    clearMessages();
    const room = $('proctor-room').value;
    const username = $('proctor-username').value.trim();
    try {
      await call('PUT', `${this.base}/rooms/${encodeURIComponent(room)}/proctors/${encodeURIComponent(username)}`);
      $('proctor-username').value = '';
      note('org_assigned', `${room} · ${username}`);
      await this.loadStaff();
    } catch (error) {
      fail(error);
    }
  }

  async unassignProctor(room, username) {
    clearMessages();
    try {
      await call('DELETE', `${this.base}/rooms/${encodeURIComponent(room)}/proctors/${encodeURIComponent(username)}`);
      note('org_unassigned', `${room} · ${username}`);
      await this.loadStaff();
    } catch (error) {
      fail(error);
    }
  }

  async assignExamStaff(event) {
    event.preventDefault();
    clearMessages();
    const username = $('exam-staff-username').value.trim();
    try {
      await call('PUT', `${this.base}/staff/${encodeURIComponent(username)}`);
      $('exam-staff-username').value = '';
      note('org_assigned', username);
      await this.loadStaff();
    } catch (error) {
      fail(error);
    }
  }

  async unassignExamStaff(username) {
    clearMessages();
    try {
      await call('DELETE', `${this.base}/staff/${encodeURIComponent(username)}`);
      note('org_unassigned', username);
      await this.loadStaff();
    } catch (error) {
      fail(error);
    }
  }
}

// A roster row's problem in words: `duplicate_of_line_N` names the first line.
function rowReason(reason) {
  const duplicate = /^duplicate_of_line_(\d+)$/.exec(reason);
  if (duplicate) return t('org_row_duplicate').replace('{line}', duplicate[1]);
  const key = `org_row_${reason}`;
  const text = t(key);
  return text === key ? reason : text;
}
