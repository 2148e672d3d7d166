// The room's incident timeline: newest first, with the time, a confirm/dismiss review while
// open, and a "play" control for the recording around the incident.
import { post } from '/common/http.js';
import { t } from '/common/i18n.js';

const MAX_INCIDENTS = 200;

export class Incidents {
  constructor(list, base, { tile, play, fail }) {
    this.list = list;
    this.base = base;
    this.tile = tile; // cid -> Tile, for the open-incident badge
    this.play = play;
    this.fail = fail;
    this.items = new Map();
  }

  add(incident) {
    if (this.items.has(incident.id) || this.items.size >= MAX_INCIDENTS) return;
    const li = document.createElement('li');
    li.dataset.incident = incident.id;
    this.items.set(incident.id, { incident, li });
    if (incident.status === 'open') this.tile(incident.cid).addIncident(1);
    this.render(incident.id);
    // The timeline is newest first: events come in order, the room's state does not.
    const later = [...this.list.children].find((other) => this.items.get(other.dataset.incident).incident.at < incident.at);
    this.list.insertBefore(li, later || null);
  }

  reviewed(event) {
    const item = this.items.get(event.incident);
    if (!item || item.incident.status !== 'open') return;
    item.incident.status = event.decision;
    this.tile(item.incident.cid).addIncident(-1);
    this.render(event.incident);
  }

  render(id) {
    const { incident, li } = this.items.get(id);
    li.dataset.status = incident.status;
    const time = document.createElement('time');
    time.dateTime = new Date(incident.at * 1000).toISOString();
    time.textContent = new Date(incident.at * 1000).toLocaleTimeString();
    const text = ` · ${this.tile(incident.cid).label()} · ${incident.incident} · ${incident.severity} · ${incident.status} `;
    li.replaceChildren(time, text);
    if (incident.status === 'open') {
      for (const decision of ['confirmed', 'dismissed']) li.append(this.reviewButton(id, decision));
    }
    const play = this.button('play', () => this.play(incident));
    play.className = 'play';
    li.append(play);
  }

  rerender() {
    for (const id of this.items.keys()) this.render(id);
  }

  button(key, onClick) {
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.i18n = key;
    button.textContent = t(key);
    button.addEventListener('click', onClick);
    return button;
  }

  reviewButton(id, decision) {
    // The list changes with the stream: the review shows when its event comes back.
    const button = this.button(decision, () => {
      button.disabled = true;
      post(`${this.base}/incidents/${encodeURIComponent(id)}/review`, { decision }).catch(this.fail);
    });
    button.dataset.decision = decision;
    return button;
  }
}
