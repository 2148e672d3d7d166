// Every room of a chief proctor's (or organiser's) exams at a glance: counts of present,
// absent and disconnected candidates, open help requests and incidents, and a button to
// open the room. Counts only, never videos: one room's tiles are watched at a time.
import { get } from '/common/http.js';
import { t } from '/common/i18n.js';

const REFRESH_MS = 15000;
const MAX_EXAMS = 20;
const MAX_ROOMS = 200; // per exam
const COLUMNS = ['candidates', 'joined', 'absent', 'disconnected', 'help', 'incidents'];

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const encode = encodeURIComponent;

// The overview's room, in the columns' names; a room whose shard is moving has no counts.
function summaryOf(room) {
  return {
    candidates: room.roster, joined: room.present, absent: room.absent,
    disconnected: room.disconnected, help: room.help, incidents: room.incidents_open,
  };
}

export class Overview {
  constructor(container, exams, { open, fail }) {
    this.container = container;
    this.exams = exams.slice(0, MAX_EXAMS);
    this.open = open;
    this.fail = fail;
    this.rooms = new Map(); // exam -> [room names]
    this.summaries = new Map(); // 'exam/room' -> summary
    this.timer = null;
    this.busy = false;
    this.closed = false;
    this.shown = false;
  }

  // Refreshes while the rooms step shows, and stops when it does not.
  visible(shown) {
    if (this.closed || shown === this.shown) return;
    this.shown = shown;
    clearInterval(this.timer);
    this.timer = null;
    if (!shown || !this.exams.length) return;
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  // One paged overview per exam (`GET /v1/exams/{exam}/overview`), not one request per
  // room: a chief proctor of 200 rooms would otherwise send 200 every refresh.
  async refresh() {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const exam of this.exams) {
        const names = [];
        let after = null;
        do {
          const query = after ? `?after=${encode(after)}` : '';
          const page = await get(`/v1/exams/${encode(exam)}/overview${query}`);
          for (const room of page.rooms) {
            names.push(room.room);
            this.summaries.set(`${exam}/${room.room}`, room.unavailable ? undefined : summaryOf(room));
          }
          after = page.next;
        } while (after && names.length < MAX_ROOMS && !this.closed);
        this.rooms.set(exam, names.slice(0, MAX_ROOMS));
      }
      if (!this.closed) this.render();
    } catch (error) {
      if (!this.closed) this.fail(error);
    } finally {
      this.busy = false;
    }
  }

  render() {
    // A refresh rebuilds the tables: the keyboard's place on an "open" button is kept.
    const focused = document.activeElement && this.container.contains(document.activeElement)
      ? document.activeElement.dataset.room : null;
    this.container.replaceChildren(...this.exams.filter((exam) => this.rooms.has(exam)).map((exam) => {
      const head = el('tr', {}, el('th', { scope: 'col', textContent: t('con_room') }),
        ...COLUMNS.map((column) => el('th', { scope: 'col', textContent: t(`con_${column}`) })),
        el('th', { scope: 'col', textContent: t('con_open_room') }));
      const rows = this.rooms.get(exam).map((name) => this.row(exam, name));
      return el('table', { className: 'overview' },
        el('caption', { textContent: `${t('con_overview_exam')} ${exam}` }),
        el('thead', {}, head), el('tbody', {}, ...rows));
    }));
    this.container.dataset.rooms = String(this.summaries.size);
    if (focused) this.container.querySelector(`button[data-room="${CSS.escape(focused)}"]`)?.focus();
  }

  row(exam, name) {
    const key = `${exam}/${name}`;
    const summary = this.summaries.get(key);
    const cells = COLUMNS.map((column) => {
      const value = summary ? summary[column] : 0;
      const cell = el('td', { textContent: summary ? String(value) : '…' });
      cell.dataset.column = column;
      if (['help', 'incidents', 'disconnected'].includes(column) && value > 0) cell.className = 'alert';
      return cell;
    });
    const button = el('button', { type: 'button', textContent: t('con_open_room') });
    button.dataset.room = key;
    button.setAttribute('aria-label', `${t('con_open_room')} ${exam} / ${name}`);
    button.addEventListener('click', () => this.open(exam, name));
    const tr = el('tr', {}, el('th', { scope: 'row', textContent: name }), ...cells, el('td', {}, button));
    tr.dataset.room = key;
    tr.dataset.help = summary ? String(summary.help) : '0';
    return tr;
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    this.timer = null;
  }
}
